//! External playback authorisation (Nimble Streamer's protocol): `hlsgate edge` asks a
//! handler process the test starts (`tests/helpers/auth_handler.py`, which counts the calls
//! in flight at once and answers by URL) for viewers who bring no token; ffmpeg plays.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Handler {
    port: u16,
    child: Child,
}

impl Handler {
    fn start(redirect: &str) -> Handler {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/auth_handler.py");
        let child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(redirect)
            .stdout(Stdio::null())
            // The handler's tracebacks for the clients the tests cut off on purpose (the
            // edge's timeout) are not news.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(port, "/stats", &[]).is_err() {
            assert!(Instant::now() < deadline, "the handler did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Handler { port, child }
    }

    fn stats(&self) -> Value {
        serde_json::from_slice(&get(self.port, "/stats", &[]).unwrap().body).unwrap()
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn edge(dir: &Path, origin: &Origin, handler: u16, allow_by_default: bool) -> Hlsgate {
    edge_with_ttl(dir, origin, handler, allow_by_default, "30s")
}

fn edge_with_ttl(
    dir: &Path,
    origin: &Origin,
    handler: u16,
    allow_by_default: bool,
    cache_ttl: &str,
) -> Hlsgate {
    let o = origin.port;
    let streams: String = ["open", "deny", "moved", "slow"]
        .iter()
        .map(|s| {
            format!("  {s}: {{ url: \"http://127.0.0.1:{o}/ts/index.m3u8\", auth: [external] }}\n")
        })
        .collect();
    let extra = format!(
        "streams:\n{streams}  tokenonly: {{ url: \"http://127.0.0.1:{o}/ts/index.m3u8\", auth: [path] }}\nauth:\n  external:\n    url: \"http://127.0.0.1:{handler}/auth\"\n    concurrency: 2\n    timeout: \"1s\"\n    allow_by_default: {allow_by_default}\n    cache_ttl: \"{cache_ttl}\"\n"
    );
    let (config, ports) = write_config(dir, "2s", &extra);
    Hlsgate::start("edge", &config, ports.edge)
}

fn status(e: &Hlsgate, path: &str, ua: &str) -> (u16, Response) {
    let r = get(
        e.port,
        path,
        &[("User-Agent", ua), ("Referer", "https://app.example/watch")],
    )
    .unwrap();
    (r.status, r)
}

#[test]
fn the_platforms_handler_decides_for_viewers_without_tokens() {
    let origin_dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(origin_dir.path().join("origin"));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let handler = Handler::start("http://{host}/hls/open/index.m3u8");
    let deny_edge = edge(d1.path(), &origin, handler.port, false);
    let allow_edge = edge(d2.path(), &origin, handler.port, true);
    let redirect = format!("http://127.0.0.1:{}/hls/open/index.m3u8", deny_edge.port);

    // 200: ffmpeg plays with no token at all; the handler was told who and what
    let url = format!("http://127.0.0.1:{}/hls/open/index.m3u8", deny_edge.port);
    let (ok, err) = ffmpeg_play(&url, "viewer-a");
    assert!(ok, "{err}");
    let s = handler.stats();
    let last = &s["last"];
    assert_eq!(last["url"], "/hls/open/index.m3u8");
    assert_eq!(last["ip"], "127.0.0.1");
    assert_eq!(last["user-agent"], "viewer-a");
    assert_eq!(last["host"], format!("127.0.0.1:{}", deny_edge.port));
    assert_eq!(last["session_type"], "HLS");
    assert_eq!(last["session_id"].as_str().unwrap().len(), 32);
    // the playlist's URIs carry a native token: segments asked nobody
    let calls_after_play = s["calls"].as_u64().unwrap();
    assert_eq!(calls_after_play, 1, "one call for a whole playback: {s}");

    // 403
    let (st, r) = status(&deny_edge, "/hls/deny/index.m3u8", "viewer-b");
    assert_eq!(
        (st, r.text()),
        (
            403,
            r#"{"error":"playback refused by the platform"}"#.into()
        )
    );
    assert_eq!(
        handler.stats()["last"]["referer"],
        "https://app.example/watch"
    );
    // 302: the viewer is sent on, and ffmpeg follows to the stub stream
    let (st, r) = status(&deny_edge, "/hls/moved/index.m3u8", "viewer-c");
    assert_eq!((st, r.header("Location")), (302, Some(redirect.as_str())));
    let (ok, err) = ffmpeg_play(
        &format!("http://127.0.0.1:{}/hls/moved/index.m3u8", deny_edge.port),
        "viewer-c",
    );
    assert!(ok, "{err}");
    // a stream that admits only path tokens never asks the handler
    let before = handler.stats()["calls"].as_u64().unwrap();
    assert_eq!(
        status(&deny_edge, "/hls/tokenonly/index.m3u8", "viewer-d").0,
        401
    );
    assert_eq!(handler.stats()["calls"].as_u64().unwrap(), before);

    // 100 viewers of one session at once: one call
    let before = handler.stats()["calls"].as_u64().unwrap();
    let port = deny_edge.port;
    let threads: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                get(
                    port,
                    "/hls/open/index.m3u8",
                    &[("User-Agent", "one-session")],
                )
                .unwrap()
                .status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(
        handler.stats()["calls"].as_u64().unwrap() - before,
        1,
        "100 viewers, one session"
    );

    // a slow handler: never more than `concurrency` (2) calls in flight; the rest, and
    // the calls past the 1 s timeout, get allow_by_default (deny here)
    let threads: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                get(
                    port,
                    "/hls/slow/index.m3u8",
                    &[("User-Agent", &format!("slow-{i}"))],
                )
                .unwrap()
                .status
            })
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(codes.iter().all(|&c| c == 403), "{codes:?}");
    std::thread::sleep(Duration::from_millis(1600));
    let s = handler.stats();
    assert!(s["max_in_flight"].as_u64().unwrap() <= 2, "{s}");
    assert!(s["max_in_flight"].as_u64().unwrap() >= 1, "{s}");

    // the handler dies: each edge answers new sessions per its allow_by_default
    drop(handler);
    assert_eq!(
        status(&deny_edge, "/hls/open/index.m3u8", "after-death").0,
        403
    );
    assert_eq!(
        status(&allow_edge, "/hls/open/index.m3u8", "after-death").0,
        200
    );
    // a session decided before (the same request: URL, User-Agent, no Referer) keeps its
    // decision for cache_ttl
    let again = get(
        deny_edge.port,
        "/hls/open/index.m3u8",
        &[("User-Agent", "one-session")],
    )
    .unwrap();
    assert_eq!(again.status, 200);
}

#[test]
fn a_decision_belongs_to_what_the_handler_judged_and_is_asked_again() {
    let origin_dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(origin_dir.path().join("origin"));
    let handler = Handler::start("http://elsewhere.example/x.m3u8");
    let dir = tempfile::tempdir().unwrap();
    let e = edge_with_ttl(dir.path(), &origin, handler.port, false, "2s");
    let ua = "nat-browser/1.0";
    let (s, r) = status(&e, "/hls/open/index.m3u8?auth=good", ua);
    assert_eq!(s, 200, "{}", r.text());
    let calls = handler.stats()["calls"].as_i64().unwrap();
    // the same address and User-Agent (one NAT, one browser) with another purchase, or
    // none: judged again, not handed the first viewer's decision
    let (s, _) = status(&e, "/hls/open/index.m3u8?auth=bad", ua);
    assert_eq!(s, 403);
    let after = handler.stats()["calls"].as_i64().unwrap();
    assert_eq!(after, calls + 1, "the handler was asked");
    let (s, _) = status(&e, "/hls/open/index.m3u8", ua);
    assert_eq!(s, 200);
    assert_eq!(handler.stats()["calls"].as_i64().unwrap(), after + 1);
    // the good viewer's session: its native token is judged again after cache_ttl
    let seg = first_edge_uri(&r.text());
    assert_eq!(status(&e, &seg, ua).0, 200);
    get(handler.port, "/deny_all", &[]).unwrap();
    assert_eq!(status(&e, &seg, ua).0, 200, "within cache_ttl");
    std::thread::sleep(Duration::from_millis(2_600));
    let (s, r) = status(&e, &seg, ua);
    assert_eq!(s, 403, "{}", r.text());
}

#[test]
fn a_fail_open_allow_is_short_and_not_renewed() {
    let origin_dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(origin_dir.path().join("origin"));
    // a handler that is not there: every call fails, allow_by_default lets viewers in
    let dir = tempfile::tempdir().unwrap();
    let e = edge_with_ttl(dir.path(), &origin, free_port(), true, "2s");
    let ua = "fail-open/1.0";
    let (s, r) = status(&e, "/hls/open/index.m3u8", ua);
    assert_eq!(s, 200, "{}", r.text());
    let seg = first_edge_uri(&r.text());
    assert_eq!(status(&e, &seg, ua).0, 200);
    // a whole second past cache_ttl (tokens count whole seconds) the fail-open grant is
    // over: a renewal would have kept it for the whole session
    std::thread::sleep(Duration::from_millis(3_300));
    let (s, r) = status(&e, &seg, ua);
    assert_eq!(s, 401, "{}", r.text());
}
