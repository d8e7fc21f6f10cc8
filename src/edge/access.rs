//! The access log (`edge.access_log: off|stdout|stderr|FILE`, `edge.access_log_format:
//! text|json`): one line per request, written by a thread of its own so a slow disk or a
//! full pipe never holds a request up (past 64 Ki lines waiting, lines are dropped and
//! counted in `hlsgate_access_log_dropped_total`).
//!
//! ```text
//! 2026-11-26T14:25:35.123Z 203.0.113.7 GET /api/hls/<token>/demo/index.m3u8 200 1423 0.41ms stream=demo kind=playlist cache=hit deny=-
//! ```
//!
//! Tokens never appear: the path-mode token is replaced by `<token>` and the query (where
//! the other modes carry theirs) is not logged. A log file is reopened on SIGHUP (after
//! logrotate has moved it).

use crate::config::AccessLog as Dest;
use crate::metrics::METRICS;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

enum Msg {
    Line(String),
    /// Open the file again (SIGHUP).
    Reopen,
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

/// The sending side; the writer thread ends when it is dropped.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    json: bool,
}

/// What one request did.
pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// The path, token already redacted; no query.
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub duration: Duration,
    pub stream: &'a str,
    pub kind: &'a str,
    pub cache: &'a str,
    pub deny: &'a str,
    /// `h1`, `h2`.
    pub proto: &'a str,
    pub tls: bool,
}

impl AccessLog {
    /// Start the writer for `dest` (None for `off`). A file that cannot be opened is an
    /// error now, not lines lost later.
    pub fn open(dest: &Dest, json: bool) -> std::io::Result<Option<AccessLog>> {
        let out = match dest {
            Dest::Off => return Ok(None),
            Dest::Stdout => Out::Stdout,
            Dest::Stderr => Out::Stderr,
            Dest::File(p) => Out::File(p.clone(), Box::new(open_file(p)?)),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("hlsgate-access".into())
            .spawn(move || writer(rx, out))?;
        Ok(Some(AccessLog { tx, json }))
    }

    /// Queue one line (never waits).
    pub fn log(&self, e: &Entry<'_>) {
        let line = if self.json { json(e) } else { text(e) };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            METRICS.access_log_dropped.inc();
        }
    }

    /// Reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Wait (up to a second) until every line queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }
}

fn open_file(p: &PathBuf) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(p)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

enum Out {
    Stdout,
    Stderr,
    File(PathBuf, Box<std::fs::File>),
}

fn writer(rx: Receiver<Msg>, mut out: Out) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let write = |out: &mut Out, buf: &mut Vec<u8>| {
        if buf.is_empty() {
            return;
        }
        let _ = match out {
            Out::Stdout => std::io::stdout().lock().write_all(buf),
            Out::Stderr => std::io::stderr().lock().write_all(buf),
            Out::File(_, f) => f.write_all(buf),
        };
        buf.clear();
    };
    loop {
        // Gather what is waiting, then write it in one go.
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                write(&mut out, &mut buf);
                return;
            }
        };
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            match m {
                Msg::Line(l) => {
                    buf.extend_from_slice(l.as_bytes());
                    if buf.len() >= 60 << 10 {
                        write(&mut out, &mut buf);
                    }
                }
                Msg::Reopen => {
                    write(&mut out, &mut buf);
                    if let Out::File(p, f) = &mut out {
                        match open_file(p) {
                            Ok(n) => **f = n,
                            Err(e) => tracing::warn!(error = %e, "access log: cannot reopen"),
                        }
                    }
                }
                Msg::Flush(done) => {
                    write(&mut out, &mut buf);
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        write(&mut out, &mut buf);
    }
}

fn client(e: &Entry<'_>) -> String {
    e.client.map_or_else(|| "-".into(), |ip| ip.to_string())
}

fn text(e: &Entry<'_>) -> String {
    let mut s = String::with_capacity(160 + e.path.len());
    let _ = writeln!(
        s,
        "{} {} {} {} {} {} {:.2}ms stream={} kind={} cache={} deny={} proto={}{}",
        humantime::format_rfc3339_millis(SystemTime::now()),
        client(e),
        e.method,
        // The path is what the client sent: no spaces or controls can split the line.
        sanitize(e.path),
        e.status,
        e.bytes,
        e.duration.as_secs_f64() * 1000.0,
        e.stream,
        e.kind,
        e.cache,
        e.deny,
        e.proto,
        if e.tls { "+tls" } else { "" },
    );
    s
}

fn json(e: &Entry<'_>) -> String {
    let mut s = serde_json::json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "client": client(e),
        "method": e.method,
        "path": e.path,
        "status": e.status,
        "bytes": e.bytes,
        "ms": (e.duration.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        "stream": e.stream,
        "kind": e.kind,
        "cache": e.cache,
        "deny": e.deny,
        "proto": e.proto,
        "tls": e.tls,
    })
    .to_string();
    s.push('\n');
    s
}

/// Bytes that could split or forge a text log line (space, controls, non-ASCII), escaped
/// as `%XX`.
fn sanitize(path: &str) -> std::borrow::Cow<'_, str> {
    if path.bytes().all(|b| b.is_ascii_graphic()) {
        return path.into();
    }
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry<'_> {
        Entry {
            client: Some("203.0.113.7".parse().unwrap()),
            method: "GET",
            path,
            status: 200,
            bytes: 1423,
            duration: Duration::from_micros(410),
            stream: "demo",
            kind: "playlist",
            cache: "hit",
            deny: "-",
            proto: "h2",
            tls: true,
        }
    }

    #[test]
    fn text_lines_cannot_be_split_or_forged() {
        let l = text(&entry("/a b\n200 fake"));
        assert_eq!(l.matches('\n').count(), 1, "{l}");
        assert!(l.contains(" /a%20b%0A200%20fake 200 1423 0.41ms stream=demo kind=playlist cache=hit deny=- proto=h2+tls\n"), "{l}");
    }

    #[test]
    fn json_lines_are_json() {
        let l = json(&entry("/api/hls/<token>/demo/\"x\"\n"));
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["path"], "/api/hls/<token>/demo/\"x\"\n");
        assert_eq!(v["status"], 200);
        assert_eq!(v["ms"], 0.41);
        assert_eq!(v["tls"], true);
    }

    #[test]
    fn lines_reach_the_file_and_survive_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log");
        let log = AccessLog::open(&Dest::File(p.clone()), false)
            .unwrap()
            .unwrap();
        log.log(&entry("/one"));
        log.flush();
        std::fs::rename(&p, dir.path().join("access.log.1")).unwrap();
        log.reopen();
        log.log(&entry("/two"));
        log.flush();
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert!(old.contains(" /one ") && !old.contains("/two"), "{old}");
        assert!(new.contains(" /two ") && !new.contains("/one"), "{new}");
    }
}
