//! Every way in besides path tokens, run for real: `hlsgate serve` in front of a loopback
//! origin serving ffmpeg-made HLS, tokens made by signers nobody here wrote (botocore's
//! CloudFrontSigner, Akamai's EdgeAuth library from PyPI, nginx's documented `openssl md5`
//! recipe for secure_link, PyJWT), ffmpeg as the player, and the admin routes that issue
//! cookies, JWT playback URLs and playback keys.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const UA: &str = "hlsgate-modes-player/1.0";
const AKAMAI_KEY: &str = "4f2b1c9d8e7a6b5c4d3e2f1a0b9c8d7e";
const SECURE_LINK_SECRET: &str = "nginx-secret-123";
const KEY_PAIR: &str = "K2JCJMDEHXQW5F";

struct Harness {
    serve: Hlsgate,
    ports: EdgePorts,
    keys: PathBuf,
    origin: Origin,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A 1080/720/360 ladder (`ladder3/master.m3u8`), one second long.
fn make_ladder3(root: &Path) {
    std::fs::create_dir_all(root.join("ladder3")).unwrap();
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=10"])
        .args([
            "-filter_complex",
            "[0:v]split=3[a][b][c];[b]scale=1280:720[v1];[c]scale=640:360[v2]",
        ])
        .args(["-map", "[a]", "-map", "[v1]", "-map", "[v2]"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "10",
            "-t",
            "1",
        ])
        .args(["-b:v:0", "3000k", "-b:v:1", "1500k", "-b:v:2", "500k"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod"])
        .args([
            "-var_stream_map",
            "v:0 v:1 v:2",
            "-master_pl_name",
            "master.m3u8",
        ])
        .arg("ladder3/v%v/index.m3u8")
        .current_dir(root));
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let origin = Origin::with_streams(dir.join("origin"));
        make_ladder3(&dir.join("origin"));
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        openssl(&keys, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "cf.pem"]);
        openssl(&keys, &["pkey", "-in", "cf.pem", "-pubout", "-out", "cf.pub"]);
        openssl(&keys, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rogue.pem"]);
        openssl(&keys, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "user.pem"]);
        openssl(&keys, &["ec", "-in", "user.pem", "-pubout", "-out", "user.pub"]);
        let o = origin.port;
        let streams = format!(
            "streams:\n{}  cfonly: {{ url: \"http://127.0.0.1:{o}/ts/index.m3u8\", auth: [cloudfront] }}\n  ladder3: {{ url: \"http://127.0.0.1:{o}/ladder3/master.m3u8\" }}\n",
            origin.streams_yaml()
        );
        let (config, ports) = write_config(&dir, "2s", &streams);
        add_config_keys(
            &config,
            "tokens",
            &format!(
                "  cloudfront:\n    keys:\n      {KEY_PAIR}: \"{}/cf.pub\"\n  akamai:\n    key_hex: \"{AKAMAI_KEY}\"\n  secure_link:\n    secret: \"{SECURE_LINK_SECRET}\"\n",
                keys.display()
            ),
        );
        add_config_keys(
            &config,
            "edge",
            "  cors:\n    allow_origins: [\"http://player.example\", \"https://*.example.com\"]\n",
        );
        let serve = Hlsgate::start("serve", &config, ports.edge);
        Harness {
            serve,
            ports,
            keys,
            origin,
        }
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

fn edge_url(h: &Harness, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", h.ports.edge)
}

/// botocore: a signed URL (`canned`: for `url` itself; `custom`: policy on `resource`).
fn cf_url(h: &Harness, mode: &str, url: &str, exp: u64, resource: &str, ip: &str) -> String {
    run(Command::new("/usr/bin/python3")
        .arg(helper("sign_cloudfront.py"))
        .arg(h.keys.join("cf.pem"))
        .args([KEY_PAIR, mode, url, &exp.to_string(), resource, ip]))
}

/// botocore: the three cookies for a custom policy on `resource`, as a `Cookie` value.
fn cf_cookies_with(
    h: &Harness,
    key: &str,
    resource: &str,
    exp: u64,
    ip: &str,
    nbf: &str,
) -> String {
    let out = run(Command::new("/usr/bin/python3")
        .arg(helper("sign_cloudfront.py"))
        .arg(h.keys.join(key))
        .args([
            KEY_PAIR,
            "cookies",
            "-",
            &exp.to_string(),
            resource,
            ip,
            nbf,
        ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn cf_cookies(h: &Harness, stream: &str, exp: u64) -> String {
    let resource = format!("http*://127.0.0.1:{}/hls/{stream}/*", h.ports.edge);
    cf_cookies_with(h, "cf.pem", &resource, exp, "-", "-")
}

/// Akamai's EdgeAuth library (PyPI `akamai-edgeauth`, in target/pyvenv).
fn akamai(kind: &str, path: &str, start: u64, end: u64, ip: &str) -> String {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: scripts/test.sh makes it (python3 -m venv + pip install akamai-edgeauth)",
        py.display()
    );
    run(Command::new(py).arg(helper("sign_akamai.py")).args([
        AKAMAI_KEY,
        kind,
        path,
        &start.to_string(),
        &end.to_string(),
        ip,
    ]))
}

/// nginx's documented recipe: `echo -n '$expires$uri$remote_addr secret' | openssl md5
/// -binary | openssl base64 | tr +/ -_ | tr -d =`.
fn secure_link(uri: &str, expires: u64, ip: &str) -> String {
    let s = format!("{expires}{uri}{ip} {SECURE_LINK_SECRET}");
    run(Command::new("sh").args([
        "-c",
        "printf %s \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =",
        "sh",
        &s,
    ]))
}

fn status(h: &Harness, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut hs = vec![("User-Agent", UA)];
    hs.extend_from_slice(headers);
    let r = get(h.ports.edge, path, &hs).unwrap();
    (r.status, r.text())
}

const VARIANTS: [(&str, &str); 5] = [
    ("ts", "index.m3u8"),
    ("fmp4", "index.m3u8"),
    ("aes", "index.m3u8"),
    ("single", "index.m3u8"),
    ("ladder", "master.m3u8"),
];

#[test]
fn ffmpeg_plays_every_variant_with_botocore_signed_urls_and_cookies() {
    let h = harness();
    let exp = now() + 300;
    for (stream, playlist) in VARIANTS {
        let url = edge_url(h, &format!("/hls/{stream}/{playlist}"));
        let resource = format!("http://127.0.0.1:{}/hls/{stream}/*", h.ports.edge);
        let signed = cf_url(h, "custom", &url, exp, &resource, "-");
        let (ok, err) = ffmpeg_play(&signed, UA);
        assert!(ok, "{stream} signed URL: {err}");
        let cookies = cf_cookies(h, stream, exp);
        let (ok, err) = ffmpeg_play_with(&url, UA, &[("Cookie", &cookies)]);
        assert!(ok, "{stream} cookies: {err}");
    }
    // a canned policy names exactly one URL
    let url = edge_url(h, "/hls/ts/index.m3u8");
    let canned = cf_url(h, "canned", &url, exp, "-", "-");
    assert_eq!(status(h, &path_of(&canned), &[]).0, 200);
    let other = path_of(&canned).replace("index.m3u8", "index.m3u8x");
    assert_eq!(
        status(h, &other, &[]).0,
        401,
        "a canned policy for another URL"
    );
}

#[test]
fn every_refusal_of_cloudfront_tokens() {
    let h = harness();
    let t = now();
    let url = edge_url(h, "/hls/ts/index.m3u8");
    let res = |s: &str| format!("http://127.0.0.1:{}/hls/{s}/*", h.ports.edge);
    let good = path_of(&cf_url(h, "custom", &url, t + 300, &res("ts"), "-"));
    assert_eq!(status(h, &good, &[]).0, 200);
    // one byte of the signature changed
    let i = good.find("Signature=").unwrap() + 20;
    let mut forged = good.clone().into_bytes();
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        status(h, &forged, &[]),
        (401, r#"{"error":"invalid token signature"}"#.into())
    );
    // the policy swapped for another one, the signature kept
    let other = path_of(&cf_url(h, "custom", &url, t + 300, &res("*"), "-"));
    let pol = |p: &str| {
        p[p.find("Policy=").unwrap()..]
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let swapped = good.replace(&pol(&good), &pol(&other));
    assert_eq!(status(h, &swapped, &[]).0, 401);
    let rogue = cf_cookies_with(h, "rogue.pem", &res("ts"), t + 300, "-", "-");
    assert_eq!(
        status(h, "/hls/ts/index.m3u8", &[("Cookie", &rogue)]).0,
        401,
        "unregistered key"
    );
    let expired = path_of(&cf_url(h, "custom", &url, t - 5, &res("ts"), "-"));
    assert_eq!(
        status(h, &expired, &[]),
        (401, r#"{"error":"token expired"}"#.into())
    );
    let other_stream = path_of(&cf_url(h, "custom", &url, t + 300, &res("fmp4"), "-"));
    assert_eq!(status(h, &other_stream, &[]).0, 403);
    let elsewhere = path_of(&cf_url(
        h,
        "custom",
        &url,
        t + 300,
        &res("ts"),
        "10.0.0.0/8",
    ));
    assert_eq!(
        status(h, &elsewhere, &[]),
        (
            403,
            r#"{"error":"token is bound to another client"}"#.into()
        )
    );
    let here = path_of(&cf_url(
        h,
        "custom",
        &url,
        t + 300,
        &res("ts"),
        "127.0.0.1/32",
    ));
    assert_eq!(status(h, &here, &[]).0, 200);
    let later = cf_cookies_with(
        h,
        "cf.pem",
        &res("ts"),
        t + 300,
        "-",
        &(t + 100).to_string(),
    );
    assert_eq!(
        status(h, "/hls/ts/index.m3u8", &[("Cookie", &later)]).0,
        401,
        "DateGreaterThan"
    );
    // cookies for one stream do not open another
    let c = cf_cookies(h, "ts", t + 300);
    assert_eq!(status(h, "/hls/fmp4/index.m3u8", &[("Cookie", &c)]).0, 403);
    assert_eq!(
        status(h, "/hls/ts/index.m3u8", &[]).0,
        401,
        "no credentials at all"
    );
}

#[test]
fn streams_admit_only_their_modes() {
    let h = harness();
    let c = cf_cookies(h, "cfonly", now() + 300);
    let (s, body) = status(h, "/hls/cfonly/index.m3u8", &[("Cookie", &c)]);
    assert_eq!(s, 200, "{body}");
    // the exchanged token in the playlist keeps working for this stream
    let seg = first_edge_uri(&body);
    assert_eq!(status(h, &seg, &[]).0, 200);
    // but a path token straight from `hlsgate token` does not open it
    let url = h.serve.token_url(&["--stream", "cfonly"]);
    assert_eq!(
        status(h, &path_of(&url), &[]),
        (
            403,
            r#"{"error":"this stream does not admit this kind of token"}"#.into()
        )
    );
    let p = format!(
        "/hls/cfonly/index.m3u8?hdnts={}",
        akamai("acl", "/hls/cfonly/*", now() - 1, now() + 300, "-")
    );
    assert_eq!(status(h, &p, &[]).0, 403);
}

#[test]
fn akamai_edgeauth_tokens() {
    let h = harness();
    let t = now();
    let tok = akamai("acl", "/hls/ts/*", t - 1, t + 300, "-");
    let (ok, err) = ffmpeg_play(&edge_url(h, &format!("/hls/ts/index.m3u8?hdnts={tok}")), UA);
    assert!(ok, "{err}");
    let (ok, err) = ffmpeg_play_with(
        &edge_url(h, "/hls/ladder/master.m3u8"),
        UA,
        &[(
            "Cookie",
            &format!(
                "__token__={}",
                akamai("acl", "/hls/ladder/*", t - 1, t + 300, "-")
            ),
        )],
    );
    assert!(ok, "cookie: {err}");
    let url_token = akamai("url", "/hls/ts/index.m3u8", t - 1, t + 300, "-");
    assert_eq!(
        status(h, &format!("/hls/ts/index.m3u8?hdnts={url_token}"), &[]).0,
        200
    );
    assert_eq!(
        status(h, &format!("/hls/ts/other.m3u8?hdnts={url_token}"), &[]).0,
        401
    );
    let q = |tok: &str| format!("/hls/ts/index.m3u8?hdnts={tok}");
    let forged = {
        let (a, mac) = tok.rsplit_once("hmac=").unwrap();
        let flip = if mac.starts_with('0') { "1" } else { "0" };
        format!("{a}hmac={flip}{}", &mac[1..])
    };
    assert_eq!(status(h, &q(&forged), &[]).0, 401);
    assert_eq!(
        status(
            h,
            &q(&akamai("acl", "/hls/ts/*", t - 100, t - 10, "-")),
            &[]
        )
        .0,
        401
    );
    assert_eq!(
        status(
            h,
            &q(&akamai("acl", "/hls/fmp4/*", t - 1, t + 300, "-")),
            &[]
        )
        .0,
        403
    );
    assert_eq!(
        status(
            h,
            &q(&akamai("acl", "/hls/ts/*", t - 1, t + 300, "10.1.2.3")),
            &[]
        )
        .0,
        403
    );
    assert_eq!(
        status(
            h,
            &q(&akamai("acl", "/hls/ts/*", t - 1, t + 300, "127.0.0.1")),
            &[]
        )
        .0,
        200
    );
}

#[test]
fn nginx_secure_link_tokens() {
    let h = harness();
    let t = now();
    let uri = "/hls/ts/index.m3u8";
    let md5 = secure_link(uri, t + 300, "127.0.0.1");
    let p = format!("{uri}?md5={md5}&expires={}", t + 300);
    let (ok, err) = ffmpeg_play(&edge_url(h, &p), UA);
    assert!(ok, "{err}");
    let mut forged = md5.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = format!(
        "{uri}?md5={}&expires={}",
        String::from_utf8(forged).unwrap(),
        t + 300
    );
    assert_eq!(status(h, &forged, &[]).0, 401);
    let expired = format!(
        "{uri}?md5={}&expires={}",
        secure_link(uri, t - 5, "127.0.0.1"),
        t - 5
    );
    assert_eq!(
        status(h, &expired, &[]),
        (401, r#"{"error":"token expired"}"#.into())
    );
    // another stream, another address: the hash covers both, so these are forgeries (as
    // for nginx)
    let other = format!("/hls/fmp4/index.m3u8?md5={md5}&expires={}", t + 300);
    assert_eq!(status(h, &other, &[]).0, 401);
    let elsewhere = format!(
        "{uri}?md5={}&expires={}",
        secure_link(uri, t + 300, "10.0.0.1"),
        t + 300
    );
    assert_eq!(status(h, &elsewhere, &[]).0, 401);
    assert_eq!(
        status(h, &format!("{uri}?md5={md5}"), &[]).0,
        401,
        "no expires"
    );
}

#[test]
fn cors_is_the_edges() {
    let h = harness();
    let c = cf_cookies(h, "ts", now() + 300);
    let get_with = |origin: Option<&str>| {
        let mut hs = vec![("User-Agent", UA), ("Cookie", c.as_str())];
        if let Some(o) = origin {
            hs.push(("Origin", o));
        }
        get(h.ports.edge, "/hls/ts/index.m3u8", &hs).unwrap()
    };
    let r = get_with(Some("http://player.example"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://player.example")
    );
    assert_eq!(r.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(r.header("Vary"), Some("Origin"));
    let r = get_with(Some("https://app.example.com"));
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example.com")
    );
    let r = get_with(Some("https://evil.example.org"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    assert_eq!(r.header("Access-Control-Allow-Credentials"), None);
    // refusals carry the same answer, so a page can read why
    let r = get(
        h.ports.edge,
        "/hls/ts/index.m3u8",
        &[("Origin", "http://player.example")],
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://player.example")
    );
    // preflight
    let r = request(
        "OPTIONS",
        h.ports.edge,
        "/hls/ts/index.m3u8",
        &[
            ("Origin", "http://player.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://player.example")
    );
    assert!(r
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("GET"));
    assert!(r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Range"));
    let r = request(
        "OPTIONS",
        h.ports.edge,
        "/hls/ts/index.m3u8",
        &[("Origin", "https://evil.example.org")],
    )
    .unwrap();
    assert_eq!(
        (r.status, r.header("Access-Control-Allow-Origin")),
        (204, None)
    );
    let _ = &h.origin;
}

// ---- the admin's routes -------------------------------------------------------------------

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

fn pyjwt(key: &Path, kid: &str, claims: Value) -> String {
    run(Command::new("/usr/bin/python3")
        .arg(helper("sign_jwt.py"))
        .arg(key)
        .args(["ES384", kid, &claims.to_string()]))
}

#[test]
fn registered_playback_keys_open_only_their_owners_streams() {
    let h = harness();
    let alice = login(h, "alice-keys");
    let bob = login(h, "bob-keys");
    let mine = add_stream(h, &alice, "ts/index.m3u8");
    let theirs = add_stream(h, &bob, "ts/index.m3u8");
    let pem = std::fs::read_to_string(h.keys.join("user.pub")).unwrap();
    let (s, v, _) = api(
        h,
        "POST",
        "/api/playback-keys",
        Some(&alice),
        Some(json!({"name": "app", "publicKeyMaterial": pem})),
    );
    assert_eq!(s, 201, "{v}");
    let kid = v["kid"].as_str().unwrap().to_owned();
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);
    let (s, v, _) = api(h, "GET", "/api/playback-keys", Some(&alice), None);
    assert_eq!((s, v["keys"][0]["kid"].as_str()), (200, Some(kid.as_str())));
    let (_, v, _) = api(h, "GET", "/api/playback-keys", Some(&bob), None);
    assert_eq!(v["keys"], json!([]));
    // private keys and garbage are refused
    let private = std::fs::read_to_string(h.keys.join("user.pem")).unwrap();
    let (s, v, _) = api(
        h,
        "POST",
        "/api/playback-keys",
        Some(&alice),
        Some(json!({"publicKeyMaterial": private})),
    );
    assert_eq!(s, 400, "{v}");
    let (s, _, _) = api(
        h,
        "POST",
        "/api/playback-keys",
        Some(&alice),
        Some(json!({"publicKeyMaterial": "nope"})),
    );
    assert_eq!(s, 400);

    let claims = |id: i64| json!({"aws:channel-arn": format!("arn:aws:ivs:x:1:channel/{id}"), "exp": now() + 300});
    let user_key = h.keys.join("user.pem");
    let ok = pyjwt(&user_key, &kid, claims(mine));
    let (ok_play, err) = ffmpeg_play(
        &edge_url(h, &format!("/hls/{mine}/index.m3u8?token={ok}")),
        UA,
    );
    assert!(ok_play, "{err}");
    // a segment URL of the playlist it was exchanged for (a native token)
    let (s, body) = status(h, &format!("/hls/{mine}/index.m3u8?token={ok}"), &[]);
    assert_eq!(s, 200);
    let seg = first_edge_uri(&body);
    assert_eq!(status(h, &seg, &[]).0, 200);
    let other = pyjwt(&user_key, &kid, claims(theirs));
    assert_eq!(
        status(h, &format!("/hls/{theirs}/index.m3u8?token={other}"), &[]).0,
        403,
        "another user's stream"
    );
    // deleted: refused at once in `serve`
    let (s, _, _) = api(
        h,
        "DELETE",
        &format!("/api/playback-keys/{kid}"),
        Some(&bob),
        None,
    );
    assert_eq!(s, 404, "bob cannot delete alice's key");
    let (s, _, _) = api(
        h,
        "DELETE",
        &format!("/api/playback-keys/{kid}"),
        Some(&alice),
        None,
    );
    assert_eq!(s, 204);
    let fresh = pyjwt(
        &user_key,
        &kid,
        json!({"aws:channel-arn": format!("arn:aws:ivs:x:1:channel/{mine}"), "exp": now() + 301}),
    );
    assert_eq!(
        status(h, &format!("/hls/{mine}/index.m3u8?token={fresh}"), &[]).0,
        401
    );
    // the token verified before is not remembered past its key
    assert_eq!(
        status(h, &format!("/hls/{mine}/index.m3u8?token={ok}"), &[]).0,
        401
    );
    // and what it was exchanged for ends with the key
    assert_eq!(
        status(h, &seg, &[]),
        (
            403,
            r#"{"error":"the key that signed this token is gone"}"#.into()
        )
    );
}

#[test]
fn playback_tokens_carry_origins_viewer_ids_and_resolution_caps() {
    let h = harness();
    let jwt = login(h, "carol-tokens");
    let id = add_stream(h, &jwt, "ts/index.m3u8");
    let ladder = add_stream(h, &jwt, "ladder3/master.m3u8");
    let token = |body: Value| {
        let (s, v, _) = api(h, "POST", "/api/playback-token", Some(&jwt), Some(body));
        assert_eq!(s, 200, "{v}");
        path_of(v["url"].as_str().unwrap())
    };
    // plain
    let p = token(json!({"streamID": id}));
    let (ok, err) = ffmpeg_play(&edge_url(h, &p), UA);
    assert!(ok, "{err}");
    // strict origin: other or no Origin refused; the allowed one echoed
    let p = token(
        json!({"streamID": id, "allowOrigin": "https://app.example.net", "strictOrigin": true}),
    );
    assert_eq!(status(h, &p, &[]).0, 403);
    assert_eq!(
        status(h, &p, &[("Origin", "https://evil.example.net")]).0,
        403
    );
    let r = get(
        h.ports.edge,
        &p,
        &[("User-Agent", UA), ("Origin", "https://app.example.net")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://app.example.net")
    );
    // the exchanged token keeps the rule
    let seg = first_edge_uri(&r.text());
    assert_eq!(
        status(h, &seg, &[("Origin", "https://evil.example.net")]).0,
        403
    );
    assert_eq!(
        status(h, &seg, &[("Origin", "https://app.example.net")]).0,
        200
    );
    // viewer ids are revocable: the JWT and the tokens it was exchanged for
    let p = token(json!({"streamID": id, "viewerId": "viewer-7"}));
    let r = get(h.ports.edge, &p, &[("User-Agent", UA)]).unwrap();
    assert_eq!(r.status, 200);
    let seg = first_edge_uri(&r.text());
    let other_viewer = token(json!({"streamID": id, "viewerId": "viewer-8"}));
    let (s, v, _) = api(
        h,
        "POST",
        "/api/viewers/revoke",
        Some(&jwt),
        Some(json!({"streamID": id, "viewerId": "viewer-7"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        status(h, &p, &[]),
        (403, r#"{"error":"viewer revoked"}"#.into())
    );
    assert_eq!(status(h, &seg, &[]).0, 403);
    assert_eq!(status(h, &other_viewer, &[]).0, 200);
    let dave = login(h, "dave-tokens");
    let (s, _, _) = api(
        h,
        "POST",
        "/api/viewers/revoke",
        Some(&dave),
        Some(json!({"streamID": id, "viewerId": "viewer-8"})),
    );
    assert_eq!(s, 404, "only the owner revokes");
    // maximum resolution: SD leaves the 360 rung of a 1080/720/360 ladder
    let full = token(json!({"streamID": ladder}));
    let (s, body) = status(h, &full, &[]);
    assert_eq!(s, 200);
    assert_eq!(body.matches("#EXT-X-STREAM-INF").count(), 3, "{body}");
    for (cap, left) in [("SD", vec!["640x360"]), ("HD", vec!["1280x720", "640x360"])] {
        let p = token(json!({"streamID": ladder, "maxResolution": cap}));
        let (s, body) = status(h, &p, &[]);
        assert_eq!(s, 200);
        let res: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
            .map(|l| {
                l.split("RESOLUTION=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(res, left, "{cap}: {body}");
        let uris = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(uris, left.len(), "{body}");
        let (ok, err) = ffmpeg_play(&edge_url(h, &p), UA);
        assert!(ok, "{cap}: {err}");
    }
}

#[test]
fn the_admin_sets_and_clears_cookie_mode_cookies() {
    let h = harness();
    let jwt = login(h, "erin-cookies");
    let id = add_stream(h, &jwt, "ts/index.m3u8");
    let (s, v, r) = api(
        h,
        "GET",
        &format!("/api/stream-cookies?streamID={id}&kind=live"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let set = r.set_cookies();
    assert_eq!(set.len(), 3, "{set:?}");
    for c in &set {
        for attr in ["Path=/hls/", "Secure", "HttpOnly", "SameSite=None"] {
            assert!(c.contains(attr), "{c}");
        }
    }
    let cookie = r.cookie_header();
    let url = v["url"].as_str().unwrap();
    let (ok, err) = ffmpeg_play_with(url, UA, &[("Cookie", &cookie)]);
    assert!(ok, "{err}");
    // another user's stream: no cookies
    let other = login(h, "frank-cookies");
    let (s, _, _) = api(
        h,
        "GET",
        &format!("/api/stream-cookies?streamID={id}"),
        Some(&other),
        None,
    );
    assert_eq!(s, 404);
    // the cookies open only this stream
    let (s, _) = status(h, "/hls/fmp4/index.m3u8", &[("Cookie", &cookie)]);
    assert_eq!(s, 403);
    let (s, _, r) = api(h, "POST", "/api/signout", None, None);
    assert_eq!(s, 204);
    let cleared = r.set_cookies();
    assert!(cleared.len() >= 3);
    for c in cleared {
        assert!(c.contains("Max-Age=0") && c.contains("Path=/hls/"), "{c}");
    }
}

#[test]
fn a_host_header_cannot_widen_a_policy() {
    let h = harness();
    let alice = login(h, "alice-host");
    let mine = add_stream(h, &alice, "ts/index.m3u8");
    let bob = login(h, "bob-host");
    let theirs = add_stream(h, &bob, "fmp4/index.m3u8");
    let (s, v, r) = api(
        h,
        "GET",
        &format!("/api/stream-cookies?streamID={mine}"),
        Some(&alice),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let cookie = r.cookie_header();
    let edge = format!("127.0.0.1:{}", h.ports.edge);
    let bobs = format!("/hls/{theirs}/index.m3u8");
    // alice's cookies, a Host that carries her stream's path: refused before any policy
    let spoof = format!("{edge}/hls/{mine}/x");
    let (s, body) = status(h, &bobs, &[("Cookie", &cookie), ("Host", &spoof)]);
    assert_eq!(
        (s, body.as_str()),
        (400, r#"{"error":"invalid Host header"}"#)
    );
    // with an honest Host they open her stream only
    assert_eq!(status(h, &bobs, &[("Cookie", &cookie)]).0, 403);
    let own = format!("/hls/{mine}/index.m3u8");
    assert_eq!(status(h, &own, &[("Cookie", &cookie)]).0, 200);
    for bad in ["a b", "x?y", "x#y", "u@127.0.0.1", "x\\y", ""] {
        let (s, _) = status(h, &own, &[("Cookie", &cookie), ("Host", bad)]);
        assert_eq!(s, 400, "Host {bad:?}");
    }
    // an operator key's URL signed (by botocore) for one stream on a CDN name
    let exp = now() + 300;
    let signed = cf_url(
        h,
        "custom",
        "https://cdn.example.com/hls/ts/index.m3u8",
        exp,
        "https://cdn.example.com/hls/ts/*",
        "-",
    );
    let query = signed.split_once('?').unwrap().1.to_owned();
    let other = format!("/hls/fmp4/index.m3u8?{query}");
    let (s, _) = status(h, &other, &[("Host", "cdn.example.com/hls/ts/x")]);
    assert_eq!(s, 400);
    assert_eq!(status(h, &other, &[("Host", "cdn.example.com")]).0, 403);
    let right = format!("/hls/ts/index.m3u8?{query}");
    assert_eq!(status(h, &right, &[("Host", "cdn.example.com")]).0, 200);
    assert_eq!(status(h, &right, &[("Host", "other.example.com")]).0, 403);
}

/// botocore's CloudFront cookies are checked alike by a second `hlsgate edge` (same store,
/// same key file, the same registered key pair) and by the process an `--upgrade` hands the
/// sockets to: where the CPU has AVX-512 IFMA each is an RSA-2048 check of this crate's
/// own (`token::rsa2048`), parsed from the config by each process; a forged signature and
/// a key pair not registered stay 401 on every one.
#[test]
fn botocore_cookies_are_checked_alike_on_a_second_edge_and_after_an_upgrade() {
    let h = harness();
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::with_streams(dir.join("origin"));
    let streams = format!("streams:\n{}", origin.streams_yaml());
    let keys = format!(
        "  cloudfront:\n    keys:\n      {KEY_PAIR}: \"{}/cf.pub\"\n",
        h.keys.display()
    );
    let (config, ports) = write_config(&dir, "2s", &streams);
    add_config_keys(&config, "tokens", &keys);
    add_config_keys(
        &config,
        "edge",
        &format!("  upgrade_socket: \"{}/upgrade.sock\"\n", dir.display()),
    );
    let store = format!("sqlite://{}/hlsgate.db", dir.display());
    let (config2, ports2) = write_config_with(&dir, "edge2.yaml", "2s", &store, &streams);
    add_config_keys(&config2, "tokens", &keys);
    let serve = Hlsgate::start("serve", &config, ports.edge);
    let edge2 = Hlsgate::start("edge", &config2, ports2.edge);
    let on = |edge: &Hlsgate, cookie: &str| {
        let r = get(
            edge.port,
            "/hls/ts/index.m3u8",
            &[("User-Agent", UA), ("Cookie", cookie)],
        )
        .unwrap();
        (r.status, r.text())
    };
    let exp = now() + 600;
    // Any port of 127.0.0.1 (both edges); one character of the signature changed.
    let resource = "http*://127.0.0.1*/hls/ts/*";
    let good = cf_cookies_with(h, "cf.pem", resource, exp, "-", "-");
    let i = good.find("CloudFront-Signature=").unwrap() + 40;
    let mut forged = good.clone().into_bytes();
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let rogue = cf_cookies_with(h, "rogue.pem", resource, exp, "-", "-");
    let check = |edge: &Hlsgate, which: &str| {
        let (s, body) = on(edge, &good);
        assert_eq!(s, 200, "{which}: {body}");
        assert!(body.starts_with("#EXTM3U"), "{which}: {body}");
        assert_eq!(
            on(edge, &forged),
            (401, r#"{"error":"invalid token signature"}"#.into()),
            "{which}"
        );
        assert_eq!(on(edge, &rogue).0, 401, "{which}");
    };
    check(&serve, "serve");
    check(&edge2, "edge 2");
    let serve = serve.upgraded();
    check(&serve, "after --upgrade");
}
