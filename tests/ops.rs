//! Production operation, run for real: TLS with h2 (curl, ffmpeg), certificates by SNI and
//! renewed in place, an HTTPS origin checked against `origins.ca_file`, the graceful upgrade
//! under wrk, SIGHUP reloads (good and broken), the SIGTERM drain, the access log.
//! Certificates are made by the openssl command line.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UA: &str = "hlsgate-ops-test/1.0";

/// `openssl req` making a new P-256 key (`key`, unencrypted) and `out` for `subject`;
/// `more`: `-x509` and its days for a self-signed certificate, else a request.
fn new_ec(dir: &Path, key: &str, out: &str, subject: &str, more: &[&str]) {
    let mut args = vec!["req"];
    args.extend_from_slice(more);
    args.extend_from_slice(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
    args.extend_from_slice(&["-nodes", "-keyout", key, "-out", out, "-subj", subject]);
    openssl(dir, &args);
}

/// A test CA in `dir` (made once per directory).
fn ca(dir: &Path) -> PathBuf {
    let crt = dir.join("ca.crt");
    if !crt.exists() {
        new_ec(
            dir,
            "ca.key",
            "ca.crt",
            "/CN=hlsgate test CA",
            &["-x509", "-days", "2"],
        );
    }
    crt
}

/// A certificate for `names` (DNS names; 127.0.0.1 as an IP SAN too) signed by the test CA:
/// `dir/NAME.crt`, `dir/NAME.key`.
fn leaf(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    ca(dir);
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={},IP:127.0.0.1\n", san.join(",")),
    )
    .unwrap();
    let (key, csr, crt) = (
        format!("{name}.key.new"),
        format!("{name}.csr"),
        format!("{name}.crt.new"),
    );
    new_ec(dir, &key, &csr, &format!("/CN={}", names[0]), &[]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    // Put in place by rename, as certbot and friends do.
    let (k, c) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    std::fs::rename(dir.join(&key), &k).unwrap();
    std::fs::rename(dir.join(&crt), &c).unwrap();
    (c, k)
}

/// curl: (HTTP status, HTTP version, body); `args` go before the URL.
fn curl(args: &[&str], url: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut t = tail.split(' ');
    let code = t.next().unwrap_or("0").parse().unwrap_or(0);
    (code, t.next().unwrap_or("").to_owned(), body.to_owned())
}

/// The path of a playback URL `hlsgate token` printed (after its scheme and authority).
fn path(url: &str) -> String {
    path_of(url)
}

struct Node {
    h: Hlsgate,
    dir: PathBuf,
    ports: EdgePorts,
    tls: u16,
    _origin: Origin,
}

/// `hlsgate serve` with an edge TLS listener holding `localhost.crt` (default) and
/// `other.crt` (by SNI), and streams on a loopback origin. `edge_keys`: more `edge:` keys.
fn node(edge_keys: &str) -> Node {
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::with_streams(dir.join("origin"));
    let (c1, k1) = leaf(&dir, "localhost", &["localhost"]);
    let (c2, k2) = leaf(&dir, "other", &["other.test", "*.wild.test"]);
    let tls = free_port();
    let (config, ports) = write_config(&dir, "5s", &format!("streams:\n{}", origin.streams_yaml()));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "edge:\n",
        &format!(
            "edge:\n  tls:\n    listen: \"127.0.0.1:{tls}\"\n    cert: \"{}\"\n    key: \"{}\"\n    certs:\n      - {{ cert: \"{}\", key: \"{}\" }}\n  upgrade_socket: \"{}/upgrade.sock\"\n{edge_keys}",
            c1.display(),
            k1.display(),
            c2.display(),
            k2.display(),
            dir.display()
        ),
        1,
    );
    // Long enough for the requests in flight when an upgrade hands over.
    let text = text.replace("grace_period: \"0s\"", "shutdown_grace: \"10s\"");
    std::fs::write(&config, text).unwrap();
    let h = Hlsgate::start("serve", &config, ports.edge);
    Node {
        h,
        dir,
        ports,
        tls,
        _origin: origin,
    }
}

