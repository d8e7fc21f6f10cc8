//! Grants hold on every edge: `hlsgate serve` (edge 1 and the admin) and a second
//! `hlsgate edge` on the same SQLite store and token key file, in front of a loopback origin
//! serving ffmpeg-made HLS. What a credential allows is decided from the native token it was
//! exchanged for (and the store's revocations) wherever that token is presented.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const UA: &str = "hlsgate-grants/1.0";

struct Harness {
    serve: Hlsgate,
    edge2: Hlsgate,
    ports: EdgePorts,
    origin: Origin,
    root: PathBuf,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let root = dir.join("origin");
        let origin = Origin::with_streams(root.clone());
        let streams = format!("streams:\n{}", origin.streams_yaml());
        let (config, ports) = write_config(&dir, "2s", &streams);
        let store = format!("sqlite://{}/hlsgate.db", dir.display());
        let (config2, ports2) = write_config_with(&dir, "edge2.yaml", "2s", &store, &streams);
        let serve = Hlsgate::start("serve", &config, ports.edge);
        let edge2 = Hlsgate::start("edge", &config2, ports2.edge);
        Harness {
            serve,
            edge2,
            ports,
            origin,
            root,
        }
    })
}

fn api(
    h: &Harness,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Response) {
    api_as(UA, h.ports.admin, method, path, jwt, body)
}

fn login(h: &Harness, user: &str) -> String {
    login_as(UA, h.ports.admin, user)
}

fn add_stream(h: &Harness, jwt: &str, path: &str) -> i64 {
    let url = format!("http://127.0.0.1:{}/{path}", h.origin.port);
    add_stream_as(UA, h.ports.admin, jwt, &url)
}

fn playback_token(h: &Harness, jwt: &str, body: Value) -> String {
    let (s, v, _) = api(h, "POST", "/api/playback-token", Some(jwt), Some(body));
    assert_eq!(s, 200, "{v}");
    path_of(v["url"].as_str().unwrap())
}

/// `(status, body)` of a GET on `edge`.
fn on(edge: &Hlsgate, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut hs = vec![("User-Agent", UA)];
    hs.extend_from_slice(headers);
    let r = get(edge.port, path, &hs).unwrap();
    (r.status, r.text())
}

/// Wait (up to 3 × `store.cache_ttl`) until `path` on `edge` answers `want`.
fn becomes(edge: &Hlsgate, path: &str, headers: &[(&str, &str)], want: u16) -> Duration {
    let t = Instant::now();
    loop {
        let (s, body) = on(edge, path, headers);
        if s == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "{path}: still {s} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_jwts_rules_hold_on_another_edge() {
    let h = harness();
    let jwt = login(h, "carol-grants");
    let id = add_stream(h, &jwt, "ts/index.m3u8");
    let app = ("Origin", "https://app.example.net");
    let p = playback_token(
        h,
        &jwt,
        json!({"streamID": id, "allowOrigin": "https://app.example.net", "strictOrigin": true,
               "viewerId": "viewer-9"}),
    );
    // exchanged on edge 1
    let (s, body) = on(&h.serve, &p, &[app]);
    assert_eq!(s, 200, "{body}");
    let seg = first_edge_uri(&body);
    // presented to edge 2, which never saw the JWT: the rules came with the token
    assert_eq!(on(&h.edge2, &seg, &[app]).0, 200);
    let (s, body) = on(&h.edge2, &seg, &[]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"origin not allowed for this token"}"#)
    );
    assert_eq!(
        on(&h.edge2, &seg, &[("Origin", "https://evil.example")]).0,
        403
    );
    // the viewer id is revoked on edge 2 too, within store.cache_ttl
    let (s, v, _) = api(
        h,
        "POST",
        "/api/viewers/revoke",
        Some(&jwt),
        Some(json!({"streamID": id, "viewerId": "viewer-9"})),
    );
    assert_eq!(s, 200, "{v}");
    let took = becomes(&h.edge2, &seg, &[app], 403);
    assert_eq!(on(&h.serve, &seg, &[app]).0, 403);
    eprintln!("viewer revoked on edge 2 after {took:?}");
}

