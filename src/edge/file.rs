//! `file://` origins: objects served from a folder on disk, straight from `request_filter`.
//! Playlists are read and rewritten chunk by chunk; other objects stream with
//! `Content-Length`, and a single `Range` is honoured (byte-range playlists, seeking).

use super::cors::Cors;
use super::respond;
use crate::media::Kind;
use crate::metrics::METRICS;
use crate::playlist::{EdgeUris, Rewriter};
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const CHUNK: usize = 64 * 1024;

/// Open `rel` below `root` one component at a time, following no symlink anywhere
/// (`O_NOFOLLOW` on every step, from a descriptor of the folder before it), so a link
/// swapped in after any check cannot lead out; dotfiles (`.git`, `.env`, ...) are never
/// served.
pub fn open_beneath(root: &Path, rel: &str) -> std::io::Result<std::fs::File> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    let denied = || std::io::Error::from(std::io::ErrorKind::NotFound);
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.starts_with('.') || p.contains('\0'))
    {
        return Err(denied());
    }
    let c = |s: &str| CString::new(s).map_err(|_| denied());
    let root_c = c(root.to_str().ok_or_else(denied)?)?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: plain open/openat/close on NUL-terminated paths; every descriptor is closed
    // once the next one is open, and the last is owned by the returned `File`.
    unsafe {
        let mut fd = libc::open(root_c.as_ptr(), flags | libc::O_DIRECTORY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let name = match c(part) {
                Ok(n) => n,
                Err(e) => {
                    libc::close(fd);
                    return Err(e);
                }
            };
            let f = if last {
                flags | libc::O_NONBLOCK
            } else {
                flags | libc::O_DIRECTORY
            };
            let next = libc::openat(fd, name.as_ptr(), f);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if next < 0 {
                return Err(err);
            }
            fd = next;
        }
        let file = std::fs::File::from_raw_fd(fd);
        // O_NONBLOCK only kept a FIFO from blocking the open; regular files ignore it.
        Ok(file)
    }
}

/// What the file server did, for logs and metrics.
pub struct Served {
    pub status: u16,
}

/// Serve `rel` (validated, percent-encoded) from below `dir` (canonical).
pub async fn serve(
    session: &mut Session,
    dir: &Path,
    rel: &str,
    rewrite: Option<Rewriter<EdgeUris>>,
    new_token: &str,
    cors: &Cors,
) -> pingora_error::Result<Served> {
    let decoded = percent_encoding::percent_decode_str(rel)
        .decode_utf8_lossy()
        .into_owned();
    let root = dir.to_owned();
    let opened = tokio::task::spawn_blocking(move || open_beneath(&root, &decoded)).await;
    let mut file = match opened {
        Ok(Ok(f)) => tokio::fs::File::from_std(f),
        _ => return not_found(session, cors).await,
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        _ => return not_found(session, cors).await,
    };
    let size = meta.len();
    let head = session.req_header().method == http::Method::HEAD;
    let content_type = Kind::content_type(rel);

    if let Some(mut rw) = rewrite {
        let mut h = ResponseHeader::build(200, Some(6))?;
        h.insert_header("Content-Type", content_type)?;
        h.insert_header("Transfer-Encoding", "chunked")?;
        h.insert_header("Cache-Control", "private, no-cache")?;
        h.insert_header(respond::NEW_TOKEN, new_token)?;
        cors.apply(&mut h)?;
        session.write_response_header(Box::new(h), head).await?;
        if head {
            return Ok(Served { status: 200 });
        }
        let mut buf = vec![0u8; CHUNK];
        let mut spent = std::time::Duration::ZERO;
        loop {
            let n = file.read(&mut buf).await.map_err(io_err)?;
            let started = std::time::Instant::now();
            let mut out = Vec::with_capacity(rw.output_hint(n));
            if n == 0 {
                rw.finish(&mut out).map_err(rewrite_err)?;
                METRICS.rewrote(spent + started.elapsed());
                session
                    .write_response_body(Some(Bytes::from(out)), true)
                    .await?;
                return Ok(Served { status: 200 });
            }
            rw.feed(&buf[..n], &mut out).map_err(rewrite_err)?;
            spent += started.elapsed();
            if !out.is_empty() {
                session
                    .write_response_body(Some(Bytes::from(out)), false)
                    .await?;
            }
        }
    }

    let range = session
        .req_header()
        .headers
        .get(http::header::RANGE)
        .map(|v| parse_range(v.as_bytes(), size));
    let (status, start, len) = match range {
        None | Some(RangeSpec::Ignore) => (200, 0, size),
        Some(RangeSpec::Unsatisfiable) => {
            let mut h = ResponseHeader::build(416, Some(4))?;
            h.insert_header("Content-Range", format!("bytes */{size}"))?;
            h.insert_header("Content-Length", "0")?;
            cors.apply(&mut h)?;
            session.write_response_header(Box::new(h), true).await?;
            return Ok(Served { status: 416 });
        }
        Some(RangeSpec::Bytes(a, b)) => (206, a, b - a + 1),
    };
    let mut h = ResponseHeader::build(status, Some(7))?;
    h.insert_header("Content-Type", content_type)?;
    h.insert_header("Content-Length", len.to_string())?;
    h.insert_header("Accept-Ranges", "bytes")?;
    if status == 206 {
        h.insert_header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        )?;
    }
    h.insert_header(respond::NEW_TOKEN, new_token)?;
    cors.apply(&mut h)?;
    session
        .write_response_header(Box::new(h), head || len == 0)
        .await?;
    if head || len == 0 {
        return Ok(Served { status });
    }
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io_err)?;
    }
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(CHUNK * 4);
        let mut buf = BytesMut::zeroed(want);
        let n = file.read(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            // The file shrank under us: end the response short, which the client notices.
            return Err(pingora_error::Error::explain(
                pingora_error::ErrorType::ReadError,
                "file shorter than its size",
            ));
        }
        buf.truncate(n);
        left -= n as u64;
        session
            .write_response_body(Some(buf.freeze()), left == 0)
            .await?;
    }
    Ok(Served { status })
}

