//! Failing like a CDN: a loopback origin that errs, hangs and drips, the real `hlsgate`
//! binary, and bursts of concurrent viewers. Counts come from the origin's own log.
//! (The store's outage, reload and hand-over faults are in `tests/store.rs` and
//! `tests/ops.rs`; `bench/faults.sh` runs these faults under wrk beside nginx.)

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A live playlist (fresh for 1 s: half its target duration) and two small segments.
fn origin_files(root: &Path) {
    std::fs::create_dir_all(root.join("f/drip")).unwrap();
    std::fs::write(
        root.join("f/index.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
         #EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n",
    )
    .unwrap();
    for name in ["a.ts", "b.ts", "c.ts"] {
        std::fs::write(root.join("f").join(name), vec![0x47u8; 188 * 10]).unwrap();
    }
}

struct Edge {
    origin: Origin,
    edge: Hlsgate,
    root: PathBuf,
    metrics: u16,
}

fn start(extra: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap().keep();
    let root = dir.join("origin");
    origin_files(&root);
    let origin = Origin::start(root.clone());
    let o = origin.port;
    let (config, ports) = write_config(
        &dir,
        "2s",
        &format!("{extra}streams:\n  f: {{ url: \"http://127.0.0.1:{o}/f/index.m3u8\" }}\n"),
    );
    let edge = Hlsgate::start("edge", &config, ports.edge);
    Edge {
        origin,
        edge,
        root,
        metrics: ports.metrics,
    }
}

impl Edge {
    /// The edge path of `object` in stream `f`, for a token bound to UA `v`.
    fn path(&self, object: &str) -> String {
        let url = self
            .edge
            .token_url(&["--stream", "f", "--ua", "v", "--ip", "127.0.0.1"]);
        let p = path_of(&url);
        format!("{}/{object}", p.rsplit_once('/').unwrap().0)
    }

    fn get(&self, path: &str) -> Response {
        get(self.edge.port, path, &[("User-Agent", "v")]).unwrap()
    }

    /// `n` concurrent GETs of `path`.
    fn burst(&self, path: &str, n: usize) -> Vec<Response> {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (port, path) = (self.edge.port, path.to_owned());
                std::thread::spawn(move || get(port, &path, &[("User-Agent", "v")]).unwrap())
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    fn fail(&self, object: &str, how: &str) -> PathBuf {
        let f = self.root.join("f").join(object).with_extension("fail");
        std::fs::write(&f, how).unwrap();
        f
    }

    fn metric(&self, prefix: &str) -> f64 {
        let m = get(self.metrics, "/metrics", &[]).unwrap().text();
        sample(&m, prefix)
    }
}

#[test]
fn a_failing_origin_is_asked_once_and_every_viewer_gets_the_stale_playlist() {
    let e = start("");
    let pl = e.path("index.m3u8");
    let warm = e.get(&pl);
    assert_eq!((warm.status, warm.header("X-Cache")), (200, Some("MISS")));
    let fail = e.fail("index.m3u8", "500");
    std::thread::sleep(Duration::from_millis(1200)); // past its 1 s freshness
    let before = e.origin.hits("GET /f/index.m3u8 ");
    // Three bursts of 40 viewers, as players polling: every one gets the stale copy.
    let mut stale = 0;
    for _ in 0..3 {
        for r in e.burst(&pl, 40) {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("X-Cache"), Some("STALE"));
            assert!(r.header("Warning").is_some_and(|w| w.starts_with("110")));
            assert_eq!(r.body, warm.body, "the stale playlist, rewritten as before");
            stale += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(stale, 120);
    // One failed refresh, remembered for cache.error_ttl (1 s): not one per viewer.
    let asked = e.origin.hits("GET /f/index.m3u8 ") - before;
    assert!((1..=2).contains(&asked), "origin asked {asked} times");
    // Counted as answered stale: because the origin failed, or while its refresh ran.
    let stale = e.metric("hlsgate_cache_requests_total{result=\"stale\"}");
    let updating = e.metric("hlsgate_cache_requests_total{result=\"updating\"}");
    assert!(
        stale >= 1.0 && stale + updating >= 120.0,
        "{stale} + {updating}"
    );

    // An uncached segment of a failing origin: one origin request for 50 viewers, each
    // answered 502 with the JSON error.
    let seg = e.path("b.ts");
    let _f = e.fail("b.ts", "500");
    for r in e.burst(&seg, 50) {
        assert_eq!(r.status, 502);
        assert_eq!(r.text(), r#"{"error":"origin error"}"#);
    }
    let asked = e.origin.hits("GET /f/b.ts ");
    assert_eq!(
        asked, 1,
        "origin asked {asked} times for one failing segment"
    );

    // The origin is back: after error_ttl the next viewer's request refreshes the copy.
    std::fs::remove_file(&fail).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = e.get(&pl);
        assert_eq!(r.status, 200);
        if matches!(r.header("X-Cache"), Some("MISS" | "HIT")) {
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(e.origin.hits("GET /f/index.m3u8 ") - before > asked);
}

#[test]
fn a_hanging_origin_does_not_hold_viewers_of_a_stale_playlist() {
    let e = start("");
    let pl = e.path("index.m3u8");
    let warm = e.get(&pl);
    assert_eq!(warm.status, 200);
    let hang = e.fail("index.m3u8", "hang");
    std::thread::sleep(Duration::from_millis(1200));
    // 4 s of a viewer polling every 200 ms while the origin hangs (its read timeout is
    // 2 s): each answer at once, from the stale copy, refreshed in the background.
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while Instant::now() < until {
        let t = Instant::now();
        let r = e.get(&pl);
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("X-Cache"), Some("STALE"));
        assert_eq!(r.body, warm.body);
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(n >= 15);
    assert!(
        slowest < Duration::from_millis(500),
        "a viewer waited {slowest:?} on the hanging origin"
    );
    // One background refresh at a time: at most one per (read timeout + error_ttl).
    let asked = e.origin.hits("GET /f/index.m3u8 ") - 1;
    assert!((1..=3).contains(&asked), "origin asked {asked} times");
    std::fs::remove_file(&hang).unwrap();
}

#[test]
fn the_cache_budget_never_cuts_a_response_it_started() {
    // The default 256 MiB of cache: 64 MiB for fills in flight. 100 viewers of 100
    // different 1 MiB segments that arrive slowly (in eighths, 250 ms apart): the first
    // pieces all fit, the whole bodies do not.
    let e = start("");
    let body = |i: usize| -> Vec<u8> { (0..1 << 20).map(|j: usize| (j * 7 + i) as u8).collect() };
    for i in 0..100 {
        std::fs::write(e.root.join(format!("f/drip/{i}.ts")), body(i)).unwrap();
    }
    let base = e.path("drip/");
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (port, path) = (e.edge.port, format!("{base}{i}.ts"));
            std::thread::spawn(move || (i, get(port, &path, &[("User-Agent", "v")])))
        })
        .collect();
    let mut complete = 0;
    for t in threads {
        let (i, r) = t.join().unwrap();
        let r = r.unwrap_or_else(|err| panic!("segment {i}: {err}"));
        assert_eq!(r.status, 200);
        assert!(r.body == body(i), "segment {i}: {} bytes", r.body.len());
        complete += 1;
    }
    assert_eq!(complete, 100);
    assert_eq!(e.metric("hlsgate_cache_inflight_bytes "), 0.0);
    // Still a cache: the fills that had room were stored.
    // (Asked at once: each miss takes the slow origin's 2 s again.)
    let again: Vec<_> = (0..100)
        .map(|i| {
            let (port, path) = (e.edge.port, format!("{base}{i}.ts"));
            std::thread::spawn(move || get(port, &path, &[("User-Agent", "v")]).unwrap())
        })
        .collect();
    let hits = again
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|r| r.header("X-Cache") == Some("HIT"))
        .count();
    assert!(hits >= 1, "nothing was cached");
    assert_eq!(e.origin.hits("/f/drip/"), 200 - hits);
}

/// One kept-alive HTTP/1.1 connection.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(BufReader::new(s))
    }

    /// GET `path`: the status and the `Connection` header, or `None` if the connection
    /// was closed (or reset) instead of answering.
    fn get(&mut self, path: &str) -> Option<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: v\r\n\r\n");
        self.0.get_mut().write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        if self.0.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let (mut len, mut chunked, mut connection) = (0usize, false, String::new());
        loop {
            let mut h = String::new();
            self.0.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().ok()?,
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => connection = v.trim().to_ascii_lowercase(),
                _ => {}
            }
        }
        if chunked {
            loop {
                let mut size = String::new();
                self.0.read_line(&mut size).ok()?;
                let n = usize::from_str_radix(size.trim(), 16).ok()?;
                let mut skip = vec![0; n + 2];
                self.0.read_exact(&mut skip).ok()?;
                if n == 0 {
                    break;
                }
            }
        } else {
            let mut skip = vec![0; len];
            self.0.read_exact(&mut skip).ok()?;
        }
        Some((status, connection))
    }
}

