//! Issue 10's findings, each as the attacker ran it: against the real `hlsgate` binary on
//! loopback, with a programmable origin that answers the way a hostile one would (wrong
//! types, redirects, endless or trickling bodies, silence), and raw client sockets for
//! the hostile viewer. Every refusal is checked for its JSON error and its denial metric.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const UA: &str = "hostile-test/1.0";

/// A request as the origin saw it.
#[derive(Clone, Debug)]
struct Seen {
    target: String,
    headers: HashMap<String, String>,
}

type Handler = dyn Fn(&Seen, &mut TcpStream) -> std::io::Result<()> + Send + Sync;

/// A loopback origin whose every answer is written by `handler`; it records what it was
/// asked and counts connections.
struct HostileOrigin {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl HostileOrigin {
    fn start(
        handler: impl Fn(&Seen, &mut TcpStream) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> HostileOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s2, c2) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                c2.fetch_add(1, Ordering::SeqCst);
                let (seen, handler) = (s2.clone(), handler.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                    loop {
                        let Some(req) = read_request(&mut conn) else {
                            return;
                        };
                        seen.lock().unwrap().push(req.clone());
                        if handler(&req, &mut conn).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HostileOrigin {
            port,
            seen,
            connections,
        }
    }

    fn hits(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target.contains(needle))
            .count()
    }

    fn last(&self, needle: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.target.contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("origin never asked for {needle}"))
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split_whitespace().nth(1)?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Seen { target, headers })
}

fn respond(
    w: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

const PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-KEY:METHOD=NONE,URI=\"\"\n#EXTINF:2.0,\nseg_001.ts\n#EXTINF:2.0,\n../../../hls/climb.ts\n#EXT-X-ENDLIST\n";

/// The usual answers: playlists, segments, and the special paths the tests use.
fn usual(req: &Seen, w: &mut TcpStream) -> std::io::Result<()> {
    let path = req.target.split('?').next().unwrap_or("");
    let m3u8 = [("Content-Type", "application/vnd.apple.mpegurl")];
    let ts = [("Content-Type", "video/mp2t")];
    match path {
        p if p.ends_with("/index.m3u8") => respond(w, "200 OK", &m3u8, PLAYLIST.as_bytes()),
        p if p.ends_with("/page.html") => respond(
            w,
            "200 OK",
            &[
                ("Content-Type", "text/html"),
                ("Set-Cookie", "sid=origin"),
                ("Access-Control-Allow-Origin", "*"),
            ],
            b"<script>alert(1)</script>",
        ),
        p if p.ends_with("/cookie.ts") => respond(
            w,
            "200 OK",
            &[
                ("Content-Type", "video/mp2t"),
                ("Set-Cookie", "sid=origin"),
                ("Access-Control-Allow-Origin", "https://evil.example"),
                ("Access-Control-Allow-Credentials", "true"),
            ],
            &[0x47; 188],
        ),
        p if p.ends_with("/lingo.ts") => respond(
            w,
            "200 OK",
            &[("Content-Type", "text/vnd.trolltech.linguist")],
            &[0x47; 188],
        ),
        p if p.ends_with("/html.ts") => {
            respond(w, "200 OK", &[("Content-Type", "text/html")], b"<html>")
        }
        p if p.ends_with("/vary.ts") => respond(
            w,
            "200 OK",
            &[("Content-Type", "video/mp2t"), ("Vary", "X-Forwarded-Host")],
            &[0x47; 188],
        ),
        p if p.ends_with("/redirect.ts") => respond(
            w,
            "302 Found",
            &[("Location", "http://169.254.169.254/latest/meta-data/")],
            b"",
        ),
        p if p.ends_with("/error.ts") => respond(
            w,
            "500 Internal Server Error",
            &[("Content-Type", "text/html")],
            b"<h1>db01.internal: connection refused</h1>",
        ),
        p if p.ends_with("/missing.ts") => respond(
            w,
            "404 Not Found",
            &[("Content-Type", "text/html")],
            b"<h1>nope on web03</h1>",
        ),
        p if p.ends_with("/big-chunked.ts") => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let chunk = vec![0x47u8; 64 * 1024];
            for _ in 0..48 {
                // 3 MiB
                w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                w.write_all(&chunk)?;
                w.write_all(b"\r\n")?;
            }
            w.write_all(b"0\r\n\r\n")?;
            w.flush()
        }
        p if p.ends_with("/endless.m3u8") => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let mut lines = String::from("#EXTM3U\n");
            for i in 0..2000 {
                lines.push_str(&format!("#EXTINF:2.0,\nsegment_{i:08}.ts\n"));
            }
            let started = Instant::now();
            // endless, bounded here at 60 s so the test process never hangs
            while started.elapsed() < Duration::from_secs(60) {
                w.write_all(format!("{:x}\r\n", lines.len()).as_bytes())?;
                w.write_all(lines.as_bytes())?;
                w.write_all(b"\r\n")?;
            }
            Err(std::io::Error::other("bounded"))
        }
        p if p.ends_with("/longline.m3u8") => {
            let mut body = String::from("#EXTM3U\n#EXTINF:2.0,\n");
            body.push_str(&"a".repeat(70 * 1024));
            body.push_str(".ts\n#EXT-X-ENDLIST\n");
            respond(w, "200 OK", &m3u8, body.as_bytes())
        }
        p if p.ends_with("/drip.ts") => {
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                w.write_all(b"bc\r\n")?;
                w.write_all(&[0x47; 188])?;
                w.write_all(b"\r\n")?;
                w.flush()?;
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(std::io::Error::other("bounded"))
        }
        p if p.ends_with("/hang.ts") => {
            std::thread::sleep(Duration::from_secs(20));
            Err(std::io::Error::other("hung up"))
        }
        p if p.ends_with("/slowbody.ts") => {
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 1000\r\n\r\n",
            )?;
            w.flush()?;
            std::thread::sleep(Duration::from_millis(2000));
            w.write_all(&[0x47; 1000])?;
            w.flush()
        }
        _ => respond(w, "200 OK", &ts, &[0x47; 188 * 10]),
    }
}

