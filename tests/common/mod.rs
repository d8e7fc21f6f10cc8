//! Real parts for integration tests: an HTTP origin on loopback (port 0) that serves a
//! folder and keeps an access log, ffmpeg-made HLS streams, the real `hlsgate` binary, and a
//! small HTTP/1.1 client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---- origin ------------------------------------------------------------------------------

/// A loopback HTTP origin serving `root`. Special paths: `/die/*` sends half a body and
/// closes; `/slow/*` answers after 5 s.
pub struct Origin {
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    pub fn start(root: PathBuf) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let root = root.clone();
                let log = log2.clone();
                std::thread::spawn(move || {
                    let _ = serve_conn(conn, &root, &log);
                });
            }
        });
        Origin { port, log }
    }

    /// An origin serving the five ffmpeg-made test streams (see [`make_streams`]) from
    /// `root`, which is created.
    pub fn with_streams(root: PathBuf) -> Origin {
        std::fs::create_dir_all(&root).unwrap();
        let origin = Origin::start(root.clone());
        make_streams(&root, origin.port);
        origin
    }

    /// The `streams:` entries (without the `streams:` line) of the five test streams on
    /// this origin, named `ts`, `fmp4`, `aes`, `single` and `ladder`.
    pub fn streams_yaml(&self) -> String {
        let o = self.port;
        format!(
            "  ts: {{ url: \"http://127.0.0.1:{o}/ts/index.m3u8\" }}\n  fmp4: {{ url: \"http://127.0.0.1:{o}/fmp4/index.m3u8\" }}\n  aes: {{ url: \"http://127.0.0.1:{o}/aes/index.m3u8\" }}\n  single: {{ url: \"http://127.0.0.1:{o}/single/index.m3u8\" }}\n  ladder: {{ url: \"http://127.0.0.1:{o}/ladder/master.m3u8\" }}\n"
        )
    }

    /// Requests whose path contains `needle`.
    pub fn hits(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn serve_conn(conn: TcpStream, root: &Path, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("/").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        log.lock().unwrap().push(format!(
            "{method} {target} ua={} ae={} cookie={}",
            headers.get("user-agent").map_or("-", |s| s),
            headers.get("accept-encoding").map_or("-", |s| s),
            headers.get("cookie").map_or("-", |s| s),
        ));
        let path = target.split('?').next().unwrap_or("/");
        let file = root.join(path.trim_start_matches('/'));
        // A `NAME.fail` file beside an object makes the origin fail for it: 503, or the
        // status the file holds (`500`), or (`hang`) no answer for as long as the file is
        // there (30 s at most), then the object.
        let fail = file.with_extension("fail");
        if !path.contains("..") && fail.exists() {
            let how = std::fs::read_to_string(&fail).unwrap_or_default();
            match how.trim() {
                "hang" => {
                    let until = Instant::now() + Duration::from_secs(30);
                    while fail.exists() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                "500" => {
                    w.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
                    )?;
                    continue;
                }
                _ => {
                    w.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown",
                    )?;
                    continue;
                }
            }
        }
        if path.starts_with("/slow/") {
            std::thread::sleep(Duration::from_secs(5));
        }
        if path.starts_with("/die/") {
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 100000\r\n\r\n",
            )?;
            w.write_all(&[0x47u8; 1000])?;
            w.flush()?;
            return Ok(()); // dies mid-body
        }
        let body = if path.contains("..") {
            None
        } else {
            std::fs::read(&file).ok()
        };
        let Some(body) = body else {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")?;
            continue;
        };
        let ct = if path.ends_with(".m3u8") {
            "application/vnd.apple.mpegurl"
        } else {
            "application/octet-stream"
        };
        let (status, slice, range_hdr) =
            match headers.get("range").and_then(|r| r.strip_prefix("bytes=")) {
                Some(r) => {
                    let (a, b) = r.split_once('-').unwrap();
                    let a: usize = a.parse().unwrap_or(0);
                    let b: usize = b.parse().unwrap_or(body.len() - 1).min(body.len() - 1);
                    (
                        "206 Partial Content",
                        &body[a..=b],
                        format!("Content-Range: bytes {a}-{b}/{}\r\n", body.len()),
                    )
                }
                None => ("200 OK", &body[..], String::new()),
            };
        // `short` objects are fresh for one second; `/delay/` ones arrive slowly: the
        // header after 300 ms, half the body, then the rest 1.5 s later.
        let mut cc = if path.contains("short") {
            "Cache-Control: max-age=1\r\n".to_owned()
        } else {
            String::new()
        };
        // A `NAME.headers` file beside an object: more response headers (CRLF lines).
        if let Ok(extra) = std::fs::read_to_string(file.with_extension("headers")) {
            cc.push_str(&extra);
        }
        // An object whose `.headers` give it an `ETag` is revalidated as origins do: a
        // request naming that tag gets 304 Not Modified.
        let etag = cc
            .lines()
            .find_map(|l| l.strip_prefix("ETag:").map(str::trim));
        if let (Some(tag), Some(asked)) = (etag, headers.get("if-none-match")) {
            if asked.split(',').any(|t| t.trim() == tag) {
                write!(w, "HTTP/1.1 304 Not Modified\r\n{cc}\r\n")?;
                w.flush()?;
                continue;
            }
        }
        let delay = path.contains("/delay/");
        if delay {
            std::thread::sleep(Duration::from_millis(300));
        }
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{cc}{range_hdr}\r\n",
            slice.len()
        )?;
        if method != "HEAD" {
            if path.contains("/drip/") {
                // `/drip/` bodies arrive in eight pieces, 250 ms apart.
                for piece in slice.chunks(slice.len().div_ceil(8).max(1)) {
                    w.write_all(piece)?;
                    w.flush()?;
                    std::thread::sleep(Duration::from_millis(250));
                }
            } else if delay {
                let (a, b) = slice.split_at(slice.len() / 2);
                w.write_all(a)?;
                w.flush()?;
                std::thread::sleep(Duration::from_millis(1500));
                w.write_all(b)?;
            } else {
                w.write_all(slice)?;
            }
        }
        w.flush()?;
    }
}

