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
    let cookies: Vec<Value> = resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, c)| {
            let (name, value) = c.split(';').next().unwrap().split_once('=').unwrap();
            json!({"name": name, "value": value, "domain": "127.0.0.1", "path": "/hls/",
                   "secure": true, "httpOnly": true, "sameSite": "None"})
        })
        .collect();
    assert_eq!(cookies.len(), 3);
    let r = play(v["url"].as_str().unwrap(), &Value::Array(cookies));
    assert_eq!(r["result"], "played", "cookie mode: {r}");

    // no token: the player sees the edge's 401 (readable cross-origin)
    let r = play(v["url"].as_str().unwrap(), &json!([]));
    assert_eq!(
        (r["result"].as_str(), r["code"].as_i64()),
        (Some("error"), Some(401)),
        "{r}"
    );
}