#[test]
fn error_and_stale_answers_keep_their_connection_or_say_close() {
    let e = start("");
    let pl = e.path("index.m3u8");
    assert_eq!(e.get(&pl).status, 200);
    let _pl_fail = e.fail("index.m3u8", "500");
    let _seg_fail = e.fail("c.ts", "500");
    std::thread::sleep(Duration::from_millis(1200));
    let seg = e.path("c.ts");
    let missing = e.path("nothing.ts");
    // Each answer twice: through the origin (the first) and while its failure is
    // remembered; then a 404 and a refused token.
    let cases = [
        pl.clone(),
        pl.clone(),
        seg.clone(),
        seg.clone(),
        missing,
        "/hls/f/bad-token/index.m3u8".to_owned(),
    ];
    let mut closed = 0;
    for path in cases {
        let mut c = Conn::open(e.edge.port);
        let (status, connection) = c.get(&path).expect("an answer");
        // Either the connection is usable for the next request, or the answer said close.
        match c.get(&e.path("a.ts")) {
            Some((200, _)) => assert_ne!(connection, "close", "{path}: said close, kept it"),
            other => {
                assert_eq!(
                    connection, "close",
                    "{path} ({status}): kept-alive lie: {other:?}"
                );
                closed += 1;
            }
        }
    }
    assert!(closed < 6, "every answer closed its connection");
}