// ---- streams -----------------------------------------------------------------------------

/// Make the five test streams below `root` with ffmpeg: `ts/`, `fmp4/`, `aes/` (key at
/// `/keys/enc.key`, named by an absolute URL on the origin), `single/` (byte ranges) and
/// `ladder/master.m3u8` (two renditions).
pub fn make_streams(root: &Path, origin_port: u16) {
    for d in ["ts", "fmp4", "aes", "single", "ladder", "keys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("keys/enc.key"), b"0123456789abcdef").unwrap();
    let keyinfo = root.join("aes.keyinfo");
    std::fs::write(
        &keyinfo,
        format!(
            "http://127.0.0.1:{origin_port}/keys/enc.key\n{}\n",
            root.join("keys/enc.key").display()
        ),
    )
    .unwrap();
    let common = "-f lavfi -i testsrc2=size=160x90:rate=25 -f lavfi -i sine -c:v libx264 -preset ultrafast -g 25 -c:a aac -ac 1 -t 3 -f hls -hls_time 1 -hls_playlist_type vod";
    let runs: Vec<String> = vec![
        format!("{common} ts/index.m3u8"),
        format!("{common} -hls_segment_type fmp4 fmp4/index.m3u8"),
        format!("{common} -hls_key_info_file aes.keyinfo aes/index.m3u8"),
        format!("{common} -hls_flags single_file single/index.m3u8"),
        "-f lavfi -i testsrc2=size=160x90:rate=25 -f lavfi -i sine -map 0:v -map 0:v -map 1:a -map 1:a -c:v libx264 -preset ultrafast -g 25 -b:v:0 200k -b:v:1 100k -c:a aac -ac 1 -t 3 -f hls -hls_time 1 -hls_playlist_type vod -var_stream_map v:0,a:0_v:1,a:1 -master_pl_name master.m3u8 ladder/v%v/index.m3u8".into(),
    ];
    for args in runs {
        let args: Vec<String> = args
            .split_whitespace()
            .map(|a| a.replace("v:0,a:0_v:1,a:1", "v:0,a:0 v:1,a:1"))
            .collect();
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-y", "-loglevel", "error"])
            .args(&args)
            .current_dir(root)
            .output()
            .expect("ffmpeg is installed (see .ci/run)");
        assert!(
            out.status.success(),
            "ffmpeg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Run the openssl command line in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Play `url` to the end with ffmpeg as the client: every playlist, key, init segment and
/// segment is fetched. Returns (success, stderr).
pub fn ffmpeg_play(url: &str, ua: &str) -> (bool, String) {
    ffmpeg_play_with(url, ua, &[])
}

/// [`ffmpeg_play`] sending more request headers (`-headers`, e.g. cookies).
pub fn ffmpeg_play_with(url: &str, ua: &str, headers: &[(&str, &str)]) -> (bool, String) {
    ffmpeg_play_opts(url, ua, headers, &[])
}

/// [`ffmpeg_play_with`] with more input options (`-ca_file`, `-tls_verify`, ...).
pub fn ffmpeg_play_opts(
    url: &str,
    ua: &str,
    headers: &[(&str, &str)],
    opts: &[&str],
) -> (bool, String) {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let header_args: Vec<&str> = if extra.is_empty() {
        Vec::new()
    } else {
        vec!["-headers", &extra]
    };
    let out = Command::new("timeout")
        .args([
            "60",
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-user_agent",
            ua,
        ])
        .args(&header_args)
        .args(opts)
        .args(["-i", url])
        .args(["-map", "0", "-c", "copy", "-f", "null", "-"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- hlsgate -----------------------------------------------------------------------------

/// `cmd` with the environment of a reader's shell rather than a test's: without what cargo
/// sets for a test (CARGO_*, RUSTC*, OUT_DIR, ...). Dependencies' build scripts watch some of
/// these, so a release build made under them is rebuilt by the next plain `cargo build`
/// (and the other way round): 3 minutes each time a test and a person take turns.
pub fn shell_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO") && k != "CARGO_HOME")
            || (k.starts_with("RUST") && !k.starts_with("RUSTUP"))
            || k == "OUT_DIR"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hlsgate")
}

/// A port free now for a listener a test process will bind a moment later. Taken below
/// Linux's ephemeral range (32768-60999), where the kernel also picks the local ports of
/// outgoing connections (the tests make thousands): a port from `bind(0)` could be taken by
/// one of those before the listener binds it. Ports are handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // A different starting point per test binary, so binaries run one after another do not
    // walk the same ports while the previous one's sockets linger.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = if p >= 32_000 {
            NEXT.store(20_001, Ordering::SeqCst);
            20_000
        } else {
            p
        };
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Ports of a test hlsgate: edge, metrics and admin listeners.
pub struct EdgePorts {
    pub edge: u16,
    pub metrics: u16,
    pub admin: u16,
}

/// Add `keys` (YAML lines, indented) at the top of the `section:` of the config at `path`.
pub fn add_config_keys(path: &Path, section: &str, keys: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let head = format!("{section}:\n");
    assert!(
        text.contains(&head),
        "no `{section}:` in {}",
        path.display()
    );
    std::fs::write(path, text.replacen(&head, &format!("{head}{keys}"), 1)).unwrap();
}

/// Write `dir/hlsgate.yaml` for an edge on free loopback ports with short origin timeouts,
/// 2 s keep-alive idle timeout, its key in `dir`, 30 s tokens, loopback origins allowed; `extra` is more YAML (it must hold
/// `streams:`), `read_timeout` the origin read timeout.
pub fn write_config(dir: &Path, read_timeout: &str, extra: &str) -> (PathBuf, EdgePorts) {
    let store = format!("sqlite://{}/hlsgate.db", dir.display());
    write_config_with(dir, "hlsgate.yaml", read_timeout, &store, extra)
}

/// [`write_config`] into `dir/name`, with the store at `store_url`.
pub fn write_config_with(
    dir: &Path,
    name: &str,
    read_timeout: &str,
    store_url: &str,
    extra: &str,
) -> (PathBuf, EdgePorts) {
    let ports = EdgePorts {
        edge: free_port(),
        metrics: free_port(),
        admin: free_port(),
    };
    let config = dir.join(name);
    std::fs::write(
        &config,
        format!(
            r#"edge:
  listen: "127.0.0.1:{port}"
  origin_connect_timeout: "1s"
  origin_read_timeout: "{read_timeout}"
  grace_period: "0s"
  idle_timeout: "2s"
admin:
  listen: "127.0.0.1:{aport}"
  public_edge_url: "http://127.0.0.1:{port}"
metrics:
  listen: "127.0.0.1:{mport}"
store:
  url: "{store_url}"
tokens:
  secret_file: "{dir}/secret.key"
  ttl: "30s"
origins:
  allow: ["127.0.0.1"]
{extra}"#,
            port = ports.edge,
            mport = ports.metrics,
            aport = ports.admin,
            dir = dir.display(),
        ),
    )
    .unwrap();
    (config, ports)
}

/// A running `hlsgate` process. It is started through a shell that passes it the signals
/// written to its stdin (`HUP` keeps it running; any other ends the wrapper's loop) and
/// sends it SIGTERM when this test process closes that stdin (at the end of the test, or
/// when the test process dies). Its stderr goes to a log file beside the config (printed
/// when the test fails), not into the test run's output.
pub struct Hlsgate {
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Hlsgate {
    pub fn start(subcommand: &str, config: &Path, port: u16) -> Hlsgate {
        let g = Hlsgate::spawn(subcommand, config, port, &[]);
        g.wait_healthy();
        g
    }

    /// Start `hlsgate SUBCOMMAND -c CONFIG ARGS` without waiting for it to listen.
    pub fn spawn(subcommand: &str, config: &Path, port: u16, args: &[&str]) -> Hlsgate {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = config.with_file_name(format!(
            "hlsgate-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let script = format!(
            "'{}' {subcommand} -c '{}' {} 2>'{}' & pid=$!\n\
             echo $pid >'{}.pid'\n\
             while read sig; do kill -$sig $pid; [ \"$sig\" = HUP ] || break; done\n\
             [ -n \"$sig\" ] || kill -TERM $pid\n\
             wait $pid",
            bin(),
            config.display(),
            args.join(" "),
            log.display(),
            log.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Hlsgate {
            port,
            config: config.to_owned(),
            log,
            child,
        }
    }

    /// Wait (up to 20 s) until `/healthz` answers 200 and the process says it runs (every
    /// listener accepts: in `serve` the admin may come up after the edge).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = get(self.port, "/healthz", &[]) {
                if r.status == 200 && self.log_text().contains(" running (SIGHUP") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "hlsgate did not come up on port {}:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// Send a signal (`HUP`, `QUIT`, `TERM`, `KILL`, ...).
    /// The `hlsgate` process's id (not its wrapper's), for signals sent past the wrapper.
    pub fn pid(&self) -> i32 {
        let file = format!("{}.pid", self.log.display());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "no pid file {file}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&mut self, sig: &str) {
        let stdin = self.child.stdin.as_mut().expect("still running");
        stdin.write_all(format!("{sig}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        if sig != "HUP" {
            self.child.stdin.take();
        }
    }

    /// Wait up to `limit` for the process to exit: how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// What it has written to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `hlsgate token` for this config.
    pub fn token_url(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg("token")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Hlsgate {
    /// `hlsgate serve --upgrade` on this one's config: the new process takes the listening
    /// sockets over, this one is sent SIGQUIT and must exit within 15 s; the new one,
    /// healthy, is returned.
    pub fn upgraded(mut self) -> Hlsgate {
        let new = Hlsgate::spawn("serve", &self.config, self.port, &["--upgrade"]);
        std::thread::sleep(Duration::from_millis(500));
        self.signal("QUIT");
        assert!(
            self.wait_exit(Duration::from_secs(15)).is_some(),
            "{}",
            self.log_text()
        );
        new.wait_healthy();
        new
    }

    /// SIGKILL: no graceful anything, as a crash or the OOM killer would end it.
    pub fn kill_hard(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"KILL\n");
        }
        let _ = self.child.wait();
        assert!(
            get(self.port, "/healthz", &[]).is_err(),
            "hlsgate still answers on {} after SIGKILL",
            self.port
        );
    }
}

impl Drop for Hlsgate {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("---- {} (last lines) ----", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

// ---- HTTP client -------------------------------------------------------------------------

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Cookie` header a browser sends back for this response's `Set-Cookie`s.
    pub fn cookie_header(&self) -> String {
        self.set_cookies()
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Path part of an absolute `http://127.0.0.1:PORT/...` URL.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap()..].to_owned()
}

/// GET (or another method) with extra headers; `Connection: close`, chunked bodies decoded.
pub fn request(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    send(method, port, path, headers, None)
}

/// [`request`] with a body (sent with its Content-Length).
pub fn send(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // `Host: 127.0.0.1:PORT` unless the caller sends its own.
    let mut req = match headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        true => format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n"),
        false => {
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n")
        }
    };
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        req.push_str("User-Agent: hlsgate-test\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    s.write_all(&req)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A JSON API call as User-Agent `ua` (with a Bearer JWT, with a JSON body):
/// `(status, body as JSON or Null, raw response)`.
pub fn api_as(
    ua: &str,
    port: u16,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, Response) {
    let auth = jwt.map(|j| format!("Bearer {j}"));
    let mut hs: Vec<(&str, &str)> = vec![("User-Agent", ua)];
    if let Some(a) = &auth {
        hs.push(("Authorization", a));
    }
    let body = body.map(|b| b.to_string());
    if body.is_some() {
        hs.push(("Content-Type", "application/json"));
    }
    let r = send(method, port, path, &hs, body.as_deref().map(str::as_bytes)).unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v, r)
}

/// Register `user` (or find it registered) with the tests' password and log in through the
/// admin on `port`: the login JWT.
pub fn login_as(ua: &str, port: u16, user: &str) -> String {
    let creds = serde_json::json!({"username": user, "password": "correct horse battery"});
    let (s, v, _) = api_as(ua, port, "POST", "/api/register", None, Some(creds.clone()));
    assert!(s == 201 || s == 409, "{v}");
    let (s, v, _) = api_as(ua, port, "POST", "/api/login", None, Some(creds));
    assert_eq!(s, 200, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// `POST /api/streams {"url"}` as `jwt`'s user through the admin on `port`: the new id.
pub fn add_stream_as(ua: &str, port: u16, jwt: &str, url: &str) -> i64 {
    let body = serde_json::json!({ "url": url });
    let (s, v, _) = api_as(ua, port, "POST", "/api/streams", Some(jwt), Some(body));
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

/// The first URI of a rewritten playlist that goes back through the edge with a native
/// token (`/api/hls/...`).
pub fn first_edge_uri(playlist: &str) -> String {
    playlist
        .lines()
        .find(|l| l.starts_with("/api/hls/"))
        .unwrap_or_else(|| panic!("no edge URI in {playlist}"))
        .to_owned()
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    request("GET", port, path, headers)
}

fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| std::io::Error::other("truncated chunked body"))?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16)
            .map_err(std::io::Error::other)?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(std::io::Error::other("truncated chunk"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// The sum of the samples in Prometheus text whose line starts with `prefix`.
pub fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

// ---- stores ------------------------------------------------------------------------------

/// The two store backends every store and admin test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use (`.ci/run` starts one on loopback with this role).
pub fn postgres_base() -> String {
    std::env::var("HLSGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://hlsgate:hlsgate@127.0.0.1:5432/hlsgate".into())
}

/// A fresh, empty store for one test: a SQLite file in `dir`, or a new PostgreSQL database
/// (dropped again when this is dropped).
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
}

fn pg_admin(sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&postgres_base())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} (see .ci/run): {e}", postgres_base()));
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    });
}

/// Drop a test database now, cutting its connections (a store outage).
pub fn drop_postgres_database(name: &str) {
    pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

impl TestDb {
    pub fn new(backend: Backend, dir: &Path) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}/store.db", dir.display()),
                pg_name: None,
            },
            Backend::Postgres => {
                let mut r = [0u8; 6];
                getrandom::getrandom(&mut r).unwrap();
                let name = format!(
                    "hlsgate_t_{}",
                    r.iter().map(|b| format!("{b:02x}")).collect::<String>()
                );
                pg_admin(&format!("CREATE DATABASE {name}"));
                let base = postgres_base();
                let cut = base.rfind('/').unwrap();
                TestDb {
                    url: format!("{}/{name}", &base[..cut]),
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            drop_postgres_database(name);
        }
    }
}

/// `both!(name)`: run `fn name(Backend)` as two tests, `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Backend::Postgres)
            })*
        }
    };
}
