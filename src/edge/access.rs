//! The access log (`edge.access_log: off|stdout|stderr|FILE`, `edge.access_log_format:
//! text|json`): one line per request, appended to a buffer that a thread of its own writes
//! out every 100 ms, so a slow disk or a full pipe never holds a request up (past 16 MiB
//! waiting, lines are dropped and counted in `hlsgate_access_log_dropped_total`).
//!
//! ```text
//! 2026-11-26T14:25:35.123Z 203.0.113.7 GET /api/hls/<token>/demo/index.m3u8 200 1423 0.41ms stream=demo kind=playlist cache=hit deny=- proto=h1 country=DE host=edge.example:8080
//! ```
//!
//! Tokens never appear: the path-mode token is replaced by `<token>` and the query (where
//! the other modes carry theirs) is not logged. A log file is reopened on SIGHUP (after
//! logrotate has moved it).

use crate::config::AccessLog as Dest;
use crate::metrics::METRICS;
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Bytes waiting for the writer at most (then lines are dropped and counted).
const MAX_PENDING: usize = 16 << 20;

/// How often the writer wakes to write what has been logged.
const PERIOD: Duration = Duration::from_millis(100);

enum Msg {
    /// Open the file again (SIGHUP).
    Reopen,
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

/// The logging side: requests append their line to a shared buffer (no wake-up, no
/// system call); a thread writes the buffer out every 100 ms. It ends when this is dropped.
pub struct AccessLog {
    pending: Arc<Mutex<Vec<u8>>>,
    tx: SyncSender<Msg>,
    json: bool,
}

/// What one request did.
pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// The request path as received (the token is redacted when written; no query).
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
    /// The viewer's country (`geoip.database`), when it was looked up.
    pub country: Option<crate::rules::Country>,
    /// The request's authority (`Host`, or `:authority` on HTTP/2) as sent; `-` if none.
    pub host: &'a str,
}

/// `DE`, or `-` when unknown.
fn country_text(c: &Option<crate::rules::Country>) -> &str {
    c.as_ref()
        .and_then(|c| std::str::from_utf8(c).ok())
        .unwrap_or("-")
}

thread_local! {
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
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
        let pending = Arc::new(Mutex::new(Vec::with_capacity(256 << 10)));
        let (tx, rx) = sync_channel(4);
        let p = pending.clone();
        std::thread::Builder::new()
            .name("hlsgate-access".into())
            .spawn(move || writer(rx, p, out))?;
        Ok(Some(AccessLog { pending, tx, json }))
    }

    /// Add one line (never waits for the disk).
    pub fn log(&self, e: &Entry<'_>) {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            if self.json {
                json(&mut line, e)
            } else {
                text(&mut line, e)
            }
            let mut p = self.pending.lock();
            if p.len() + line.len() > MAX_PENDING {
                drop(p);
                METRICS.access_log_dropped.inc();
            } else {
                p.extend_from_slice(line.as_bytes());
            }
        })
    }

    /// Reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Wait (up to a second) until every line logged so far is written.
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

impl Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        match self {
            Out::Stdout => std::io::stdout().lock().write_all(buf),
            Out::Stderr => std::io::stderr().lock().write_all(buf),
            Out::File(_, f) => f.write_all(buf),
        }
    }
}

/// How often a failing access log says so in the process log (its lines are counted in
/// `hlsgate_access_log_dropped_total` every time).
const WARN_EVERY: Duration = Duration::from_secs(60);

fn writer(rx: Receiver<Msg>, pending: Arc<Mutex<Vec<u8>>>, mut out: Out) {
    let mut spare: Vec<u8> = Vec::with_capacity(256 << 10);
    let mut warned: Option<std::time::Instant> = None;
    let mut drain = |out: &mut Out| {
        {
            let mut p = pending.lock();
            std::mem::swap(&mut *p, &mut spare);
        }
        if let Err(e) = out.write(&spare) {
            // A full disk, a removed mount: the lines are lost (a short write may have put
            // part of one out; all are counted as lost) and said so, once a minute.
            let lost = memchr::memchr_iter(b'\n', &spare).count() as u64;
            METRICS.access_log_dropped.inc_by(lost);
            if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                warned = Some(std::time::Instant::now());
                tracing::error!(error = %e, lost, "access log: write failed, lines dropped (counted in hlsgate_access_log_dropped_total; said again at most once a minute)");
            }
        }
        spare.clear();
    };
    loop {
        match rx.recv_timeout(PERIOD) {
            Err(RecvTimeoutError::Timeout) => drain(&mut out),
            Err(RecvTimeoutError::Disconnected) => {
                drain(&mut out);
                return;
            }
            Ok(Msg::Flush(done)) => {
                drain(&mut out);
                let _ = done.send(());
            }
            Ok(Msg::Reopen) => {
                // Lines still waiting go to the new file: none is lost or written to a
                // file logrotate has already moved aside.
                if let Out::File(p, f) = &mut out {
                    match open_file(p) {
                        Ok(n) => **f = n,
                        Err(e) => tracing::warn!(error = %e, "access log: cannot reopen"),
                    }
                }
                drain(&mut out);
            }
        }
    }
}

