//! The edge, run for real: a loopback origin serving ffmpeg-made HLS, the `hlsgate edge`
//! binary, ffmpeg as the player. One harness for the whole test binary.

mod common;

use common::*;
use hlsgate::token::{self, Binding, Grant, Keyring};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

const UA: &str = "hlsgate-test-player/1.0";

struct Harness {
    origin: Origin,
    edge: Hlsgate,
    root: PathBuf,
    dir: PathBuf,
    metrics_port: u16,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let root = dir.join("origin");
        let origin = Origin::with_streams(root.clone());
        let o = origin.port;
        let closed = free_port();
        let (config, ports) = write_config(
            &dir,
            "2s",
            &format!(
                r#"streams:
{streams}  file_ts: {{ url: "file://{root}/ts/index.m3u8" }}
  file_single: {{ url: "file://{root}/single/index.m3u8" }}
  file_ladder: {{ url: "file://{root}/ladder/master.m3u8" }}
  dead: {{ url: "http://127.0.0.1:{closed}/x/index.m3u8" }}
  die: {{ url: "http://127.0.0.1:{o}/die/index.m3u8" }}
  slow: {{ url: "http://127.0.0.1:{o}/slow/index.m3u8" }}
"#,
                root = root.display(),
                streams = origin.streams_yaml(),
            ),
        );
        let port = ports.edge;
        let edge = Hlsgate::start("edge", &config, port);
        Harness {
            origin,
            edge,
            root,
            dir,
            metrics_port: ports.metrics,
        }
    })
}

fn bound_url(h: &Harness, stream: &str) -> String {
    h.edge
        .token_url(&["--stream", stream, "--ua", UA, "--ip", "127.0.0.1"])
}

fn assert_json_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.text().starts_with("{\"error\":\""), "{}", r.text());
}

#[test]
fn every_ffmpeg_variant_plays_through_the_edge() {
    let h = harness();
    for stream in [
        "ts",
        "fmp4",
        "aes",
        "single",
        "ladder",
        "file_ts",
        "file_single",
        "file_ladder",
    ] {
        let url = bound_url(h, stream);
        let (ok, stderr) = ffmpeg_play(&url, UA);
        assert!(ok && stderr.is_empty(), "{stream}: {stderr}");
    }
    // What ffmpeg fetched went through the edge to the origin, key and init segment included.
    for path in [
        "/ts/index2.ts",
        "/fmp4/init.mp4",
        "/fmp4/index2.m4s",
        "/keys/enc.key",
        "/aes/index2.ts",
        "/single/index.ts",
        "/ladder/v0/index2.ts",
        "/ladder/v1/index2.ts",
    ] {
        assert!(h.origin.hits(path) >= 1, "origin never saw {path}");
    }
}

