//! The segment cache, run for real: a loopback origin that keeps an access log, the
//! `hlsgate edge` binary, and many concurrent viewers. Counts come from the origin's own
//! log, so a test fails if the edge fetches more than it should.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Harness {
    origin: Origin,
    edge: Hlsgate,
    root: PathBuf,
    metrics_port: u16,
}

/// 1 MiB that is not all one byte, so a slice from the wrong offset is noticed.
fn segment_bytes(seed: u8) -> Vec<u8> {
    (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let root = dir.join("origin");
        for d in ["c/delay", "die"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(
            root.join("c/index.m3u8"),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXTINF:4.0,\nseg7.ts\n#EXTINF:4.0,\n/c/seg8.ts\n",
        )
        .unwrap();
        std::fs::write(
            root.join("c/rel.m3u8"),
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4.0,\nseg1.ts\n#EXTINF:4.0,\nseg2.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        // For fresh_hits_answered_early_are_the_cache_paths_answers: its own objects.
        std::fs::write(
            root.join("c/early.m3u8"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg7.ts\n#EXTINF:4.0,\n/c/seg8.ts\n",
        )
        .unwrap();
        std::fs::write(
            root.join("c/early-rel.m3u8"),
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4.0,\nseg1.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        // A live playlist (fresh for 1 s) whose origin revalidates it (ETag, 304).
        std::fs::write(
            root.join("c/tagged.m3u8"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\nseg7.ts\n",
        )
        .unwrap();
        std::fs::write(root.join("c/tagged.headers"), "ETag: \"v1\"\r\n").unwrap();
        // No newline after the last URI: its rewriting must not wait for one.
        std::fs::write(
            root.join("c/m.m3u8"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n/c/seg9.ts",
        )
        .unwrap();
        for (name, seed) in [
            ("c/big.ts", 1),
            ("c/range.ts", 2),
            ("c/delay/many.ts", 3),
            ("c/delay/stream.ts", 4),
            ("c/short.ts", 5),
            ("c/metered.ts", 6),
            ("c/early.ts", 7),
        ] {
            std::fs::write(root.join(name), segment_bytes(seed)).unwrap();
        }
        let origin = Origin::start(root.clone());
        let o = origin.port;
        let (config, ports) = write_config(
            &dir,
            "3s",
            &format!(
                r#"cache:
  max_bytes: "64MiB"
  stale_if_error: "60s"
streams:
  c: {{ url: "http://127.0.0.1:{o}/c/index.m3u8" }}
  die: {{ url: "http://127.0.0.1:{o}/die/index.m3u8" }}
"#
            ),
        );
        let (port, metrics_port) = (ports.edge, ports.metrics);
        let edge = Hlsgate::start("edge", &config, port);
        Harness {
            origin,
            edge,
            root,
            metrics_port,
        }
    })
}

/// Edge path of `object` in stream `stream` for a token bound to `ua` on 127.0.0.1.
fn path_for(h: &Harness, stream: &str, ua: &str, object: &str) -> String {
    let url = h
        .edge
        .token_url(&["--stream", stream, "--ua", ua, "--ip", "127.0.0.1"]);
    let p = path_of(&url);
    format!("{}/{object}", p.rsplit_once('/').unwrap().0)
}

fn fetch(h: &Harness, path: &str, ua: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![("User-Agent", ua)];
    headers.extend_from_slice(extra);
    get(h.edge.port, path, &headers).unwrap()
}

#[test]
fn concurrent_first_requests_reach_the_origin_once() {
    let h = harness();
    let path = path_for(h, "c", "v", "delay/many.ts");
    let want = std::fs::read(h.root.join("c/delay/many.ts")).unwrap();
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let path = path.clone();
            let port = h.edge.port;
            std::thread::spawn(move || get(port, &path, &[("User-Agent", "v")]).unwrap())
        })
        .collect();
    let mut states = std::collections::BTreeMap::new();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == want, "a viewer got different bytes");
        *states
            .entry(r.header("X-Cache").unwrap_or("-").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        h.origin.hits("GET /c/delay/many.ts "),
        1,
        "200 concurrent first requests must cost the origin one fetch; X-Cache: {states:?}"
    );
}

/// Viewers who wait for another viewer's fetch get the bytes as they arrive, not when
/// the whole object is in.
#[test]
fn waiting_viewers_stream_an_object_still_arriving() {
    let h = harness();
    let path = path_for(h, "c", "v", "delay/stream.ts");
    let port = h.edge.port;
    let p2 = path.clone();
    let first = std::thread::spawn(move || get(port, &p2, &[("User-Agent", "v")]).unwrap());
    // The origin answers after 300 ms, sends half, and the rest 1.5 s later.
    std::thread::sleep(Duration::from_millis(450));
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: v\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0; 1 << 16];
    let mut first_body_at = None;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if first_body_at.is_none() {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() > end + 4 + 100_000 {
                    first_body_at = Some(start.elapsed());
                }
            }
        }
    }
    let first = first.join().unwrap();
    assert_eq!(first.status, 200);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let at = first_body_at.expect("no body");
    assert!(
        at < Duration::from_millis(1000),
        "the waiting viewer got its first 100 KB after {at:?}: it waited for the whole object"
    );
    assert_eq!(h.origin.hits("GET /c/delay/stream.ts "), 1);
}

