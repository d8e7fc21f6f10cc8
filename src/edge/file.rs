//! `file://` origins: objects served from a folder on disk, straight from `request_filter`.
//! Playlists are read and rewritten chunk by chunk; other objects stream with
//! `Content-Length`, and a single `Range` is honoured (byte-range playlists, seeking).

use super::respond;
use super::route::Kind;
use crate::metrics::METRICS;
use crate::playlist::{EdgeUris, Rewriter};
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const CHUNK: usize = 64 * 1024;

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
) -> pingora_error::Result<Served> {
    let decoded = percent_encoding::percent_decode_str(rel).decode_utf8_lossy();
    let wanted = dir.join(decoded.as_ref());
    // Symlinks must not lead out of the folder either.
    let real = match tokio::fs::canonicalize(&wanted).await {
        Ok(p) if p.starts_with(dir) => p,
        _ => return not_found(session).await,
    };
    let mut file = match tokio::fs::File::open(&real).await {
        Ok(f) => f,
        Err(_) => return not_found(session).await,
    };
    let meta = match file.metadata().await {
        Ok(m) if m.is_file() => m,
        _ => return not_found(session).await,
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
        respond::cors(&mut h)?;
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
            respond::cors(&mut h)?;
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
    respond::cors(&mut h)?;
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

async fn not_found(session: &mut Session) -> pingora_error::Result<Served> {
    respond::error(session, 404, "not found").await?;
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
