//! Origin shield (`origins.shield`), three real processes on loopback: two edges whose
//! misses go to a third hlsgate, the shield, which alone talks to the origin. 200 viewers
//! split across the edges play five ffmpeg-made streams whole (master and media playlists,
//! init sections, a key outside the stream folder, segments); the origin's own log must
//! show each object fetched once, by hlsgate, with no viewer token anywhere on the way.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Every URI of a playlist: URI lines and `URI="..."` attributes.
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines() {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_owned());
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("URI=\"") {
            rest = &rest[i + 5..];
            let end = rest.find('"').unwrap();
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// Resolve a playlist URI against the edge path of the playlist it is in.
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        path_of(uri)
    } else if uri.starts_with('/') {
        uri.to_owned()
    } else {
        format!("{}/{uri}", base.rsplit_once('/').unwrap().0)
    }
}

/// Play `path` on `port` as a player would: every playlist and everything it names, once.
/// Answers the number of objects fetched; every one must be 200 and media (playlists
/// parsed, the rest compared byte for byte with the origin's file when `root` has it).
fn play(port: u16, path: &str, ua: &str) -> usize {
    let mut todo = vec![path.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let r = get(port, &p, &[("User-Agent", ua)]).unwrap();
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        assert!(r.header("x-new-token").is_some(), "{p}");
        if r.body.starts_with(b"#EXTM3U") {
            for u in uris(&r.text()) {
                todo.push(resolve(&p, &u));
            }
        } else {
            assert!(!r.body.is_empty(), "{p}");
        }
    }
    seen.len()
}