struct Edge {
    h: Hlsgate,
    ports: EdgePorts,
    dir: PathBuf,
}

fn edge(origin: &HostileOrigin, extra: &str, subcommand: &str) -> Edge {
    edge_edit(origin, extra, &|t| t, subcommand)
}

/// [`edge`] with more keys in the `edge:` block (`edge_keys`, indented lines).
fn edge_with(origin: &HostileOrigin, edge_keys: &str, extra: &str, subcommand: &str) -> Edge {
    let e = |t: String| t.replacen("edge:\n", &format!("edge:\n{edge_keys}"), 1);
    edge_edit(origin, extra, &e, subcommand)
}

/// [`edge`] with `origins.allow` replaced.
fn edge_allowing(origin: &HostileOrigin, allow: &str, subcommand: &str) -> Edge {
    let e = |t: String| t.replace("allow: [\"127.0.0.1\"]", &format!("allow: {allow}"));
    edge_edit(origin, "", &e, subcommand)
}

/// An edge on `write_config`'s config (with `extra` YAML and stream `h` on `origin`), its
/// text passed through `edit` before the start.
fn edge_edit(
    origin: &HostileOrigin,
    extra: &str,
    edit: &dyn Fn(String) -> String,
    subcommand: &str,
) -> Edge {
    let dir = tempfile::tempdir().unwrap().keep();
    let o = origin.port;
    let (config, ports) = write_config(
        &dir,
        "2s",
        &format!("{extra}streams:\n  h: {{ url: \"http://127.0.0.1:{o}/live/s1/index.m3u8\" }}\n"),
    );
    let text = edit(std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, text).unwrap();
    let h = Hlsgate::start(subcommand, &config, ports.edge);
    Edge { h, ports, dir }
}

impl Edge {
    /// `/api/hls/{token}/h/` for a token bound to the test client.
    fn prefix(&self) -> String {
        let url = self
            .h
            .token_url(&["--stream", "h", "--ua", UA, "--ip", "127.0.0.1"]);
        let p = path_of(&url);
        p[..p.rfind('/').unwrap() + 1].to_owned()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut h = vec![("User-Agent", UA)];
        h.extend_from_slice(headers);
        get(self.ports.edge, path, &h).unwrap()
    }