async fn not_found(session: &mut Session, cors: &Cors) -> pingora_error::Result<Served> {
    respond::error(session, 404, "not found", cors).await?;
    Ok(Served { status: 404 })
}

fn io_err(e: std::io::Error) -> Box<pingora_error::Error> {
    pingora_error::Error::because(
        pingora_error::ErrorType::ReadError,
        "reading origin file",
        e,
    )
}

fn rewrite_err(e: crate::playlist::RewriteError) -> Box<pingora_error::Error> {
    pingora_error::Error::because(
        pingora_error::ErrorType::InternalError,
        "invalid playlist",
        e,
    )
}

/// A `Range` header read against an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// Inclusive first and last byte.
    Bytes(u64, u64),
    /// Well-formed but outside the object: 416.
    Unsatisfiable,
    /// Not a single byte range we serve (several ranges, other units, garbage): send all.
    Ignore,
}

pub fn parse_range(v: &[u8], size: u64) -> RangeSpec {
    let Some(spec) = std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().strip_prefix("bytes="))
    else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (num(a), num(b), a.is_empty(), b.is_empty()) {
        (Some(start), _, _, true) => {
            if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start, size - 1)
            }
        }
        (Some(start), Some(end), _, _) => {
            if start > end {
                RangeSpec::Ignore
            } else if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start, end.min(size - 1))
            }
        }
        (None, Some(suffix), true, _) => {
            if suffix == 0 || size == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(size.saturating_sub(suffix), size - 1)
            }
        }
        _ => RangeSpec::Ignore,
    }
}

#[cfg(test)]
mod beneath_tests {
    use super::open_beneath;

    #[test]
    fn no_symlinks_no_dotfiles_no_escape() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.ts"), b"a").unwrap();
        std::fs::write(root.join(".env"), b"secret").unwrap();
        std::fs::write(d.path().join("outside.ts"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside.ts"), root.join("link.ts")).unwrap();
        std::os::unix::fs::symlink(d.path(), root.join("up")).unwrap();
        assert!(open_beneath(&root, "sub/a.ts").is_ok());
        for bad in [
            "link.ts",
            "up/outside.ts",
            ".env",
            "sub/../../outside.ts",
            "sub//a.ts",
        ] {
            assert!(open_beneath(&root, bad).is_err(), "{bad}");
        }
        // a file swapped for a symlink after any check is refused at open
        std::fs::remove_file(root.join("sub/a.ts")).unwrap();
        std::os::unix::fs::symlink(d.path().join("outside.ts"), root.join("sub/a.ts")).unwrap();
        assert!(open_beneath(&root, "sub/a.ts").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        for (h, want) in [
            ("bytes=0-", Bytes(0, 99)),
            ("bytes=10-19", Bytes(10, 19)),
            ("bytes=90-200", Bytes(90, 99)),
            ("bytes=-10", Bytes(90, 99)),
            ("bytes=-500", Bytes(0, 99)),
            ("bytes=100-", Unsatisfiable),
            ("bytes=100-200", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=5-1", Ignore),
            ("bytes=0-1,5-6", Ignore),
            ("items=0-1", Ignore),
            ("bytes=a-b", Ignore),
            ("bytes=-", Ignore),
            ("bytes=+1-2", Ignore),
        ] {
            assert_eq!(parse_range(h.as_bytes(), 100), want, "{h}");
        }
        assert_eq!(parse_range(b"bytes=0-", 0), Unsatisfiable);
    }
}