#[test]
fn no_token_forged_token_other_client_are_refused() {
    let h = harness();
    let url = bound_url(h, "ts");
    let path = path_of(&url);
    let tok = path.split('/').nth(3).unwrap().to_owned();

    // without a token
    let no_tok = path.replace(&format!("/{tok}/"), "//");
    assert_json_error(
        &get(h.edge.port, &no_tok, &[("User-Agent", UA)]).unwrap(),
        401,
    );
    let (ok, _) = ffmpeg_play(&url.replace(&format!("/{tok}/"), "//"), UA);
    assert!(!ok, "played without a token");

    // forged: each of a few characters changed
    for i in [0, 10, tok.len() / 2, tok.len() - 1] {
        let mut b = tok.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(b).unwrap();
        let p = path.replace(&tok, &forged);
        assert_json_error(&get(h.edge.port, &p, &[("User-Agent", UA)]).unwrap(), 401);
        if i == 10 {
            let (ok, _) = ffmpeg_play(&url.replace(&tok, &forged), UA);
            assert!(!ok, "played with a forged token");
        }
    }

    // valid token, other User-Agent
    assert_json_error(
        &get(h.edge.port, &path, &[("User-Agent", "curl/8")]).unwrap(),
        403,
    );
    let (ok, _) = ffmpeg_play(&url, "SomeOtherPlayer/2.0");
    assert!(!ok, "played from another User-Agent");

    // valid token bound to another IP
    let other_ip = h
        .edge
        .token_url(&["--stream", "ts", "--ua", UA, "--ip", "10.9.8.7"]);
    assert_json_error(
        &get(h.edge.port, &path_of(&other_ip), &[("User-Agent", UA)]).unwrap(),
        403,
    );

    // valid token, another stream
    let other_stream = path.replace("/ts/", "/fmp4/");
    assert_json_error(
        &get(h.edge.port, &other_stream, &[("User-Agent", UA)]).unwrap(),
        403,
    );

    // the right client still plays
    let r = get(h.edge.port, &path, &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn playlists_route_every_uri_back_through_the_edge() {
    let h = harness();
    let url = bound_url(h, "aes");
    let r = get(
        h.edge.port,
        &path_of(&url),
        &[
            ("User-Agent", UA),
            ("Accept-Encoding", "gzip"),
            ("Cookie", "sid=viewer-secret"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    // Rewritten: chunked, or (a cache hit rewritten whole) the rewritten length, never the
    // origin's.
    if let Some(len) = r.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), r.body.len());
    }
    let new_token = r.header("x-new-token").expect("X-New-Token").to_owned();
    let body = r.text();
    let original = std::fs::read_to_string(h.root.join("aes/index.m3u8")).unwrap();
    // The token was not renewed, so relative URI lines stay as they are: the player
    // resolves them against this playlist's URL, which carries the token. Tag URIs that
    // leave the folder are routed through the edge with a signature.
    assert_eq!(new_token, path_of(&url).split('/').nth(3).unwrap());
    let (out_lines, in_lines): (Vec<&str>, Vec<&str>) =
        (body.lines().collect(), original.lines().collect());
    assert_eq!(out_lines.len(), in_lines.len());
    let prefix = format!("/api/hls/{new_token}/aes/");
    for (o, i) in out_lines.iter().zip(&in_lines) {
        if i.starts_with("#EXT-X-KEY") {
            assert!(o.contains(&format!("URI=\"{prefix}~o/")), "{o}");
            assert!(o.contains("/keys/enc.key\""), "{o}");
            assert!(o.ends_with(",IV=0x00000000000000000000000000000000"), "{o}");
        } else if i.starts_with('#') {
            assert_eq!(o, i);
        } else {
            assert_eq!(o, i);
            let resolved = format!("{}/{o}", path_of(&url).rsplit_once('/').unwrap().0);
            assert_eq!(resolved, format!("{prefix}{i}"));
        }
    }
    // the origin was asked for an uncompressed body, without the viewer's cookie
    let seen = h.origin.requests();
    let req = seen
        .iter()
        .rev()
        .find(|l| l.contains("/aes/index.m3u8"))
        .unwrap();
    assert!(req.contains("ae=- cookie=-"), "{req}");

    // the signed key path opens exactly that object
    let key_uri = out_lines
        .iter()
        .find(|l| l.starts_with("#EXT-X-KEY"))
        .unwrap()
        .split("URI=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let r = get(h.edge.port, &key_uri, &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"0123456789abcdef");
    assert!(r.header("x-new-token").is_some());
    // ... and nothing else on the host: another file with the same signature, or a
    // tampered signature
    let other = key_uri.replace("/keys/enc.key", "/ts/index0.ts");
    assert_json_error(
        &get(h.edge.port, &other, &[("User-Agent", UA)]).unwrap(),
        403,
    );
    let sig = key_uri
        .split("/~o/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let tampered = key_uri.replace(sig, &sig.replace(&sig[..2], "AA"));
    assert_json_error(
        &get(h.edge.port, &tampered, &[("User-Agent", UA)]).unwrap(),
        403,
    );
}

#[test]
fn master_playlists_and_segments_carry_tokens() {
    let h = harness();
    let url = bound_url(h, "ladder");
    let r = get(h.edge.port, &path_of(&url), &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200);
    let tok = r.header("x-new-token").unwrap();
    let variants: Vec<&str> = r
        .text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|_| "")
        .collect();
    assert_eq!(variants.len(), 2);
    // Relative variant URIs, resolved against the master's URL (which holds `tok`).
    assert!(path_of(&url).starts_with(&format!("/api/hls/{tok}/ladder/")));
    assert!(r.text().contains("\nv0/index.m3u8"), "{}", r.text());
    assert!(r.text().contains("\nv1/index.m3u8"), "{}", r.text());
    let v1 = get(
        h.edge.port,
        &format!("/api/hls/{tok}/ladder/v1/index.m3u8"),
        &[("User-Agent", UA)],
    )
    .unwrap();
    assert!(v1.text().contains("\nindex0.ts\n"), "{}", v1.text());
    let seg = get(
        h.edge.port,
        &format!("/api/hls/{tok}/ladder/v1/index0.ts"),
        &[("User-Agent", UA)],
    )
    .unwrap();
    assert_eq!(seg.status, 200);
    assert_eq!(
        seg.body,
        std::fs::read(h.root.join("ladder/v1/index0.ts")).unwrap()
    );
    assert_eq!(seg.header("x-new-token"), Some(tok));
}

#[test]
fn paths_never_leave_the_stream_folder() {
    let h = harness();
    let url = bound_url(h, "ts");
    let path = path_of(&url);
    let base = path.trim_end_matches("index.m3u8");
    for bad in [
        "../keys/enc.key",
        "..%2fkeys%2fenc.key",
        "%2e%2e/keys/enc.key",
        "%2E%2E/%2E%2E/etc/passwd",
        "sub/../../keys/enc.key",
        "..\\keys\\enc.key",
        "%5c..%5cenc.key",
        "http://127.0.0.1/keys/enc.key",
        ".//index0.ts",
    ] {
        let r = get(h.edge.port, &format!("{base}{bad}"), &[("User-Agent", UA)]).unwrap();
        assert_json_error(&r, 400);
    }
    // the same through a file origin
    let url = bound_url(h, "file_ts");
    let base = path_of(&url).trim_end_matches("index.m3u8").to_owned();
    for bad in ["../keys/enc.key", "%2e%2e/aes.keyinfo"] {
        let r = get(h.edge.port, &format!("{base}{bad}"), &[("User-Agent", UA)]).unwrap();
        assert_json_error(&r, 400);
    }
    // a symlink inside the folder that points outside is not followed out
    std::os::unix::fs::symlink(h.root.join("keys/enc.key"), h.root.join("ts/link.key")).ok();
    let r = get(
        h.edge.port,
        &format!("{base}link.key"),
        &[("User-Agent", UA)],
    )
    .unwrap();
    assert_json_error(&r, 404);
    assert!(!h
        .origin
        .requests()
        .iter()
        .any(|l| l.contains("..") || l.contains("passwd")));
}

#[test]
fn expired_tokens_are_renewed_only_for_their_bound_client() {
    let h = harness();
    let bound = h.edge.token_url(&[
        "--stream",
        "ts",
        "--ua",
        UA,
        "--ip",
        "127.0.0.1",
        "--ttl",
        "1",
    ]);
    let unbound = h.edge.token_url(&["--stream", "ts", "--ttl", "1"]);
    std::thread::sleep(Duration::from_millis(2100));
    let old = path_of(&bound).split('/').nth(3).unwrap().to_owned();
    let r = get(h.edge.port, &path_of(&bound), &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.header("x-new-token").unwrap().to_owned();
    assert_ne!(fresh, old);
    assert!(r.text().contains(&format!("/api/hls/{fresh}/ts/index0.ts")));
    let r = get(
        h.edge.port,
        &format!("/api/hls/{fresh}/ts/index0.ts"),
        &[("User-Agent", UA)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-new-token"),
        Some(fresh.as_str()),
        "a fresh token is kept"
    );
    // the expired token from another User-Agent: refused, not renewed
    assert_json_error(
        &get(h.edge.port, &path_of(&bound), &[("User-Agent", "curl/8")]).unwrap(),
        403,
    );
    // an expired token bound to nobody cannot be renewed
    assert_json_error(
        &get(h.edge.port, &path_of(&unbound), &[("User-Agent", UA)]).unwrap(),
        401,
    );
}

#[test]
fn unknown_streams_and_origin_failures_answer_json() {
    let h = harness();
    let keyring = Keyring::load_or_create(&h.dir.join("secret.key")).unwrap();
    let now = token::unix_now();
    let t = keyring.issue(&Grant {
        stream: "nope".into(),
        session: token::new_session_id(),
        exp: now + 60,
        session_exp: now + 600,
        binding: Binding::default(),
        stored_session: false,
        scope: hlsgate::token::Scope::path(),
    });
    assert_json_error(
        &get(h.edge.port, &format!("/api/hls/{t}/nope/index.m3u8"), &[]).unwrap(),
        404,
    );

    let dead = bound_url(h, "dead");
    assert_json_error(
        &get(h.edge.port, &path_of(&dead), &[("User-Agent", UA)]).unwrap(),
        502,
    );

    let slow = bound_url(h, "slow");
    assert_json_error(
        &get(h.edge.port, &path_of(&slow), &[("User-Agent", UA)]).unwrap(),
        504,
    );

    // an origin that dies mid-body: the viewer sees a short body, never a full one
    let die = path_of(&bound_url(h, "die")).replace("index.m3u8", "seg.ts");
    // (a connection reset is also a failure the player notices, so Err passes too)
    if let Ok(r) = get(h.edge.port, &die, &[("User-Agent", UA)]) {
        assert!(
            r.body.len() < 100_000,
            "status {} len {}",
            r.status,
            r.body.len()
        );
    }
    // and the edge is still up
    assert_eq!(get(h.edge.port, "/healthz", &[]).unwrap().status, 200);
    // only GET and HEAD
    let url = bound_url(h, "ts");
    let r = request(
        "POST",
        h.edge.port,
        &path_of(&url),
        &[("User-Agent", UA), ("Content-Length", "0")],
    )
    .unwrap();
    assert_json_error(&r, 405);
}

#[test]
fn file_origins_serve_ranges_and_head() {
    let h = harness();
    let url = bound_url(h, "file_single");
    let seg = path_of(&url).replace("index.m3u8", "index.ts");
    let whole = std::fs::read(h.root.join("single/index.ts")).unwrap();
    let r = get(
        h.edge.port,
        &seg,
        &[("User-Agent", UA), ("Range", "bytes=10-19")],
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &whole[10..20]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{}", whole.len()).as_str())
    );
    let r = get(
        h.edge.port,
        &seg,
        &[("User-Agent", UA), ("Range", "bytes=999999999-")],
    )
    .unwrap();
    assert_eq!(r.status, 416);
    let r = request("HEAD", h.edge.port, &seg, &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert!(r.body.is_empty());
    let missing = seg.replace("index.ts", "nothing.ts");
    assert_json_error(
        &get(h.edge.port, &missing, &[("User-Agent", UA)]).unwrap(),
        404,
    );
}

/// Playlists rewritten from a file origin count in the metrics like those from HTTP ones.
#[test]
fn file_origin_rewrites_are_counted() {
    let h = harness();
    let scrape = || get(h.metrics_port, "/metrics", &[]).unwrap().text();
    let count = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
    };
    let before = scrape();
    let url = bound_url(h, "file_ts");
    let r = get(h.edge.port, &path_of(&url), &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200);
    let after = scrape();
    for name in [
        "hlsgate_playlist_rewrites_total ",
        "hlsgate_playlist_rewrite_seconds_count ",
        "hlsgate_requests_total{kind=\"playlist\",status=\"200\"} ",
    ] {
        assert!(
            count(&after, name) > count(&before, name),
            "{name} did not move"
        );
    }
}

/// An idle keep-alive connection is closed after `edge.idle_timeout` (2 s here); one in
/// use keeps working.
#[test]
fn idle_keepalive_connections_are_closed() {
    use std::io::{Read, Write};
    let h = harness();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", h.edge.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 1024];
    for _ in 0..2 {
        s.write_all(req).unwrap();
        // the header leaves at once, the body after it (two writes)
        let mut got = Vec::new();
        while !got.ends_with(b"ok\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let idle = std::time::Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the edge sent more bytes on an idle connection");
    let waited = idle.elapsed();
    assert!(
        // The edge's wait began 0.5 s before this clock (the sleep above): about 1.5 s
        // here. Not 1 s: the connection's timer, set in the wait before, goes off then
        // and must be moved on, not taken for this wait's end.
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(6),
        "closed after {waited:?}, want about 1.5 s"
    );
}