#[test]
fn two_edges_and_a_shield_cost_the_origin_one_fetch_per_object() {
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::with_streams(dir.join("origin"));
    let shield_log = dir.join("shield-access.log");
    let (shield_cfg, shield_ports) = write_config_with(
        &dir,
        "shield.yaml",
        "5s",
        &format!("sqlite://{}/shield.db", dir.display()),
        "streams: {}\n",
    );
    add_config_keys(
        &shield_cfg,
        "edge",
        &format!("  access_log: \"{}\"\n", shield_log.display()),
    );
    let mut shield = Hlsgate::start("edge", &shield_cfg, shield_ports.edge);
    let mut edges = Vec::new();
    for n in 0..2 {
        let (cfg, ports) = write_config_with(
            &dir,
            &format!("edge{n}.yaml"),
            "5s",
            &format!("sqlite://{}/edge{n}.db", dir.display()),
            &format!("streams:\n{}", origin.streams_yaml()),
        );
        add_config_keys(
            &cfg,
            "origins",
            &format!("  shield: \"http://127.0.0.1:{}\"\n", shield_ports.edge),
        );
        add_config_keys(
            &cfg,
            "edge",
            &format!("  access_log: \"{}/edge{n}-access.log\"\n", dir.display()),
        );
        edges.push(Hlsgate::start("edge", &cfg, ports.edge));
    }
    // The three share one key file (`tokens.secret_file` in `dir`): the edges sign for the
    // shield with it, and a token issued by one edge's config plays on the other.
    let streams = ["ts", "fmp4", "aes", "single", "ladder"];
    let mut urls = BTreeMap::new();
    for (n, e) in edges.iter().enumerate() {
        for s in streams {
            urls.insert(
                (n, s),
                path_of(&e.token_url(&["--stream", s, "--ttl", "600"])),
            );
        }
    }
    let tokens: Vec<String> = urls
        .values()
        .map(|p| p.split('/').nth(3).unwrap().to_owned())
        .collect();

    let viewers: Vec<_> = (0..200)
        .map(|i| {
            let n = i % 2;
            let port = edges[n].port;
            let path = urls[&(n, streams[(i / 2) % streams.len()])].clone();
            std::thread::spawn(move || play(port, &path, &format!("viewer-{i}")))
        })
        .collect();
    let fetched: usize = viewers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(fetched > 200 * 4, "{fetched} objects");

    // The origin: every object once, asked by hlsgate, with nothing of the viewers'.
    let requests = origin.requests();
    let mut per_target: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        let target = r.split_whitespace().nth(1).unwrap().to_owned();
        *per_target.entry(target).or_default() += 1;
        assert!(r.contains(" ua=hlsgate/") && r.contains(" cookie=-"), "{r}");
        assert!(!tokens.iter().any(|t| r.contains(t.as_str())), "{r}");
    }
    let twice: Vec<_> = per_target.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:?}");
    // Everything the five streams are made of came through: 5 playlists + 2 variant
    // playlists, the key, fMP4's init section, and the segments.
    for s in streams {
        assert!(
            per_target.keys().any(|t| t.starts_with(&format!("/{s}/"))),
            "{s}: {per_target:?}"
        );
    }
    assert!(per_target.contains_key("/keys/enc.key"), "{per_target:?}");
    assert!(per_target.len() >= 20, "{per_target:?}");

    // The shield saw only shield requests, and no viewer token. (Its access log is written
    // behind the answers: wait for the lines of every request made.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let shield_requests = loop {
        let text = std::fs::read_to_string(&shield_log).unwrap_or_default();
        let n = text.lines().filter(|l| l.contains("/_shield/")).count();
        if n >= 2 * per_target.len() || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let shield_lines: Vec<&str> = shield_requests
        .lines()
        .filter(|l| !l.contains("/healthz"))
        .collect();
    // Each edge asked the shield once per object (its own cache coalesced its viewers),
    // and the shield missed once per object.
    let mut at_shield: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &shield_lines {
        assert!(l.contains(" GET /_shield/http/127.0.0.1:"), "{l}");
        assert!(!tokens.iter().any(|t| l.contains(t.as_str())), "{l}");
        *at_shield
            .entry(l.split_whitespace().nth(3).unwrap())
            .or_default() += 1;
    }
    assert_eq!(at_shield.len(), per_target.len(), "{shield_requests}");
    assert!(
        at_shield.values().all(|&n| n == 2),
        "{at_shield:?}\n{shield_requests}\n{}\n{}",
        std::fs::read_to_string(dir.join("edge0-access.log")).unwrap(),
        std::fs::read_to_string(dir.join("edge1-access.log")).unwrap()
    );
    let misses = shield_lines
        .iter()
        .filter(|l| l.contains(" cache=miss "))
        .count();
    assert_eq!(misses, per_target.len(), "{shield_requests}");

    // The shield route admits only the edges' signatures.
    let o = origin.port;
    let target = format!("/_shield/http/127.0.0.1:{o}/ts/index.m3u8");
    let r = get(shield.port, &target, &[]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.text().contains("shield request not authorised"),
        "{}",
        r.text()
    );
    let keys = hlsgate::token::Keyring::from_text(
        &std::fs::read_to_string(dir.join("secret.key")).unwrap(),
    )
    .unwrap();
    let now = hlsgate::token::unix_now();
    let signed = hlsgate::edge::shield::authorization(&keys, &target, now);
    let other = format!("/_shield/http/127.0.0.1:{o}/fmp4/index.m3u8");
    // Signed for another object, or by another key.
    let r = get(shield.port, &other, &[("X-Hlsgate-Shield", &signed)]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let stranger = hlsgate::token::Keyring::from_text(
        "7 Zm9yZ2VkLWtleS1mb3JnZWQta2V5LWZvcmdlZC1rZXktZm9yZ2VkLWtleQ\n",
    )
    .unwrap();
    let forged = hlsgate::edge::shield::authorization(&stranger, &target, now);
    let r = get(shield.port, &target, &[("X-Hlsgate-Shield", &forged)]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    // With the right signature: the origin's playlist byte for byte (not rewritten, no
    // token), from the shield's cache.
    let r = get(shield.port, &target, &[("X-Hlsgate-Shield", &signed)]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.body,
        std::fs::read(dir.join("origin/ts/index.m3u8")).unwrap()
    );
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.header("x-new-token").is_none());
    // A signed request is still held to the shield's own origin policy: never one of its own
    // listeners, never an internal address it does not allow.
    for t in [
        format!("/_shield/http/127.0.0.1:{}/metrics", shield_ports.metrics),
        "/_shield/http/10.1.2.3:80/x.ts".to_owned(),
    ] {
        let auth = hlsgate::edge::shield::authorization(&keys, &t, now);
        let r = get(shield.port, &t, &[("X-Hlsgate-Shield", &auth)]).unwrap();
        assert_eq!(r.status, 502, "{t}: {}", r.text());
        assert!(r.text().contains("not an allowed origin"), "{}", r.text());
    }
    let metrics = get(shield_ports.metrics, "/metrics", &[]).unwrap().text();
    assert_eq!(
        sample(
            &metrics,
            "hlsgate_auth_denials_total{reason=\"shield_auth\"}"
        ),
        3.0
    );
    assert_eq!(
        origin.requests().len(),
        requests.len(),
        "nothing more reached the origin"
    );

    // Without its shield an edge cannot fetch a miss: 502 JSON, cached objects still play.
    shield.signal("TERM");
    shield
        .wait_exit(Duration::from_secs(15))
        .expect("shield exits");
    std::fs::copy(
        dir.join("origin/ts/index.m3u8"),
        dir.join("origin/ts/copy.m3u8"),
    )
    .unwrap();
    let ts = &urls[&(0, "ts")];
    let miss = format!("{}/copy.m3u8", ts.rsplit_once('/').unwrap().0);
    let r = get(edges[0].port, &miss, &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("origin unavailable"), "{}", r.text());
    assert_eq!(play(edges[0].port, ts, "after"), 4);
    assert!(!origin.requests().iter().any(|r| r.contains("copy.m3u8")));
}

/// `hlsgate check-config` on a fresh test config with `origins.shield: URL`: whether it
/// passed, and its stderr.
fn check_shield(dir: &std::path::Path, url: impl FnOnce(&EdgePorts) -> String) -> (bool, String) {
    let (cfg, ports) = write_config(dir, "5s", "streams: {}\n");
    add_config_keys(&cfg, "origins", &format!("  shield: \"{}\"\n", url(&ports)));
    let out = std::process::Command::new(bin())
        .args(["check-config", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_shield_url_must_name_another_hlsgate() {
    let dir = tempfile::tempdir().unwrap().keep();
    for (shield, problem) in [
        ("ftp://127.0.0.1:1", "must be http(s)://HOST[:PORT]"),
        ("http://127.0.0.1:1/path", "must be http(s)://HOST[:PORT]"),
        ("http://u@127.0.0.1:1", "credentials"),
    ] {
        let (ok, err) = check_shield(&dir, |_| shield.to_owned());
        assert!(!ok, "{shield}");
        assert!(
            err.contains("origins.shield") && err.contains(problem),
            "{shield}: {err}"
        );
    }
    // Its own edge listener would loop; another hlsgate's is fine.
    let (ok, err) = check_shield(&dir, |p| format!("http://127.0.0.1:{}", p.edge));
    assert!(!ok && err.contains("own listener"), "{err}");
    let (ok, err) = check_shield(&dir, |_| "http://127.0.0.1:1".to_owned());
    assert!(ok, "{err}");
}