    fn denials(&self, reason: &str) -> f64 {
        let m = get(self.ports.metrics, "/metrics", &[]).unwrap().text();
        sample(
            &m,
            &format!("hlsgate_auth_denials_total{{reason=\"{reason}\"}}"),
        )
    }

    fn pid(&self) -> u32 {
        let want = self.dir.join("hlsgate.yaml");
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            if args.first().is_some_and(|a| a.ends_with(b"hlsgate"))
                && args.iter().any(|a| *a == want.to_string_lossy().as_bytes())
            {
                return pid;
            }
        }
        panic!("no hlsgate process for {}", want.display());
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
}

fn assert_json_error(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, json!({ "error": message }), "{}", r.text());
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
}

fn api(
    port: u16,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<Value>,
    ctype: &str,
) -> (u16, Value) {
    let auth = jwt.map(|j| format!("Bearer {j}"));
    let mut h = vec![("User-Agent", UA)];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    if body.is_some() {
        h.push(("Content-Type", ctype));
    }
    let body = body.map(|b| b.to_string());
    let r = send(method, port, path, &h, body.as_deref().map(str::as_bytes)).unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn login(port: u16) -> String {
    let creds = json!({"username": "mallory", "password": "mallory-password"});
    let (s, v) = api(
        port,
        "POST",
        "/api/register",
        None,
        Some(creds.clone()),
        "application/json",
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(
        port,
        "POST",
        "/api/login",
        None,
        Some(creds),
        "application/json",
    );
    assert_eq!(s, 200, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

fn set_stream(port: u16, jwt: &str, url: &str) -> (u16, Value) {
    api(
        port,
        "POST",
        "/api/update-stream",
        Some(jwt),
        Some(json!({"streamID": 1, "newUrl": url})),
        "application/json",
    )
}

// ---- 1, 9: who may point the edge where ------------------------------------------------------

#[test]
fn f01_users_cannot_point_streams_at_hlsgate_itself_or_other_loopback_ports() {
    let origin = HostileOrigin::start(usual);
    let o = origin.port;
    let e = edge_allowing(&origin, &format!("[\"127.0.0.1:{o}\"]"), "serve");
    // write_config allows 127.0.0.1 for every port; this config narrows it to the origin's.
    let jwt = login(e.ports.admin);
    let p = &e.ports;
    for (url, why) in [
        (
            format!("http://127.0.0.1:{}/metrics", p.metrics),
            "the metrics listener",
        ),
        (format!("http://127.0.0.1:{}/x/i.m3u8", p.edge), "the edge"),
        (
            format!("http://127.0.0.1:{}/api/x.m3u8", p.admin),
            "the admin",
        ),
        (
            format!("http://127.0.0.1:{}/live/i.m3u8", o + 1),
            "another loopback port",
        ),
        (
            "http://10.0.0.1/live/i.m3u8".to_owned(),
            "a private address",
        ),
        (
            "http://[::127.0.0.1]/live/i.m3u8".to_owned(),
            "IPv4-compatible loopback",
        ),
        (
            "http://[2002:7f00:1::1]/live/i.m3u8".to_owned(),
            "6to4 of loopback",
        ),
        (
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/i.m3u8".to_owned(),
            "Teredo of loopback",
        ),
        (
            "http://[64:ff9b:1::a9fe:a9fe]/i.m3u8".to_owned(),
            "local NAT64",
        ),
        (
            "http://no-such-host.invalid/i.m3u8".to_owned(),
            "a name that does not resolve",
        ),
    ] {
        let (s, v) = set_stream(e.ports.admin, &jwt, &url);
        assert_eq!(
            (s, &v),
            (400, &json!({"error": "not an allowed origin"})),
            "{why}: {url}"
        );
    }
    let (s, v) = set_stream(
        e.ports.admin,
        &jwt,
        &format!("http://127.0.0.1:{o}/live/s1/index.m3u8"),
    );
    assert_eq!(s, 200, "the allowed origin port: {v}");
}

#[test]
fn f01_the_shipped_allow_list_still_refuses_hlsgate_own_listeners() {
    let origin = HostileOrigin::start(usual);
    // write_config ships `allow: ["127.0.0.1"]` (every port), as conf/hlsgate.yaml did.
    let e = edge(&origin, "", "serve");
    let jwt = login(e.ports.admin);
    let (s, v) = set_stream(
        e.ports.admin,
        &jwt,
        &format!("http://127.0.0.1:{}/metrics", e.ports.metrics),
    );
    assert_eq!((s, &v), (400, &json!({"error": "not an allowed origin"})));
    // A static stream pointing there is refused by the edge too (checked at connect).
    let (s, _) = set_stream(
        e.ports.admin,
        &jwt,
        &format!("http://127.0.0.1:{}/live/s1/index.m3u8", origin.port),
    );
    assert_eq!(s, 200);
}

#[test]
fn f09_admin_bodies_must_be_json() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "serve");
    let creds = json!({"username": "victim", "password": "victim-password"});
    for ctype in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (s, v) = api(
            e.ports.admin,
            "POST",
            "/api/register",
            None,
            Some(creds.clone()),
            ctype,
        );
        assert_eq!(
            (s, &v),
            (
                415,
                &json!({"error": "request bodies must be Content-Type: application/json"})
            ),
            "{ctype}"
        );
    }
    let (s, _) = api(
        e.ports.admin,
        "POST",
        "/api/register",
        None,
        Some(creds.clone()),
        "application/json; charset=utf-8",
    );
    assert_eq!(s, 201);
}

// ---- 2, 16: media only, the origin's headers and answers kept out ---------------------------

#[test]
fn f02_f16_only_media_passes_and_the_origins_answers_are_replaced() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let before = e.denials("origin_type");
    let r = e.get(&format!("{pre}page.html"), &[]);
    assert_json_error(&r, 502, "origin sent a non-media type");
    assert!(r.header("Set-Cookie").is_none());
    assert!(!r.text().contains("script"));
    assert_eq!(e.denials("origin_type"), before + 1.0);

    let r = e.get(&format!("{pre}cookie.ts"), &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("Set-Cookie").is_none(), "{:?}", r.headers);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("*"),
        "the edge's CORS, not the origin's"
    );
    assert!(r.header("Access-Control-Allow-Credentials").is_none());
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));

    let before = e.denials("origin_redirect");
    let r = e.get(&format!("{pre}redirect.ts"), &[]);
    assert_json_error(&r, 502, "origin redirected; redirects are not followed");
    assert!(r.header("Location").is_none());
    assert_eq!(e.denials("origin_redirect"), before + 1.0);

    let r = e.get(&format!("{pre}error.ts"), &[]);
    assert_json_error(&r, 502, "origin error");
    assert!(!r.text().contains("internal"));
    let r = e.get(&format!("{pre}missing.ts"), &[]);
    assert_json_error(&r, 404, "not found at the origin");
    // A segment a generic server mislabels (Debian's mime.types: .ts is a Qt Linguist
    // file) is sent as media; one labelled as active content is refused.
    let r = e.get(&format!("{pre}lingo.ts"), &[]);
    assert_eq!(
        (r.status, r.header("Content-Type")),
        (200, Some("video/mp2t"))
    );
    let r = e.get(&format!("{pre}html.ts"), &[]);
    assert_json_error(&r, 502, "origin sent a non-media type");
    // every edge answer says nosniff, the health check included
    let r = e.get("/healthz", &[]);
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
}

