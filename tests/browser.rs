//! A real browser player: hls.js (npm, served locally) in headless Chromium (Debian's
//! `chromium`, driven by npm `playwright-core`) plays streams through `hlsgate serve` from a
//! page on another port, so every request is cross-origin and the origin (a loopback
//! server sending no CORS headers) is never asked about CORS: the edge answers. Path mode,
//! JWT mode and cookie mode (the admin's Set-Cookie, `crossorigin="use-credentials"`) play;
//! without a token the player gets the edge's 401.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) hlsgate-browser-test";

/// Run `tests/browser/play.mjs` for `url` (with cookies): its JSON verdict.
fn play(url: &str, cookies: &Value) -> Value {
    play_with(url, cookies, None)
}

/// [`play`] with the page served over HTTPS with `tls` (certificate and key PEM files, a
/// test's self-signed pair, which the browser is told to trust).
fn play_with(url: &str, cookies: &Value, tls: Option<(&Path, &Path)>) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "chromium and tests/browser/node_modules are missing: scripts/test.sh installs them \
         (apt-get install chromium; npm ci in tests/browser)"
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "node", "play.mjs", url])
        .env("UA", UA)
        .current_dir(&dir);
    if let Some((cert, key)) = tls {
        cmd.env("IGNORE_TLS", "1")
            .env("PAGE_TLS", format!("{}:{}", cert.display(), key.display()));
    }
    if cookies.as_array().is_some_and(|a| !a.is_empty()) {
        cmd.arg(cookies.to_string());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "play.mjs said {stdout:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The admin's `Set-Cookie`s as the browser keeps them (playwright's cookie objects).
fn browser_cookies(resp: &Response) -> Value {
    let cookies: Vec<Value> = resp
        .set_cookies()
        .iter()
        .map(|c| {
            let (name, value) = c.split(';').next().unwrap().split_once('=').unwrap();
            json!({"name": name, "value": value, "domain": "127.0.0.1", "path": "/hls/",
                   "secure": true, "httpOnly": true, "sameSite": "None"})
        })
        .collect();
    assert_eq!(cookies.len(), 3);
    Value::Array(cookies)
}

fn api(
    port: u16,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Response) {
    api_as(UA, port, method, path, jwt, body)
}

#[test]
fn hls_js_in_chromium_plays_path_jwt_and_cookie_mode_cross_origin() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(dir.path().join("origin"));
    let (config, ports) = write_config(
        dir.path(),
        "2s",
        &format!("streams:\n{}", origin.streams_yaml()),
    );
    add_config_keys(
        &config,
        "edge",
        "  cors:\n    allow_origins: [\"http://127.0.0.1:*\"]\n",
    );
    let _serve = Hlsgate::start("serve", &config, ports.edge);
    let a = ports.admin;
    let creds = json!({"username": "viewer", "password": "correct horse battery"});
    assert_eq!(
        api(a, "POST", "/api/register", None, Some(creds.clone())).0,
        201
    );
    let (_, v, _) = api(a, "POST", "/api/login", None, Some(creds));
    let jwt = v["token"].as_str().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{}/fmp4/index.m3u8", origin.port);
    let (s, v, _) = api(
        a,
        "POST",
        "/api/streams",
        Some(&jwt),
        Some(json!({ "url": url })),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().unwrap();

    // path mode: the seed's playback URL (bound to this User-Agent and address)
    let (_, v, _) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
    );
    let r = play(v["url"].as_str().unwrap(), &json!([]));
    assert_eq!(r["result"], "played", "path mode: {r}");

    // JWT mode, with the page's origin allowed by the token
    let (_, v, _) = api(
        a,
        "POST",
        "/api/playback-token",
        Some(&jwt),
        Some(json!({"streamID": id})),
    );
    let r = play(v["url"].as_str().unwrap(), &json!([]));
    assert_eq!(r["result"], "played", "jwt mode: {r}");

    // cookie mode: the admin's cookies as the browser would keep them
    let (s, v, resp) = api(
        a,
        "GET",
        &format!("/api/stream-cookies?streamID={id}"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let cookies = browser_cookies(&resp);
    let r = play(v["url"].as_str().unwrap(), &cookies);
    assert_eq!(r["result"], "played", "cookie mode: {r}");

    // no token: the player sees the edge's 401 (readable cross-origin)
    let r = play(v["url"].as_str().unwrap(), &json!([]));
    assert_eq!(
        (r["result"].as_str(), r["code"].as_i64()),
        (Some("error"), Some(401)),
        "{r}"
    );
}

/// Browsers speak HTTP/2 over TLS and send `:authority`, never `Host`: cookie mode's policy
/// must be matched against it. hls.js in Chromium, on an HTTPS page of the same host (so
/// the cookies are first-party), plays the admin's cookies through the edge's TLS listener
/// (ALPN h2), and the access log shows those requests were h2.
#[test]
fn cookie_mode_plays_in_chromium_over_tls_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::with_streams(dir.path().join("origin"));
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let (config, ports) = write_config(d, "2s", "streams: {}\n");
    let tls = free_port();
    let log = d.join("access.log");
    add_config_keys(
        &config,
        "edge",
        &format!(
            "  cors:\n    allow_origins: [\"https://127.0.0.1:*\"]\n  tls:\n    listen: \"127.0.0.1:{tls}\"\n    cert: \"{}\"\n    key: \"{}\"\n  access_log: \"{}\"\n",
            d.join("c.pem").display(),
            d.join("k.pem").display(),
            log.display()
        ),
    );
    // the admin issues cookie-mode URLs (and policies) for the TLS listener
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("public_edge_url: \"http://127.0.0.1:{}\"", ports.edge),
        &format!("public_edge_url: \"https://127.0.0.1:{tls}\""),
    );
    std::fs::write(&config, text).unwrap();
    let _serve = Hlsgate::start("serve", &config, ports.edge);
    let jwt = login_as(UA, ports.admin, "h2-viewer");
    let url = format!("http://127.0.0.1:{}/fmp4/index.m3u8", origin.port);
    let id = add_stream_as(UA, ports.admin, &jwt, &url);
    let (s, v, resp) = api(
        ports.admin,
        "GET",
        &format!("/api/stream-cookies?streamID={id}"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let url = v["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{tls}/hls/")),
        "{url}"
    );
    let pair = (d.join("c.pem"), d.join("k.pem"));
    let r = play_with(url, &browser_cookies(&resp), Some((&pair.0, &pair.1)));
    assert_eq!(r["result"], "played", "cookie mode over TLS: {r}");
    // the access log is written every 100 ms
    std::thread::sleep(std::time::Duration::from_millis(400));
    let lines = std::fs::read_to_string(&log).unwrap();
    let playlist = format!("GET /hls/{id}/index.m3u8 200 ");
    assert!(
        lines
            .lines()
            .any(|l| l.contains(&playlist) && l.contains("proto=h2+tls")),
        "{lines}"
    );
}
