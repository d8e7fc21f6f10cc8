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

/// A 1080/360 ladder made of the `ts` stream's files: `tall/` with a folder per rendition,
/// `flat/` with both variant playlists beside the master.
fn make_ladders(root: &std::path::Path) {
    let ts = root.join("ts");
    let inf = |h: u32, w: u32| {
        format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={w}x{h}\n",
            h * 1000
        )
    };
    for (dir, hi, lo) in [
        ("tall", "v0/index.m3u8", "v1/index.m3u8"),
        ("flat", "hi.m3u8", "lo.m3u8"),
    ] {
        for v in [hi, lo] {
            let target = root.join(dir).join(v);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(ts.join("index.m3u8"), &target).unwrap();
            for e in std::fs::read_dir(&ts).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().ends_with(".ts") {
                    std::fs::copy(e.path(), target.parent().unwrap().join(e.file_name())).unwrap();
                }
            }
        }
        let master = format!("#EXTM3U\n{}{hi}\n{}{lo}\n", inf(1080, 1920), inf(360, 640));
        std::fs::write(root.join(dir).join("master.m3u8"), master).unwrap();
    }
}

#[test]
fn a_resolution_cap_refuses_taller_renditions_on_every_edge() {
    let h = harness();
    make_ladders(&h.root);
    let jwt = login(h, "erin-grants");
    let tall = add_stream(h, &jwt, "tall/master.m3u8");
    let sd = playback_token(h, &jwt, json!({"streamID": tall, "maxResolution": "SD"}));
    let (s, master) = on(&h.serve, &sd, &[]);
    assert_eq!(s, 200, "{master}");
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 1, "{master}");
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    let variant = first_edge_uri(&master);
    assert!(
        variant.contains("/~r/") && variant.ends_with("/v1/index.m3u8"),
        "{variant}"
    );
    // the kept rendition plays on the other edge, playlist and segments
    let (s, media) = on(&h.edge2, &variant, &[]);
    assert_eq!(s, 200, "{media}");
    let segment = first_edge_uri(&media);
    assert_eq!(on(&h.edge2, &segment, &[]).0, 200);
    let (ok, err) = ffmpeg_play(&format!("http://127.0.0.1:{}{sd}", h.serve.port), UA);
    assert!(ok, "{err}");
    // the 1080 rendition, asked for directly, through either edge: refused
    let refused = r#"{"error":"rendition not allowed for this token"}"#.to_owned();
    let direct = sd.replace("master.m3u8", "v0/index.m3u8");
    for edge in [&h.serve, &h.edge2] {
        assert_eq!(on(edge, &direct, &[]), (403, refused.clone()), "{direct}");
    }
    // with the capped native token: unmarked, or under the kept rendition's signatures
    let (marker, rest) = variant.split_once("/~r/").unwrap();
    let sig = rest.split('/').next().unwrap();
    let unmarked = format!("{marker}/v0/index.m3u8");
    let borrowed = format!("{marker}/~r/{sig}/v0/index.m3u8");
    let seg_sig = segment
        .split("/~r/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let tall_segment = format!("{marker}/~r/{seg_sig}/v0/index0.ts");
    for path in [&unmarked, &borrowed, &tall_segment] {
        for edge in [&h.serve, &h.edge2] {
            assert_eq!(on(edge, path, &[]), (403, refused.clone()), "{path}");
        }
    }
    // an uncapped token has the whole ladder
    let full = playback_token(h, &jwt, json!({"streamID": tall}));
    assert_eq!(
        on(&h.serve, &full.replace("master.m3u8", "v0/index.m3u8"), &[]).0,
        200
    );
    // a flat layout: the taller variant playlist beside the kept one stays refused
    let flat = add_stream(h, &jwt, "flat/master.m3u8");
    let sd = playback_token(h, &jwt, json!({"streamID": flat, "maxResolution": "SD"}));
    let (s, master) = on(&h.edge2, &sd, &[]);
    assert_eq!(s, 200, "{master}");
    let lo = first_edge_uri(&master);
    assert!(lo.ends_with("/lo.m3u8"), "{lo}");
    assert_eq!(on(&h.edge2, &lo, &[]).0, 200);
    let hi = lo.replace("/lo.m3u8", "/hi.m3u8");
    assert_eq!(on(&h.edge2, &hi, &[]), (403, refused.clone()));
}

/// After `--upgrade` (the old process hands its sockets over and exits), the new process
/// knows nothing the old one learnt: the grant comes with the token.
#[test]
fn a_grant_holds_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap().keep();
    let root = dir.join("origin");
    let origin = Origin::with_streams(root.clone());
    make_ladders(&root);
    let (config, ports) = write_config(&dir, "2s", "streams: {}\n");
    add_config_keys(
        &config,
        "edge",
        &format!("  upgrade_socket: \"{}/upgrade.sock\"\n", dir.display()),
    );
    let old = Hlsgate::start("serve", &config, ports.edge);
    let jwt = login_as(UA, ports.admin, "frank-upgrade");
    let url = format!("http://127.0.0.1:{}/tall/master.m3u8", origin.port);
    let id = add_stream_as(UA, ports.admin, &jwt, &url);
    let body = json!({"streamID": id, "maxResolution": "SD",
        "allowOrigin": "https://app.example.net", "strictOrigin": true});
    let (s, v, _) = api_as(
        UA,
        ports.admin,
        "POST",
        "/api/playback-token",
        Some(&jwt),
        Some(body),
    );
    assert_eq!(s, 200, "{v}");
    let app = ("Origin", "https://app.example.net");
    let (s, master) = on(&old, &path_of(v["url"].as_str().unwrap()), &[app]);
    assert_eq!(s, 200, "{master}");
    let variant = first_edge_uri(&master);
    let marker = variant.split_once("/~r/").unwrap().0.to_owned();
    assert_eq!(on(&old, &variant, &[app]).0, 200);

    let new = old.upgraded();
    // the same token on the new process: its rules and its cap hold
    assert_eq!(on(&new, &variant, &[app]).0, 200);
    assert_eq!(on(&new, &variant, &[]).0, 403, "strict origin");
    let tall = format!("{marker}/v0/index.m3u8");
    assert_eq!(on(&new, &tall, &[app]).0, 403, "resolution cap");
}