// ---- 3, 4: queries and headers --------------------------------------------------------------

#[test]
fn f03_viewer_queries_do_not_reach_the_origin_or_the_cache_key() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    for cb in 1..=3 {
        let r = e.get(&format!("{pre}seg_777.ts?cb={cb}"), &[]);
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        origin.hits("seg_777.ts"),
        1,
        "one fetch for three cache-busting queries"
    );
    assert_eq!(origin.last("seg_777.ts").target, "/live/s1/seg_777.ts");
    // LL-HLS delivery directives are forwarded (and keyed), validated
    let r = e.get(&format!("{pre}index.m3u8?x=1&_HLS_msn=12&_HLS_part=2"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        origin.last("index.m3u8").target,
        "/live/s1/index.m3u8?_HLS_msn=12&_HLS_part=2"
    );
    let r = e.get(&format!("{pre}index.m3u8?_HLS_msn=1;rm"), &[]);
    assert_json_error(&r, 400, "invalid query");
    // a made-up signature for a query: refused
    let r = e.get(&format!("{pre}seg_1.ts?a=1&hlsq=AQAAAAAAAAAAAAAAAA"), &[]);
    assert_json_error(&r, 403, "query not signed for this object");
}

#[test]
fn f04_viewer_headers_stay_at_the_edge_and_vary_is_not_shared() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let hostile = [
        ("X-Forwarded-Host", "evil.example"),
        ("Cookie", "session=viewer"),
        ("X-Custom", "1"),
        ("Accept-Encoding", "gzip"),
        ("Referer", "https://player.example/?token=secret"),
    ];
    assert_eq!(e.get(&format!("{pre}seg_h.ts"), &hostile).status, 200);
    let seen = origin.last("seg_h.ts");
    for (k, _) in hostile {
        assert!(
            !seen.headers.contains_key(&k.to_ascii_lowercase()),
            "{k} reached the origin: {:?}",
            seen.headers
        );
    }
    assert_eq!(
        seen.headers.get("user-agent").map(String::as_str),
        Some("hlsgate/0.1.0")
    );
    // A response that varies on a header is not shared between viewers.
    for _ in 0..2 {
        assert_eq!(e.get(&format!("{pre}vary.ts"), &[]).status, 200);
    }
    assert_eq!(origin.hits("vary.ts"), 2);
}