/// The path with a playback token replaced by `<token>`; `escape`: as [`push_escaped`].
fn push_path(out: &mut String, path: &str, escape: bool) {
    let rest = match path.strip_prefix("/api/hls/") {
        Some(rest) => {
            out.push_str("/api/hls/<token>");
            rest.find('/').map_or("", |i| &rest[i..])
        }
        None => path,
    };
    if escape {
        push_escaped(out, rest)
    } else {
        out.push_str(rest)
    }
}

fn text(s: &mut String, e: &Entry<'_>) {
    let _ = write!(
        s,
        "{} ",
        humantime::format_rfc3339_millis(SystemTime::now())
    );
    match e.client {
        Some(ip) => {
            let _ = write!(s, "{ip} ");
        }
        None => s.push_str("- "),
    }
    s.push_str(e.method);
    s.push(' ');
    // The path is what the client sent: no spaces or controls may split the line.
    push_path(s, e.path, true);
    let _ = writeln!(
        s,
        " {} {} {:.2}ms stream={} kind={} cache={} deny={} proto={}{} country={} host=",
        e.status,
        e.bytes,
        e.duration.as_secs_f64() * 1000.0,
        e.stream,
        e.kind,
        e.cache,
        e.deny,
        e.proto,
        if e.tls { "+tls" } else { "" },
        country_text(&e.country),
    );
    // The line ends with the host, escaped like the path: a `Host` cannot split it.
    s.pop();
    push_escaped(s, e.host);
    s.push('\n');
}

fn json(s: &mut String, e: &Entry<'_>) {
    let mut path = String::new();
    push_path(&mut path, e.path, false);
    let v = serde_json::json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "client": e.client.map_or_else(|| "-".into(), |ip| ip.to_string()),
        "method": e.method,
        "path": path,
        "status": e.status,
        "bytes": e.bytes,
        "ms": (e.duration.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        "stream": e.stream,
        "kind": e.kind,
        "cache": e.cache,
        "deny": e.deny,
        "proto": e.proto,
        "tls": e.tls,
        "country": country_text(&e.country),
        "host": e.host,
    });
    let _ = writeln!(s, "{v}");
}

/// Append `text` with the bytes that could split or forge a text log line (space,
/// controls, non-ASCII) escaped as `%XX`.
fn push_escaped(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
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
            country: Some(*b"DE"),
            host: "edge.example",
        }
    }

    fn text_of(e: &Entry<'_>) -> String {
        let mut s = String::new();
        text(&mut s, e);
        s
    }

    fn json_of(e: &Entry<'_>) -> String {
        let mut s = String::new();
        json(&mut s, e);
        s
    }

    #[test]
    fn tokens_are_redacted() {
        let l = text_of(&entry("/api/hls/AQHsecret/demo/index.m3u8"));
        assert!(
            l.contains(" GET /api/hls/<token>/demo/index.m3u8 200 "),
            "{l}"
        );
        assert!(!l.contains("AQHsecret"));
        let l = json_of(&entry("/api/hls/AQHsecret"));
        assert!(
            l.contains("\"/api/hls/<token>\"") && !l.contains("AQHsecret"),
            "{l}"
        );
    }

    #[test]
    fn text_lines_cannot_be_split_or_forged() {
        let l = text_of(&entry("/a b\n200 fake"));
        assert_eq!(l.matches('\n').count(), 1, "{l}");
        assert!(l.contains(" /a%20b%0A200%20fake 200 1423 0.41ms stream=demo kind=playlist cache=hit deny=- proto=h2+tls country=DE host=edge.example\n"), "{l}");
        let mut e = entry("/a");
        e.host = "x\ny 200";
        let l = text_of(&e);
        assert!(l.ends_with(" host=x%0Ay%20200\n"), "{l}");
    }

    #[test]
    fn json_lines_are_json() {
        let l = json_of(&entry("/demo/\"x\"\n"));
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["path"], "/demo/\"x\"\n");
        assert_eq!(v["status"], 200);
        assert_eq!(v["ms"], 0.41);
        assert_eq!(v["tls"], true);
        assert_eq!(v["host"], "edge.example");
    }

    #[test]
    fn lines_a_full_disk_refuses_are_counted() {
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let log = AccessLog::open(&Dest::File("/dev/full".into()), false)
            .unwrap()
            .unwrap();
        let before = METRICS.access_log_dropped.get();
        for _ in 0..5 {
            log.log(&entry("/lost"));
        }
        log.flush();
        assert!(METRICS.access_log_dropped.get() - before >= 5);
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