/// A stale live playlist asked for over HTTP/2 is refreshed in the background, as over
/// HTTP/1.1. (It was not: the refresh is a Pingora subrequest made from the viewer's
/// request written as HTTP/1.1, whose URI is the path alone, while the viewer's h2 request
/// had the whole URI; the refresh found nothing it was admitted to fetch and was refused,
/// and every h2 viewer got the stale copy, "updating", until the refresh's one-minute
/// bound ran out: a live stream frozen for a minute at a time.)
#[test]
fn a_stale_live_playlist_asked_over_h2_is_refreshed_in_the_background() {
    let n = node("");
    let ca = n.dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    // fresh for 1 s (half its target duration), then stale-while-revalidate
    std::fs::write(
        n.dir.join("origin/ts/live.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2.0,\nseg3.ts\n",
    )
    .unwrap();
    let p = path(&n.h.token_url(&["--stream", "ts", "--ttl", "600"]));
    let p = format!("{}/live.m3u8", p.rsplit_once('/').unwrap().0);
    let t = n.tls;
    let url = format!("https://localhost:{t}{p}");
    let resolve = format!("localhost:{t}:127.0.0.1");
    let get = || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--http2", "--cacert", ca])
            .args(["--resolve", &resolve, "-o", "/dev/null", "-D", "-", &url])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(head.starts_with("http/2 200"), "{head}");
        let cache = head
            .lines()
            .find_map(|l| l.strip_prefix("x-cache: "))
            .unwrap_or("")
            .trim()
            .to_owned();
        cache
    };
    let asked = || n._origin.hits("GET /ts/live.m3u8 ");
    assert_eq!(get(), "miss");
    for round in 1..=2 {
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(get(), "stale", "round {round}: answered at once");
        let deadline = Instant::now() + Duration::from_secs(5);
        while asked() < 1 + round {
            assert!(
                Instant::now() < deadline,
                "round {round}: the background refresh never asked the origin"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(get(), "hit", "round {round}: fresh again");
    }
}

#[test]
fn tls_speaks_h2_and_http1_picks_certificates_by_sni_and_takes_renewals() {
    let n = node("");
    let cacert = n.dir.join("ca.crt");
    let ca = cacert.to_str().unwrap();
    let p = path(&n.h.token_url(&["--stream", "ts", "--ttl", "600"]));
    let t = n.tls;
    let resolve = |name: &str| format!("{name}:{t}:127.0.0.1");

    // h2 by ALPN, http/1.1 when asked; the rewritten playlist is the same either way.
    let url = format!("https://localhost:{t}{p}");
    let (code, ver, h2_body) = curl(
        &[
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve("localhost"),
        ],
        &url,
    );
    assert_eq!((code, ver.as_str()), (200, "2"), "{h2_body}");
    assert!(h2_body.starts_with("#EXTM3U"), "{h2_body}");
    let (code, ver, h1_body) = curl(
        &[
            "--http1.1",
            "--cacert",
            ca,
            "--resolve",
            &resolve("localhost"),
        ],
        &url,
    );
    assert_eq!((code, ver.as_str()), (200, "1.1"));
    assert_eq!(h1_body, h2_body);
    // Each segment the playlist names plays over h2.
    let seg = h2_body.lines().find(|l| l.ends_with(".ts")).unwrap();
    let seg_url = format!("https://localhost:{t}{}", {
        let base = p.rsplit_once('/').unwrap().0;
        format!("{base}/{seg}")
    });
    let (code, ver, _) = curl(
        &[
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve("localhost"),
            "-o",
            "/dev/null",
        ],
        &seg_url,
    );
    assert_eq!((code, ver.as_str()), (200, "2"));
    // No token: the same JSON 401 over TLS.
    let (code, _, body) = curl(
        &[
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve("localhost"),
        ],
        &format!("https://localhost:{t}/api/hls/AAAA/ts/index.m3u8"),
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // SNI: curl checks the name, so a wrong certificate would fail the handshake (000).
    for name in ["other.test", "x.wild.test"] {
        let (code, ver, _) = curl(
            &["--http2", "--cacert", ca, "--resolve", &resolve(name)],
            &format!("https://{name}:{t}{p}"),
        );
        assert_eq!((code, ver.as_str()), (200, "2"), "{name}");
    }
    let (code, _, _) = curl(
        &["--cacert", ca, "--resolve", &resolve("a.b.wild.test")],
        &format!("https://a.b.wild.test:{t}{p}"),
    );
    assert_eq!(code, 0, "a wildcard covers one label");

    // Renewal: a new certificate for localhost that also names renewed.test, moved into
    // place; picked up without a restart (SIGHUP here; a 10 s file watch otherwise).
    let (code, _, _) = curl(
        &["--cacert", ca, "--resolve", &resolve("renewed.test")],
        &format!("https://renewed.test:{t}{p}"),
    );
    assert_eq!(code, 0, "not yet a name of the certificate");
    leaf(&n.dir, "localhost", &["localhost", "renewed.test"]);
    let mut h = n.h;
    h.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, _, _) = curl(
            &["--cacert", ca, "--resolve", &resolve("renewed.test")],
            &format!("https://renewed.test:{t}{p}"),
        );
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewed certificate not served:\n{}",
            h.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(h.log_text().contains("TLS certificates reloaded"));
    // Plain HTTP keeps working beside TLS.
    let r = get(n.ports.edge, &p, &[]).unwrap();
    assert_eq!(r.status, 200);
    // A healthy run logs no ERROR (the readiness probe once left a failed handshake).
    let log = h.log_text();
    assert!(!log.contains(" ERROR "), "{log}");
}

#[test]
fn ffmpeg_plays_https_playback_urls_and_https_origins_are_checked_against_ca_file() {
    let dir = tempfile::tempdir().unwrap().keep();
    let root = dir.join("origin");
    let plain = Origin::with_streams(root.clone());
    let (c, k) = leaf(&dir, "localhost", &["localhost"]);
    // An HTTPS origin (Python's http.server wrapped in TLS) serving the same files.
    let oport = free_port();
    let _https_origin = ChildGuard(
        Command::new("python3")
            .args([
                "-c",
                HTTPS_ORIGIN,
                root.to_str().unwrap(),
                &oport.to_string(),
                c.to_str().unwrap(),
                k.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let tls = free_port();
    let streams = format!(
        "streams:\n{}  secure: {{ url: \"https://localhost:{oport}/ts/index.m3u8\" }}\n",
        plain.streams_yaml()
    );
    let mk = |name: &str, ca_file: bool| {
        let (config, ports) = write_config_with(
            &dir,
            name,
            "5s",
            &format!("sqlite://{}/{name}.db", dir.display()),
            &streams,
        );
        let mut text = std::fs::read_to_string(&config)
            .unwrap()
            .replacen(
                "edge:\n",
                &format!(
                    "edge:\n  tls: {{ listen: \"127.0.0.1:{tls}\", cert: \"{}\", key: \"{}\" }}\n",
                    c.display(),
                    k.display()
                ),
                1,
            )
            .replace(
                "allow: [\"127.0.0.1\"]",
                &format!("allow: [\"127.0.0.1\", \"localhost:{oport}\"]"),
            );
        text = text.replace(
            &format!("public_edge_url: \"http://127.0.0.1:{}\"", ports.edge),
            &format!("public_edge_url: \"https://localhost:{tls}\""),
        );
        if ca_file {
            text = text.replacen(
                "origins:\n",
                &format!(
                    "origins:\n  ca_file: \"{}\"\n",
                    dir.join("ca.crt").display()
                ),
                1,
            );
        }
        std::fs::write(&config, text).unwrap();
        (config, ports)
    };
    // Wait for the HTTPS origin.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", oport)).is_err() {
        assert!(Instant::now() < deadline, "https origin did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (config, ports) = mk("with-ca.yaml", true);
    let h = Hlsgate::start("serve", &config, ports.edge);
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    for stream in ["ts", "fmp4", "aes", "secure"] {
        let url = h.token_url(&["--stream", stream, "--ttl", "600"]);
        assert!(
            url.starts_with(&format!("https://localhost:{tls}/api/hls/")),
            "{url}"
        );
        let (ok, err) = ffmpeg_play_opts(&url, UA, &[], &["-tls_verify", "1", "-ca_file", ca]);
        assert!(ok, "{stream}: {err}");
    }
    drop(h);

    // Without origins.ca_file the test CA is unknown: the HTTPS origin is refused (502),
    // the plain one still plays.
    let (config, ports) = mk("no-ca.yaml", false);
    let h = Hlsgate::start("serve", &config, ports.edge);
    let url = h.token_url(&["--stream", "secure", "--ttl", "600"]);
    let r = get(ports.edge, &path(&url), &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let url = h.token_url(&["--stream", "ts", "--ttl", "600"]);
    assert_eq!(get(ports.edge, &path(&url), &[]).unwrap().status, 200);
}

const HTTPS_ORIGIN: &str = r#"
import functools, http.server, ssl, sys
root, port, cert, key = sys.argv[1:]
class H(http.server.SimpleHTTPRequestHandler):
    extensions_map = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
                      ".m4s": "video/iso.segment", ".mp4": "video/mp4", ".key": "application/octet-stream",
                      "": "application/octet-stream"}
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), functools.partial(H, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// wrk's summary: (requests, socket error line, non-2xx line).
fn wrk(args: &[&str]) -> (u64, Option<String>, Option<String>, String) {
    let out = Command::new("wrk").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let find = |needle: &str| text.lines().find(|l| l.contains(needle)).map(str::to_owned);
    (requests, find("Socket errors"), find("Non-2xx"), text)
}

#[test]
fn upgrade_under_load_loses_no_request() {
    let n = node("");
    let url = n.h.token_url(&["--stream", "ts", "--ttl", "600"]);
    let p = path(&url);
    let plain = format!("http://127.0.0.1:{}{p}", n.ports.edge);
    let seg = {
        let body = get(n.ports.edge, &p, &[]).unwrap().text();
        let s = body
            .lines()
            .find(|l| l.ends_with(".ts"))
            .unwrap()
            .to_owned();
        format!(
            "http://127.0.0.1:{}{}/{s}",
            n.ports.edge,
            p.rsplit_once('/').unwrap().0
        )
    };
    let tls = format!("https://127.0.0.1:{}{p}", n.tls);
    let mut old = n.h;
    let config = old.config.clone();
    // wrk on the playlist and a segment (HTTP/1.1 keep-alive), curl over TLS, while the
    // new process takes over.
    let load = |u: String| std::thread::spawn(move || wrk(&["-t1", "-c16", "-d7s", &u]));
    let w1 = load(plain.clone());
    let w2 = load(seg);
    let ca = n.dir.join("ca.crt");
    let tls_loop = std::thread::spawn(move || {
        let (mut ok, mut bad) = (0, Vec::new());
        let end = Instant::now() + Duration::from_secs(7);
        while Instant::now() < end {
            let (code, _, _) = curl(&["--cacert", ca.to_str().unwrap()], &tls);
            if code == 200 {
                ok += 1
            } else {
                bad.push(code)
            }
        }
        (ok, bad)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let new = Hlsgate::spawn("serve", &config, n.ports.edge, &["--upgrade"]);
    std::thread::sleep(Duration::from_millis(300));
    old.signal("QUIT");
    let exited = old.wait_exit(Duration::from_secs(15));
    let (r1, errs1, non2xx1, text1) = w1.join().unwrap();
    let (r2, errs2, non2xx2, text2) = w2.join().unwrap();
    let (tls_ok, tls_bad) = tls_loop.join().unwrap();
    assert!(
        exited.is_some(),
        "old process still running:\n{}",
        old.log_text()
    );
    assert!(r1 > 1000 && r2 > 1000, "{text1}\n{text2}");
    assert_eq!((errs1, non2xx1), (None, None), "playlist: {text1}");
    assert_eq!((errs2, non2xx2), (None, None), "segment: {text2}");
    assert!(
        tls_ok > 10 && tls_bad.is_empty(),
        "TLS: {tls_ok} ok, failed {tls_bad:?}"
    );
    // Both processes served part of it: the old one logged its handover and drain, the new
    // one serves now.
    let old_log = old.log_text();
    assert!(
        old_log.contains("handing the listening sockets over")
            && old_log.contains("drained; exiting"),
        "{old_log}"
    );
    assert_eq!(
        get(n.ports.edge, &p, &[]).unwrap().status,
        200,
        "{}",
        new.log_text()
    );
    let m = get(n.ports.metrics, "/metrics", &[]).unwrap().text();
    assert!(
        sample(&m, "hlsgate_requests_total{") > 0.0,
        "the new process counts its own requests"
    );
}

#[test]
fn sighup_reloads_streams_and_keys_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::with_streams(dir.join("origin"));
    let o = origin.port;
    let (config, ports) = write_config(
        &dir,
        "5s",
        &format!("streams:\n  ts: {{ url: \"http://127.0.0.1:{o}/ts/index.m3u8\" }}\n"),
    );
    let mut h = Hlsgate::start("edge", &config, ports.edge);
    let good = std::fs::read_to_string(&config).unwrap();
    let old_ts = h.token_url(&["--stream", "ts", "--ttl", "600"]);

    // A new stream, a CORS list and a connection cap in the file: unknown until SIGHUP.
    let next = good
        .replace(
            "streams:\n",
            &format!("streams:\n  fmp4: {{ url: \"http://127.0.0.1:{o}/fmp4/index.m3u8\" }}\n"),
        )
        .replacen(
            "edge:\n",
            "edge:\n  max_connections: 3\n  cors:\n    allow_origins: [\"https://player.example\"]\n",
            1,
        );
    std::fs::write(&config, &next).unwrap();
    // Before the reload 4 open connections are fine (the cap is 20,000).
    let hold = |n: usize| -> Vec<std::net::TcpStream> {
        let v = (0..n)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", ports.edge)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        v
    };
    let held = hold(3);
    assert_eq!(get(ports.edge, "/healthz", &[]).unwrap().status, 200);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let fmp4 = h.token_url(&["--stream", "fmp4", "--ttl", "600"]);
    assert_eq!(
        get(ports.edge, &path(&fmp4), &[]).unwrap().status,
        404,
        "before the reload"
    );
    h.signal("HUP");
    wait_for(|| h.log_text().contains("config reloaded"), "reload");
    let r = get(
        ports.edge,
        &path(&fmp4),
        &[("Origin", "https://player.example")],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://player.example")
    );
    let (ok, err) = ffmpeg_play(
        &format!("http://127.0.0.1:{}{}", ports.edge, path(&fmp4)),
        UA,
    );
    assert!(ok, "{err}");
    // Tokens issued before still work (same key file); so does the old stream.
    assert_eq!(get(ports.edge, &path(&old_ts), &[]).unwrap().status, 200);
    // The new connection cap (3) holds: a 4th connection is answered 503 at once and
    // closed (read without sending anything: a request sent into the closing connection
    // could meet a reset instead of the answer). The edge's own gauge says when ffmpeg's
    // and the requests' connections above are gone (a connection still finishing an
    // origin fetch for a player that left counts until it is done), then that the three
    // held ones are all counted before the fourth comes.
    let open = || {
        let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
        sample(&m, "hlsgate_edge_connections ")
    };
    wait_for(|| open() == 0.0, "earlier connections to close");
    let held = hold(3);
    wait_for(|| open() == 3.0, "the three held connections to be counted");
    let mut fourth = std::net::TcpStream::connect(("127.0.0.1", ports.edge)).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut fourth, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));

    // A broken file (a typo'd key, then bad YAML): refused, logged with the reason, the
    // previous config keeps serving.
    for (broken, why) in [
        (
            next.replacen("idle_timeout:", "idle_timout:", 1),
            "unknown field `idle_timout`",
        ),
        (format!("{next}\nedge: [oops"), "hlsgate.yaml"),
        // an empty file (an editor or a deploy mid-write): never all defaults
        (String::new(), "the file is empty"),
        ("\n  \n".to_owned(), "the file is empty"),
        // a file cut before its streams: every static stream gone
        (
            format!("{}streams: {{}}\n", &next[..next.find("streams:").unwrap()]),
            "none of the 2 static streams",
        ),
        // a key file that does not exist: never created by a reload
        (
            next.replace("secret.key\"", "missing.key\""),
            "a reload never creates key files",
        ),
    ] {
        std::fs::write(&config, &broken).unwrap();
        let before = h.log_text().matches("config reload refused").count();
        h.signal("HUP");
        wait_for(
            || h.log_text().matches("config reload refused").count() > before,
            "refusal",
        );
        let log = h.log_text();
        assert!(log.contains(why), "{log}");
        assert!(
            !config.with_file_name("missing.key").exists(),
            "a key file was created"
        );
        assert_eq!(get(ports.edge, &path(&fmp4), &[]).unwrap().status, 200);
        assert_eq!(get(ports.edge, &path(&old_ts), &[]).unwrap().status, 200);
    }
    let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
    assert_eq!(
        sample(&m, "hlsgate_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "hlsgate_config_reloads_total{result=\"refused\"}"),
        6.0
    );

    // Removing a stream removes it at once.
    std::fs::write(&config, &good).unwrap();
    h.signal("HUP");
    wait_for(
        || h.log_text().matches("config reloaded").count() == 2,
        "second reload",
    );
    assert_eq!(get(ports.edge, &path(&fmp4), &[]).unwrap().status, 404);
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_within_the_grace() {
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::with_streams(dir.join("origin"));
    let o = origin.port;
    // `/slow/` answers after 5 s.
    std::fs::create_dir_all(dir.join("origin/slow")).unwrap();
    std::fs::copy(
        dir.join("origin/ts/index.m3u8"),
        dir.join("origin/slow/index.m3u8"),
    )
    .unwrap();
    let run = |grace: &str, name: &str| {
        let (config, ports) = write_config_with(&dir, name, "10s", &format!("sqlite://{}/{name}.db", dir.display()),
            &format!("streams:\n  slow: {{ url: \"http://127.0.0.1:{o}/slow/index.m3u8\" }}\n  ts: {{ url: \"http://127.0.0.1:{o}/ts/index.m3u8\" }}\n"));
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "grace_period: \"0s\"",
            &format!("shutdown_grace: \"{grace}\""),
        );
        std::fs::write(&config, text).unwrap();
        (Hlsgate::start("edge", &config, ports.edge), ports)
    };

    // Idle: exits at once, not after the grace; a kept-alive connection waiting for its
    // next request is closed at once (not at edge.idle_timeout, 2 s here).
    let (mut h, ports) = run("8s", "idle.yaml");
    let ts = h.token_url(&["--stream", "ts"]);
    assert_eq!(get(ports.edge, &path(&ts), &[]).unwrap().status, 200);
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", ports.edge)).unwrap();
    {
        use std::io::{Read, Write};
        kept.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"ok\n") {
            let n = kept.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    h.signal("TERM");
    {
        use std::io::Read;
        let n = kept.read(&mut [0u8; 64]).unwrap_or(0);
        assert_eq!(n, 0, "bytes on an idle connection");
    }
    let closed = t0.elapsed();
    assert!(
        closed < Duration::from_millis(1000),
        "idle connection closed after {closed:?}"
    );
    let took = h.wait_exit(Duration::from_secs(8)).expect("exits");
    assert!(took < Duration::from_secs(2), "idle drain took {took:?}");

    // A request in flight (5 s) within an 8 s grace: answered in full, then the exit.
    let (mut h, ports) = run("8s", "busy.yaml");
    let slow = path(&h.token_url(&["--stream", "slow"]));
    let edge = ports.edge;
    let req = std::thread::spawn(move || get(edge, &slow, &[]));
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    h.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        get(edge, "/healthz", &[]).is_err(),
        "still accepting after SIGTERM"
    );
    let took = h.wait_exit(Duration::from_secs(12)).expect("exits");
    let r = req
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("#EXTM3U"));
    assert!(
        took >= Duration::from_millis(3500) && t0.elapsed() < Duration::from_secs(8),
        "took {took:?}"
    );

    // Longer than the grace (2 s): the process exits when it runs out.
    let (mut h, ports) = run("2s", "short.yaml");
    let slow = path(&h.token_url(&["--stream", "slow"]));
    let edge = ports.edge;
    let _req = std::thread::spawn(move || get(edge, &slow, &[]));
    std::thread::sleep(Duration::from_millis(500));
    h.signal("TERM");
    let took = h.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3500),
        "took {took:?}"
    );
}

#[test]
fn access_log_has_one_line_per_request_without_tokens() {
    for (format, check_json) in [("text", false), ("json", true)] {
        let dir = tempfile::tempdir().unwrap().keep();
        let origin = Origin::with_streams(dir.join("origin"));
        let log = dir.join("access.log");
        let (config, ports) =
            write_config(&dir, "5s", &format!("streams:\n{}", origin.streams_yaml()));
        add_config_keys(
            &config,
            "edge",
            &format!(
                "  access_log: \"{}\"\n  access_log_format: {format}\n",
                log.display()
            ),
        );
        let mut h = Hlsgate::start("edge", &config, ports.edge);
        let url = h.token_url(&["--stream", "ts", "--ttl", "600"]);
        let token = path(&url).split('/').nth(3).unwrap().to_owned();
        let p = path(&url);
        assert_eq!(get(ports.edge, &p, &[]).unwrap().status, 200);
        assert_eq!(get(ports.edge, &p, &[]).unwrap().status, 200);
        assert_eq!(
            get(ports.edge, &format!("{p}?token=secret-query"), &[])
                .unwrap()
                .status,
            200
        );
        assert_eq!(
            get(ports.edge, "/api/hls/forged/ts/index.m3u8", &[])
                .unwrap()
                .status,
            401
        );
        // a request Pingora's parser refuses (answered 400 before any proxy phase)
        {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect(("127.0.0.1", ports.edge)).unwrap();
            c.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nnot a header line\r\n\r\n")
                .unwrap();
            let mut answer = Vec::new();
            let _ = c.read_to_end(&mut answer);
            assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");
        }
        h.signal("TERM");
        h.wait_exit(Duration::from_secs(10)).expect("exits");
        let lines = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = lines.lines().filter(|l| !l.contains("/healthz")).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        let all = lines.join("\n");
        assert!(
            !all.contains(&token) && !all.contains("secret-query") && !all.contains("forged"),
            "{all}"
        );
        if check_json {
            let v: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(v[0]["status"], 200);
            assert_eq!(v[0]["stream"], "ts");
            assert_eq!(v[0]["kind"], "playlist");
            assert_eq!(v[0]["cache"], "miss");
            assert_eq!(v[1]["cache"], "hit");
            assert_eq!(v[0]["path"], "/api/hls/<token>/ts/index.m3u8");
            assert_eq!(v[3]["status"], 401);
            assert_eq!(v[3]["deny"], "malformed");
            assert_eq!(
                (v[4]["status"].as_u64(), v[4]["deny"].as_str()),
                (Some(400), Some("bad_request"))
            );
            assert!(v[0]["bytes"].as_u64().unwrap() > 100);
        } else {
            assert!(
                lines[0].contains(" 127.0.0.1 GET /api/hls/<token>/ts/index.m3u8 200 ")
                    && lines[0].contains(" stream=ts kind=playlist cache=miss "),
                "{}",
                lines[0]
            );
            assert!(lines[1].contains(" cache=hit "), "{}", lines[1]);
            assert!(
                lines[3].contains(" 401 ") && lines[3].contains(" deny=malformed "),
                "{}",
                lines[3]
            );
            assert!(
                lines[4].contains(" 127.0.0.1 - - 400 0 ")
                    && lines[4].contains(" deny=bad_request "),
                "{}",
                lines[4]
            );
        }
        // Nothing alarming at the default level for ordinary traffic (a miss then a hit).
        let stderr = h.log_text();
        assert!(
            !stderr.contains(" WARN ") && !stderr.contains(" ERROR "),
            "{stderr}"
        );
    }
}

#[test]
fn admin_listens_on_tls_too() {
    let dir = tempfile::tempdir().unwrap().keep();
    let (c, k) = leaf(&dir, "localhost", &["localhost"]);
    let atls = free_port();
    let (config, ports) = write_config(&dir, "5s", "streams: {}\n");
    add_config_keys(
        &config,
        "admin",
        &format!(
            "  tls: {{ listen: \"127.0.0.1:{atls}\", cert: \"{}\", key: \"{}\" }}\n",
            c.display(),
            k.display()
        ),
    );
    let _h = Hlsgate::start("serve", &config, ports.edge);
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let r = format!("localhost:{atls}:127.0.0.1");
    for (route, status) in [("register", 201), ("login", 200)] {
        let (code, ver, body) = curl(
            &[
                "--cacert",
                ca,
                "--resolve",
                &r,
                "-H",
                "Content-Type: application/json",
                "-XPOST",
                "-d",
                r#"{"username":"tls-user","password":"correct horse battery"}"#,
            ],
            &format!("https://localhost:{atls}/api/{route}"),
        );
        assert_eq!((code, ver.as_str()), (status, "1.1"), "{route}: {body}");
        if route == "login" {
            assert!(body.contains("\"token\""), "{body}");
        }
    }
    // The plain listener still answers.
    assert_eq!(get(ports.admin, "/healthz", &[]).unwrap().status, 200);
}

#[test]
fn h2_connections_outlive_the_http1_header_deadline() {
    // edge.header_timeout bounds HTTP/1 request headers; an h2 connection carries binary
    // frames, not header lines, and must not be cut by it: h2load keeps 2 connections for
    // 4 s at 5 requests a second each, past a 1 s header deadline.
    let n = node("  header_timeout: \"1s\"\n");
    let p = path(&n.h.token_url(&["--stream", "ts", "--ttl", "600"]));
    let url = format!("https://127.0.0.1:{}{p}", n.tls);
    let out = Command::new("h2load")
        .args(["-t1", "-c2", "-m1", "--rps=5", "-D4", &url])
        .output()
        .expect("h2load is installed (scripts/test.sh installs nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |p: &str| {
        text.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line("Application protocol:").contains("h2"), "{text}");
    let requests = line("requests:");
    let done: u64 = requests
        .split_whitespace()
        .nth(7)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(done >= 30, "{text}");
    assert!(requests.contains(" 0 failed, 0 errored"), "{text}");
    assert!(
        line("status codes:").starts_with(&format!("status codes: {done} 2xx")),
        "{text}"
    );
}

/// A viewer that goes away in the middle of an answer (an HTTP/2 stream reset, a closed
/// connection) is no server error: not counted or logged as 500.
#[test]
fn a_viewer_that_goes_away_mid_answer_is_no_server_error() {
    let n = node("");
    std::fs::write(n.dir.join("origin/ts/big.ts"), vec![0x47u8; 8 << 20]).unwrap();
    let p = path(&n.h.token_url(&["--stream", "ts", "--ttl", "600"]));
    let big = format!("{}/big.ts", p.rsplit_once('/').unwrap().0);
    let tls = format!("https://127.0.0.1:{}{big}", n.tls);
    let plain = format!("http://127.0.0.1:{}{big}", n.ports.edge);
    let ca = n.dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    // in the cache first
    let (code, version, _) = curl(&["--cacert", ca, "--http2", "-o", "/dev/null"], &tls);
    assert_eq!((code, version.as_str()), (200, "2"));
    let server_errors = || {
        let text = get(n.ports.metrics, "/metrics", &[]).unwrap().text();
        sample(
            &text,
            "hlsgate_requests_total{kind=\"segment\",status=\"500\"}",
        )
    };
    let before = server_errors();
    for _ in 0..5 {
        // the client gives up once it sees the length (curl --max-filesize): a reset stream
        // (h2), a closed connection (h1), while the edge writes the body
        for (args, url) in [
            (
                vec!["--cacert", ca, "--http2", "--max-filesize", "1000"],
                &tls,
            ),
            (vec!["--http1.1", "--max-filesize", "1000"], &plain),
        ] {
            let mut a = args.clone();
            a.extend(["-o", "/dev/null", "-w", "%{http_code} %{size_download}"]);
            let out = Command::new("curl").args(&a).arg(url).output().unwrap();
            assert!(
                !out.status.success(),
                "curl was meant to give up: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server_errors(),
        before,
        "a viewer going away counted as 500"
    );
    // and before any answer: the origin takes 5 s (`/slow/`), the viewer gives up at 0.5 s
    let ua = "impatient/1.0";
    let root = n.dir.join("origin/slow");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(n.dir.join("origin/ts/index.m3u8"), root.join("index.m3u8")).unwrap();
    std::fs::write(root.join("seg.ts"), vec![0x47u8; 1 << 20]).unwrap();
    let jwt = login_as(ua, n.ports.admin, "impatient");
    let url = format!("http://127.0.0.1:{}/slow/index.m3u8", n._origin.port);
    let id = add_stream_as(ua, n.ports.admin, &jwt, &url);
    let (_, v, _) = api_as(
        ua,
        n.ports.admin,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
    );
    let p = path(v["url"].as_str().unwrap());
    let seg = format!("{}/seg.ts", p.rsplit_once('/').unwrap().0);
    for (args, url) in [
        (
            vec!["--cacert", ca, "--http2"],
            format!("https://127.0.0.1:{}{seg}", n.tls),
        ),
        (
            vec!["--http1.1"],
            format!("http://127.0.0.1:{}{seg}", n.ports.edge),
        ),
    ] {
        let mut a = args.clone();
        a.extend(["-A", ua, "--max-time", "0.5", "-o", "/dev/null"]);
        let out = Command::new("curl").args(&a).arg(&url).output().unwrap();
        assert!(!out.status.success(), "curl was meant to give up");
    }
    // the origin answers after 5 s; the edge finishes (and logs) the abandoned requests
    std::thread::sleep(Duration::from_millis(6_000));
    let text = get(n.ports.metrics, "/metrics", &[]).unwrap().text();
    let all_500: f64 = text
        .lines()
        .filter(|l| l.starts_with("hlsgate_requests_total") && l.contains("status=\"500\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(all_500, 0.0, "a viewer going away counted as 500:\n{text}");
}

/// SIGQUIT hands the listening sockets to a process started with `--upgrade`; with none
/// waiting, handing over to nobody would take the node down: it logs and keeps serving.
#[test]
fn sigquit_with_no_successor_keeps_serving() {
    let n = node("");
    let h = n.h;
    let p = path(&h.token_url(&["--stream", "ts", "--ttl", "600"]));
    // past the test wrapper (which stops passing signals after a QUIT)
    let pid = h.pid();
    let quit = || assert_eq!(unsafe { libc::kill(pid, libc::SIGQUIT) }, 0);
    quit();
    wait_for(
        || {
            h.log_text()
                .contains("no process is waiting for the listening sockets")
        },
        "the refusal to hand over",
    );
    std::thread::sleep(Duration::from_millis(3_000));
    assert_eq!(get(n.ports.edge, "/healthz", &[]).unwrap().status, 200);
    assert_eq!(get(n.ports.edge, &p, &[]).unwrap().status, 200);
    // once a successor waits, the same signal hands over
    let new = Hlsgate::spawn("serve", &h.config, n.ports.edge, &["--upgrade"]);
    std::thread::sleep(Duration::from_millis(500));
    quit();
    // the old process exits (a zombie until its wrapper reaps it)
    wait_for(
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.split(' ').nth(2) == Some("Z"))
        },
        "the old process to exit",
    );
    new.wait_healthy();
    assert_eq!(get(n.ports.edge, &p, &[]).unwrap().status, 200);
}

/// Stalled TLS handshakes (connections to the TLS listener that send nothing) count
/// against `edge.max_connections` from their accept and are closed after
/// `edge.header_timeout`: they cannot hold file descriptors past the cap, and once they are
/// gone the edge answers again.
#[test]
fn stalled_tls_handshakes_count_against_the_cap_and_time_out() {
    let n = node("  max_connections: 20\n  header_timeout: \"1s\"\n");
    let open = || {
        let m = get(n.ports.metrics, "/metrics", &[]).unwrap().text();
        sample(&m, "hlsgate_edge_connections ")
    };
    wait_for(|| open() == 0.0, "no connection");
    let mut stalled: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", n.tls)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let counted = open();
    assert_eq!(counted, 20.0, "handshakes counted from accept, capped");
    // The cap holds for plain connections too while the handshakes stall.
    let r = get(n.ports.edge, "/healthz", &[]);
    assert!(r.map_or(true, |r| r.status == 503));
    // Each stalled handshake is closed by the edge after header_timeout (1 s), not 60 s.
    let t = Instant::now();
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let n = std::io::Read::read(s, &mut buf);
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    wait_for(|| open() == 0.0, "the stalled handshakes to be closed");
    assert_eq!(get(n.ports.edge, "/healthz", &[]).unwrap().status, 200);
    let m = get(n.ports.metrics, "/metrics", &[]).unwrap().text();
    assert!(sample(&m, "hlsgate_auth_denials_total{reason=\"tls_handshake\"}") >= 20.0);
    assert!(!n.h.log_text().contains(" ERROR "), "{}", n.h.log_text());
}

/// A cached object's own headers are made on its first hit and kept with it, for the
/// config they were made under: after a SIGHUP that changes what they depend on (here
/// `origins.media_types`, so that the origin's `application/octet-stream` is no longer
/// passed and the segment is labelled by its extension), the next hit of the same cached
/// object carries the new config's header, without a new origin fetch.
#[test]
fn a_cached_objects_headers_follow_a_reload() {
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::start(dir.join("origin"));
    std::fs::create_dir_all(dir.join("origin/s")).unwrap();
    std::fs::write(dir.join("origin/s/index.m3u8"), "#EXTM3U\n").unwrap();
    std::fs::write(dir.join("origin/s/kept.ts"), vec![0x47u8; 188 * 10]).unwrap();
    let o = origin.port;
    let (config, ports) = write_config(
        &dir,
        "5s",
        &format!("streams:\n  s: {{ url: \"http://127.0.0.1:{o}/s/index.m3u8\" }}\n"),
    );
    let mut h = Hlsgate::start("edge", &config, ports.edge);
    let url = h.token_url(&["--stream", "s", "--ttl", "600"]);
    let seg = path(&url).replace("index.m3u8", "kept.ts");
    let fetch = || {
        let r = get(ports.edge, &seg, &[]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        (
            r.header("X-Cache").unwrap_or("").to_owned(),
            r.header("Content-Type").unwrap_or("").to_owned(),
        )
    };
    assert_eq!(fetch().1, "application/octet-stream");
    assert_eq!(fetch(), ("HIT".into(), "application/octet-stream".into()));
    let next = std::fs::read_to_string(&config).unwrap().replacen(
        "origins:\n",
        "origins:\n  media_types: [\"video/*\"]\n",
        1,
    );
    std::fs::write(&config, next).unwrap();
    h.signal("HUP");
    wait_for(|| h.log_text().contains("config reloaded"), "reload");
    assert_eq!(fetch(), ("HIT".into(), "video/mp2t".into()));
    assert_eq!(origin.hits("/s/kept.ts"), 1, "{:?}", origin.requests());
}