// ---- 5, 18: paths and Host ------------------------------------------------------------------

#[test]
fn f05_f18_encoded_traversal_and_missing_host_are_400() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let before = e.denials("route");
    for bad in [
        "..;/..;/etc/passwd",
        "a/..;/..;/x.ts",
        "%252e%252e/%252e%252e/x.ts",
        "%25252e%25252e/x.ts",
        "a%252f..%252fx.ts",
    ] {
        let r = e.get(&format!("{pre}{bad}"), &[]);
        assert_json_error(&r, 400, "invalid path");
    }
    assert_eq!(e.denials("route"), before + 5.0);
    assert_eq!(origin.hits("passwd") + origin.hits("x.ts"), 0);

    let mut s = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {pre}seg_1.ts HTTP/1.1\r\nUser-Agent: {UA}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("{\"error\":\"missing Host header\"}"), "{out}");
}

// ---- 6: token lifetime ----------------------------------------------------------------------

#[test]
fn f06_ttl_means_what_it_says_and_renewals_die_with_the_token() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let url = e.h.token_url(&["--stream", "h", "--ttl", "3"]);
    let r = e.get(&path_of(&url), &[]);
    assert_eq!(r.status, 200);
    let renewed = r.header("X-New-Token").unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(4100));
    let r = e.get(&format!("/api/hls/{renewed}/h/index.m3u8"), &[]);
    assert_json_error(&r, 401, "token expired");
    let r = e.get(&path_of(&url), &[]);
    assert_json_error(&r, 401, "token expired");
}

// ---- 8: rewriter edge cases -----------------------------------------------------------------