#[test]
fn logging_out_ends_issued_jwts_and_cookies_on_every_edge() {
    let h = harness();
    let jwt = login(h, "dave-grants");
    let id = add_stream(h, &jwt, "ts/index.m3u8");
    let p = playback_token(h, &jwt, json!({"streamID": id}));
    let (s, body) = on(&h.serve, &p, &[]);
    assert_eq!(s, 200, "{body}");
    let jwt_seg = first_edge_uri(&body);
    assert_eq!(on(&h.edge2, &p, &[]).0, 200);
    assert_eq!(on(&h.edge2, &jwt_seg, &[]).0, 200);
    let (s, v, r) = api(
        h,
        "GET",
        &format!("/api/stream-cookies?streamID={id}"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let cookie = r.cookie_header();
    let cookie_path = format!("/hls/{id}/index.m3u8");
    let (s, body) = on(&h.serve, &cookie_path, &[("Cookie", &cookie)]);
    assert_eq!(s, 200, "{body}");
    let cookie_seg = first_edge_uri(&body);
    assert_eq!(on(&h.edge2, &cookie_seg, &[]).0, 200);

    let (s, _, _) = api(h, "POST", "/api/logout", Some(&jwt), None);
    assert_eq!(s, 204);
    // edge 1 (the admin's own process) at once; edge 2 within store.cache_ttl
    let ended = r#"{"error":"session has ended"}"#;
    assert_eq!(on(&h.serve, &p, &[]), (403, ended.to_owned()));
    assert_eq!(on(&h.serve, &jwt_seg, &[]).0, 403);
    assert_eq!(on(&h.serve, &cookie_path, &[("Cookie", &cookie)]).0, 403);
    assert_eq!(on(&h.serve, &cookie_seg, &[]).0, 403);
    let took = becomes(&h.edge2, &jwt_seg, &[], 403);
    for path in [&p, &cookie_seg] {
        assert_eq!(on(&h.edge2, path, &[]), (403, ended.to_owned()), "{path}");
    }
    eprintln!("logout reached edge 2 after {took:?}");
}

#[test]
fn origin_headers_reach_viewers_only_from_the_allow_list() {
    let h = harness();
    let hostile =
        "Clear-Site-Data: \"cookies\", \"storage\"\r\nX-Accel-Redirect: /internal/secret\r\n\
        Strict-Transport-Security: max-age=31536000\r\nNEL: {\"report_to\":\"x\",\"max_age\":1}\r\n\
        Report-To: {\"group\":\"x\"}\r\nAlt-Svc: h3=\":443\"\r\nService-Worker-Allowed: /\r\n\
        WWW-Authenticate: Basic\r\nContent-Disposition: attachment\r\nSet-Cookie: a=b\r\n\
        ETag: \"v1\"\r\nLast-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\n";
    for object in ["ts/index0", "ts/index"] {
        std::fs::write(h.root.join(format!("{object}.headers")), hostile).unwrap();
    }
    let url = h.serve.token_url(&["--stream", "ts"]);
    let playlist = path_of(&url);
    // path mode keeps relative URIs: the segment is beside the playlist
    let seg = format!("{}/index0.ts", playlist.rsplit_once('/').unwrap().0);
    // the segment twice: from the origin, then from the cache
    for (path, round) in [(&seg, "miss"), (&seg, "hit"), (&playlist, "playlist")] {
        let r = get(h.serve.port, path, &[("User-Agent", UA)]).unwrap();
        assert_eq!(r.status, 200, "{round}");
        for name in [
            "clear-site-data",
            "x-accel-redirect",
            "strict-transport-security",
            "nel",
            "report-to",
            "alt-svc",
            "service-worker-allowed",
            "www-authenticate",
            "content-disposition",
            "set-cookie",
        ] {
            assert!(
                r.header(name).is_none(),
                "{round}: {name} passed: {:?}",
                r.headers
            );
        }
        assert!(r.header("content-type").is_some(), "{round}");
        assert!(r.header("x-new-token").is_some(), "{round}");
    }
    let r = get(h.serve.port, &seg, &[("User-Agent", UA)]).unwrap();
    assert_eq!(
        r.header("etag"),
        Some("\"v1\""),
        "allowed headers pass: {:?}",
        r.headers
    );
}