#[test]
fn ranges_are_cut_from_the_cached_object() {
    let h = harness();
    let want = std::fs::read(h.root.join("c/range.ts")).unwrap();
    let path = path_for(h, "c", "v", "range.ts");
    // A range on the very first request: the edge fetches the whole object once.
    let r = fetch(h, &path, "v", &[("Range", "bytes=100-199")]);
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.header("Content-Range"), Some("bytes 100-199/1048576"));
    assert!(r.body == want[100..200]);
    let r = fetch(h, &path, "v", &[("Range", "bytes=0-99")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("X-Cache"), Some("HIT"));
    assert_eq!(r.header("Content-Range"), Some("bytes 0-99/1048576"));
    assert!(r.body == want[..100]);
    let r = fetch(h, &path, "v", &[("Range", "bytes=1048500-")]);
    assert_eq!(r.status, 206);
    assert!(r.body == want[1_048_500..]);
    let r = fetch(h, &path, "v", &[("Range", "bytes=-10")]);
    assert_eq!(r.status, 206);
    assert!(r.body == want[want.len() - 10..]);
    let r = fetch(h, &path, "v", &[("Range", "bytes=2000000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */1048576"));
    let r = fetch(h, &path, "v", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == want);
    assert_eq!(h.origin.hits("GET /c/range.ts "), 1);
    let ranged = h
        .origin
        .requests()
        .into_iter()
        .filter(|l| l.contains("/c/range.ts"))
        .count();
    assert_eq!(ranged, 1);
}

#[test]
fn playlists_are_cached_once_and_rewritten_per_viewer() {
    let h = harness();
    let a = path_for(h, "c", "viewer-a", "index.m3u8");
    let b = path_for(h, "c", "viewer-b", "index.m3u8");
    let token = |p: &str| p.split('/').nth(3).unwrap().to_owned();
    let before = h.origin.hits("GET /c/index.m3u8 ");
    let ra = fetch(h, &a, "viewer-a", &[]);
    let rb = fetch(h, &b, "viewer-b", &[]);
    assert_eq!((ra.status, rb.status), (200, 200));
    assert_eq!(rb.header("X-Cache"), Some("HIT"));
    let (ta, tb) = (ra.text(), rb.text());
    // Relative URIs resolve against each viewer's own URL; others carry their token.
    assert!(
        ta.contains("\nseg7.ts\n") && tb.contains("\nseg7.ts\n"),
        "{ta}"
    );
    assert!(
        ta.contains(&format!("\n/api/hls/{}/c/seg8.ts\n", token(&a))),
        "{ta}"
    );
    assert!(
        tb.contains(&format!("\n/api/hls/{}/c/seg8.ts\n", token(&b))),
        "{tb}"
    );
    assert!(!ta.contains(&token(&b)) && !tb.contains(&token(&a)));
    assert_eq!(ra.header("Content-Length"), None);
    assert_eq!(h.origin.hits("GET /c/index.m3u8 ") - before, 1);
    // A live playlist (no ENDLIST) with a 4 s target duration is fresh for 2 s; then it
    // is answered stale at once while one background request refreshes it (as nginx's
    // `proxy_cache_use_stale updating` + `proxy_cache_background_update`).
    std::thread::sleep(Duration::from_millis(2300));
    let rc = fetch(h, &a, "viewer-a", &[]);
    assert_eq!((rc.status, rc.header("X-Cache")), (200, Some("STALE")));
    assert_eq!(rc.text(), ta);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.origin.hits("GET /c/index.m3u8 ") - before < 2 {
        assert!(Instant::now() < deadline, "no background refresh");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let rd = fetch(h, &b, "viewer-b", &[]);
    assert_eq!((rd.status, rd.header("X-Cache")), (200, Some("HIT")));
    assert_eq!(h.origin.hits("GET /c/index.m3u8 ") - before, 2);
    // The viewer's token never reaches the origin.
    assert!(h.origin.requests().iter().all(|l| !l.contains(&token(&a))));
}

/// A live playlist its origin revalidates (304 Not Modified) is fresh again after each
/// background refresh, and goes on being refreshed: it is never served stale for longer
/// than one refresh takes. (It was: after the first 304 the object stayed stale, and each
/// background refresh that followed asked the origin nothing, so viewers got the stale
/// copy, "updating", until the refresh's one-minute bound ran out.)
#[test]
fn a_revalidated_live_playlist_is_fresh_again_and_refreshed_again() {
    let h = harness();
    let p = path_for(h, "c", "tagged", "tagged.m3u8");
    let asked = || h.origin.hits("GET /c/tagged.m3u8 ");
    let first = fetch(h, &p, "tagged", &[]);
    assert_eq!((first.status, first.header("X-Cache")), (200, Some("MISS")));
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(1300));
        let r = fetch(h, &p, "tagged", &[]);
        assert_eq!(
            (r.status, r.header("X-Cache")),
            (200, Some("STALE")),
            "round {round}: stale, answered at once"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while asked() < 1 + round {
            assert!(
                Instant::now() < deadline,
                "round {round}: no background revalidation"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let r = fetch(h, &p, "tagged", &[]);
        assert_eq!(
            (r.status, r.header("X-Cache")),
            (200, Some("HIT")),
            "round {round}: fresh again after the 304"
        );
        assert_eq!(r.text(), first.text());
        assert!(
            r.header("Age")
                .is_some_and(|a| a.parse::<u64>().unwrap() <= 1),
            "round {round}: the age counts from the revalidation: {:?}",
            r.header("Age")
        );
    }
    assert_eq!(asked(), 4, "one fetch and three revalidations");
}

/// A cached playlist whose URIs are all relative comes out byte for byte for viewers
/// whose token was not renewed: after the first, they get the cached bytes untouched.
#[test]
fn playlists_that_need_no_rewrite_are_sent_as_cached() {
    let h = harness();
    let origin = std::fs::read(h.root.join("c/rel.m3u8")).unwrap();
    let first = fetch(h, &path_for(h, "c", "r1", "rel.m3u8"), "r1", &[]);
    assert_eq!((first.status, first.header("X-Cache")), (200, Some("MISS")));
    assert!(first.body == origin);
    assert_eq!(first.header("Content-Length"), None); // went through the rewriter
    for ua in ["r2", "r3"] {
        let r = fetch(h, &path_for(h, "c", ua, "rel.m3u8"), ua, &[]);
        assert_eq!((r.status, r.header("X-Cache")), (200, Some("HIT")));
        assert!(r.body == origin);
        let len = origin.len().to_string();
        assert_eq!(r.header("Content-Length"), Some(len.as_str()));
        assert!(r.header("X-New-Token").is_some());
    }
    assert_eq!(h.origin.hits("GET /c/rel.m3u8 "), 1);
}

/// A fresh hit is answered before Pingora's cache phases (`serve_fresh_hit`); a request
/// those phases must see (here a conditional one, which they evaluate) takes the cache
/// path. Both answers must be the same response: status, headers and bytes, for a segment,
/// a playlist rewritten whole and one sent verbatim.
#[test]
fn fresh_hits_answered_early_are_the_cache_paths_answers() {
    let h = harness();
    let comparable = |r: &Response| {
        let mut hs: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("age"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        hs.sort();
        (r.status, hs, r.body.clone())
    };
    for object in ["early.ts", "early.m3u8", "early-rel.m3u8"] {
        let ua = format!("early-{object}");
        let path = path_for(h, "c", &ua, object);
        let first = fetch(h, &path, &ua, &[]);
        assert_eq!(first.status, 200, "{object}");
        let early = fetch(h, &path, &ua, &[]);
        let cache_path = fetch(h, &path, &ua, &[("If-Match", "*")]);
        assert_eq!(early.header("X-Cache"), Some("HIT"), "{object}");
        assert!(
            early.header("Age").is_some(),
            "{object}: a cached answer has an Age"
        );
        assert!(
            comparable(&early) == comparable(&cache_path),
            "{object}: early {:?} vs cache path {:?}",
            early.headers,
            cache_path.headers
        );
    }
}

#[test]
fn failed_fetches_are_not_cached_and_stale_is_served_on_origin_error() {
    let h = harness();
    // The origin dies mid-body: the viewer does not get a complete 200, nothing is stored.
    let path = path_for(h, "die", "v", "x.ts");
    for _ in 0..2 {
        if let Ok(r) = get(h.edge.port, &path, &[("User-Agent", "v")]) {
            assert!(
                r.status != 200 || r.body.len() < 100_000,
                "a broken origin body was served whole"
            );
        }
    }
    assert_eq!(
        h.origin.hits("GET /die/x.ts "),
        2,
        "a failed fetch was cached"
    );

    // `short.ts` is fresh for 1 s (origin max-age=1); then the origin fails.
    let want = std::fs::read(h.root.join("c/short.ts")).unwrap();
    let path = path_for(h, "c", "v", "short.ts");
    let r = fetch(h, &path, "v", &[]);
    assert_eq!((r.status, r.header("X-Cache")), (200, Some("MISS")));
    let fail = h.root.join("c/short.fail");
    std::fs::write(&fail, "").unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    let r = fetch(h, &path, "v", &[]);
    std::fs::remove_file(&fail).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Cache"), Some("STALE"));
    assert!(r.header("Warning").is_some_and(|w| w.starts_with("110")));
    assert!(r.body == want);
    assert_eq!(h.origin.hits("GET /c/short.ts "), 2);
    // Origin back: fresh again once its failure is no longer remembered (error_ttl 1 s).
    std::thread::sleep(Duration::from_millis(1100));
    let r = fetch(h, &path, "v", &[]);
    assert_eq!((r.status, r.header("X-Cache")), (200, Some("MISS")));
}

fn scrape(h: &Harness) -> String {
    let r = get(h.metrics_port, "/metrics", &[]).unwrap();
    assert_eq!(r.status, 200);
    r.text()
}

#[test]
fn metrics_move_with_traffic_and_pass_promtool() {
    let h = harness();
    let before = scrape(h);
    let path = path_for(h, "c", "m", "metered.ts");
    assert_eq!(fetch(h, &path, "m", &[]).status, 200);
    assert_eq!(fetch(h, &path, "m", &[]).status, 200);
    let pl = path_for(h, "c", "m", "m.m3u8");
    let tok = pl.split('/').nth(3).unwrap().to_owned();
    for state in ["MISS", "HIT"] {
        let r = fetch(h, &pl, "m", &[]);
        assert_eq!((r.status, r.header("X-Cache")), (200, Some(state)));
        assert!(
            r.text().ends_with(&format!("/api/hls/{tok}/c/seg9.ts")),
            "{state}: {}",
            r.text()
        );
    }
    assert_eq!(fetch(h, "/api/hls/AAAA/c/x.ts", "m", &[]).status, 401);
    assert_eq!(fetch(h, &path, "someone-else", &[]).status, 403);
    let after = scrape(h);
    let moved = |p: &str| sample(&after, p) - sample(&before, p);
    assert!(moved("hlsgate_requests_total{kind=\"segment\",status=\"200\"}") >= 2.0);
    assert!(moved("hlsgate_requests_total{kind=\"segment\",status=\"401\"}") >= 1.0);
    assert!(moved("hlsgate_cache_requests_total{result=\"hit\"}") >= 1.0);
    assert!(moved("hlsgate_cache_requests_total{result=\"miss\"}") >= 1.0);
    assert!(moved("hlsgate_cache_served_bytes_total") >= (1 << 20) as f64);
    assert!(moved("hlsgate_origin_fetches_total{kind=\"segment\"}") >= 1.0);
    assert!(moved("hlsgate_origin_response_seconds_count") >= 1.0);
    assert!(moved("hlsgate_auth_denials_total") >= 2.0);
    assert!(moved("hlsgate_playlist_rewrites_total") >= 2.0);
    assert!(moved("hlsgate_playlist_rewrite_seconds_count") >= 1.0);
    assert!(sample(&after, "hlsgate_cache_held_bytes") >= (1 << 20) as f64);
    assert!(sample(&after, "hlsgate_cache_objects") >= 1.0);
    assert!(sample(&after, "hlsgate_active_sessions") >= 1.0);
    // No token ever appears in the metrics.
    assert!(!after.contains(path.split('/').nth(3).unwrap()));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: scripts/test.sh does");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