#[test]
fn f08_climbing_uris_go_through_the_edge_and_empty_uris_stay() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let r = e.get(&format!("{pre}index.m3u8"), &[]);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("#EXT-X-KEY:METHOD=NONE,URI=\"\"\n"), "{text}");
    let climb = text
        .lines()
        .find(|l| l.ends_with("/hls/climb.ts"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(climb.starts_with(&format!("{pre}~o/")), "{climb}");
    let r = e.get(climb, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(origin.last("climb.ts").target, "/hls/climb.ts");
}

// ---- 10, 12, 14: bodies that do not end, are too big, or break the line cap ------------------

#[test]
fn f10_endless_bodies_do_not_grow_memory_and_fetches_have_a_deadline() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "cache:\n  max_bytes: \"32MiB\"\n", "edge");
    // origin_total_timeout must be >= origin_read_timeout (2s in write_config)
    let text = std::fs::read_to_string(e.dir.join("hlsgate.yaml")).unwrap();
    assert!(text.contains("origin_read_timeout: \"2s\""));
    let pre = e.prefix();
    let rss0 = e.rss_kib();
    let started = Instant::now();
    // 10 viewers ask for endless playlists (distinct names) and leave after 200 ms
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
        write!(
            s,
            "GET {pre}n{i}/endless.m3u8 HTTP/1.1\r\nHost: x\r\nUser-Agent: {UA}\r\n\r\n"
        )
        .unwrap();
        clients.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(clients);
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(8) {
        peak = peak.max(e.rss_kib());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("RSS start {rss0} KiB, peak {peak} KiB over 8 s");
    assert!(
        peak < rss0 + 96 * 1024,
        "RSS grew from {rss0} to {peak} KiB"
    );
    // the edge still serves
    assert_eq!(e.get(&format!("{pre}seg_1.ts"), &[]).status, 200);
}

#[test]
fn f10_every_origin_fetch_ends_by_its_total_deadline() {
    let origin = HostileOrigin::start(usual);
    let e = edge_with(&origin, "  origin_total_timeout: \"3s\"\n", "", "edge");
    let pre = e.prefix();
    let mut s = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    write!(
        s,
        "GET {pre}drip.ts HTTP/1.1\r\nHost: x\r\nUser-Agent: {UA}\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    let took = started.elapsed();
    eprintln!("a dripping origin's body ended after {took:?} ({total} bytes)");
    assert!(total > 0, "the viewer got the body while it lasted");
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn f12_large_objects_of_unknown_length_pass_through_whole() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "cache:\n  max_object_bytes: \"1MiB\"\n", "edge");
    let pre = e.prefix();
    for _ in 0..2 {
        let r = e.get(&format!("{pre}big-chunked.ts"), &[]);
        assert_eq!((r.status, r.body.len()), (200, 3 * 1024 * 1024));
    }
    assert_eq!(
        origin.hits("big-chunked.ts"),
        2,
        "passed through, not cached"
    );
}

#[test]
fn f14_the_line_cap_is_one_rule_for_the_first_viewer_and_the_next() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let outcome = || {
        let r = get(
            e.ports.edge,
            &format!("{pre}longline.m3u8"),
            &[("User-Agent", UA)],
        );
        r.map(|r| (r.status, r.text().contains(&"a".repeat(70 * 1024))))
            .map_err(|e| e.to_string())
    };
    let first = outcome();
    let second = outcome();
    assert!(
        !matches!(first, Ok((_, true))),
        "the over-cap line was served: {first:?}"
    );
    assert_eq!(first.is_ok(), second.is_ok(), "{first:?} vs {second:?}");
    assert!(
        !matches!(second, Ok((_, true))),
        "a later viewer got the over-cap line: {second:?}"
    );
}

// ---- 11: slowloris and the connection cap ---------------------------------------------------

/// Whether the edge closed `s`, polling for up to `limit` while `tick` is sent every
/// 300 ms; how long it took.
fn closed_within(s: &mut TcpStream, limit: Duration, tick: &[u8]) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    while started.elapsed() < limit {
        if !tick.is_empty() && s.write_all(tick).is_err() {
            return Some(started.elapsed());
        }
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn f11_trickled_headers_are_cut_off_and_connections_are_capped() {
    let origin = HostileOrigin::start(usual);
    let e = edge_with(
        &origin,
        "  header_timeout: \"2s\"\n  max_connections: 10\n",
        "",
        "edge",
    );
    let before = e.denials("header_timeout");
    // slowloris: a header line every 300 ms, forever
    let mut s = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let took = closed_within(&mut s, Duration::from_secs(8), b"X-a: b\r\n");
    eprintln!("a trickled header was cut off after {took:?}");
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(3500)),
        "{took:?}"
    );
    // a connection that never sends a byte is cut off by the same deadline
    let mut idle = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(8), b"");
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(3500)),
        "{took:?}"
    );
    assert!(e.denials("header_timeout") >= before + 2.0);

    // the cap: ten open connections, the eleventh is answered 503 and closed
    let held: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut out = String::new();
    let _ = extra.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503"), "{out:?}");
    assert!(
        out.ends_with("{\"error\":\"too many open connections\"}"),
        "{out:?}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(e.ports.edge, "/healthz", &[]).unwrap().status, 200);
    assert!(e.denials("connection_limit") >= 1.0);
}

/// A connection to the edge from `source` (a loopback alias such as 127.0.0.2).
fn connect_from(source: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let s = sock
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s
    })
}

/// One address cannot take the whole connection cap: past `edge.max_connections_per_ip`
/// its new connections get 503 while another address still gets in, and its count drops as
/// its connections close.
#[test]
fn f11b_one_address_cannot_take_the_connection_cap() {
    let origin = HostileOrigin::start(usual);
    let e = edge_with(
        &origin,
        "  max_connections: 50\n  max_connections_per_ip: 3\n",
        "",
        "edge",
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| connect_from("127.0.0.1", e.ports.edge))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let read_all = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let out = read_all(connect_from("127.0.0.1", e.ports.edge));
    assert!(out.starts_with("HTTP/1.1 503"), "{out:?}");
    assert!(e.denials("ip_connection_limit") >= 1.0);
    // another address is not held back by the first one's connections
    let mut other = connect_from("127.0.0.2", e.ports.edge);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = read_all(other);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    // the first address's count drops as its connections close
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect_from("127.0.0.1", e.ports.edge);
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = read_all(again);
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
}

// ---- 13: ranges -----------------------------------------------------------------------------

#[test]
fn f13_an_empty_suffix_range_is_416() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    assert_eq!(e.get(&format!("{pre}seg_r.ts"), &[]).status, 200);
    let r = e.get(&format!("{pre}seg_r.ts"), &[("Range", "bytes=-0")]);
    assert_eq!(r.status, 416, "{:?}", r.headers);
    assert_eq!(r.header("Content-Range"), Some("bytes */1880"));
    let r = e.get(&format!("{pre}seg_r.ts"), &[("Range", "bytes=-10")]);
    assert_eq!((r.status, r.body.len()), (206, 10));
}

// ---- 15, 17: a silent origin and a slow one -------------------------------------------------

#[test]
fn f15_viewers_of_a_hanging_origin_share_one_fetch_and_one_timeout() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let started = Instant::now();
    let port = e.ports.edge;
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let path = format!("{pre}hang.ts");
            std::thread::spawn(move || {
                let r = get(port, &path, &[("User-Agent", UA)]).unwrap();
                (r.status, started.elapsed())
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let slowest = results.iter().map(|r| r.1).max().unwrap();
    eprintln!(
        "20 viewers of a hanging origin: slowest answer after {slowest:?}, origin asked {} times",
        origin.hits("hang.ts")
    );
    assert!(results.iter().all(|r| r.0 == 504), "{results:?}");
    // origin_read_timeout is 2 s: one round of it, not one per viewer or two
    assert!(slowest < Duration::from_millis(3500), "{slowest:?}");
    assert!(
        origin.hits("hang.ts") <= 2,
        "{} origin fetches",
        origin.hits("hang.ts")
    );
    assert!(
        origin.connections.load(Ordering::SeqCst) <= 2,
        "{:?} origin connections",
        origin.connections
    );
}

#[test]
fn f17_headers_leave_before_a_slow_body() {
    let origin = HostileOrigin::start(usual);
    let e = edge(&origin, "", "edge");
    let pre = e.prefix();
    let mut s = TcpStream::connect(("127.0.0.1", e.ports.edge)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    write!(
        s,
        "GET {pre}slowbody.ts HTTP/1.1\r\nHost: x\r\nUser-Agent: {UA}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the header");
        got.extend_from_slice(&buf[..n]);
    }
    let header_after = started.elapsed();
    eprintln!("header after {header_after:?} (the origin's body follows 2 s later)");
    assert!(
        header_after < Duration::from_millis(1200),
        "{header_after:?}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() >= Duration::from_secs(2));
}
