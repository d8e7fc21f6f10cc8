//! The admin web page (`web/`, served by the admin at `/`): its security headers and
//! markup (strict CSP, no inline script or style, nothing that would carry a credential by
//! itself), and the page used in headless Chromium (npm `playwright-core` driving Debian's
//! `chromium`): register, add, edit and play a stream with hls.js for 4 s of media time,
//! see its viewer, copy the playback URL, delete a stream, revoke another session of the
//! same user, sign out — and the playback URL stops.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) hlsgate-admin-page-test";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An origin serving a 12 s ffmpeg VOD at `/movie/index.m3u8` (and `main.m3u8`).
fn movie_origin(dir: &Path) -> Origin {
    let root = dir.join("origin");
    std::fs::create_dir_all(root.join("movie")).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-loglevel", "error"])
        .args("-f lavfi -i testsrc2=size=320x180:rate=25 -f lavfi -i sine -c:v libx264 -preset ultrafast -g 50 -c:a aac -ac 1 -t 12 -f hls -hls_time 2 -hls_playlist_type vod movie/index.m3u8".split(' '))
        .current_dir(&root)
        .output()
        .expect("ffmpeg is installed (scripts/test.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The page edits the stream to this one.
    std::fs::copy(root.join("movie/index.m3u8"), root.join("movie/main.m3u8")).unwrap();
    Origin::start(root)
}

fn serve(dir: &Path, origin: &Origin) -> (Hlsgate, EdgePorts) {
    let (config, ports) = write_config(dir, "5s", "");
    let _ = origin;
    let h = Hlsgate::start("serve", &config, ports.edge);
    (h, ports)
}

#[test]
fn the_page_is_served_with_a_strict_policy_and_no_inline_code() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ports) = write_config(dir.path(), "5s", "");
    let _h = Hlsgate::start("serve", &config, ports.edge);
    let r = get(ports.admin, "/", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap().to_owned();
    for part in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
        &format!("connect-src 'self' http://127.0.0.1:{};", ports.edge),
        "worker-src blob:;",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} not in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // The markup: every script from a file, no inline style or event handler.
    let html = r.text();
    let lower = html.to_ascii_lowercase();
    let scripts: Vec<&str> = lower.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 2);
    for s in scripts {
        let tag = &s[..s.find('>').unwrap()];
        assert!(tag.contains(" src=\"/"), "inline script: <script{tag}>");
        assert!(s[s.find('>').unwrap() + 1..]
            .trim_start()
            .starts_with("</script>"));
    }
    assert!(!lower.contains("<style"), "inline <style>");
    assert!(!lower.contains(" style="), "inline style attribute");
    let handler = lower
        .split(|c: char| c.is_whitespace())
        .find(|w| w.starts_with("on") && w.contains('='));
    assert_eq!(handler, None, "an inline event handler");

    // The assets, as files of the right types; hls.js as npm ships it.
    for (path, ctype, file) in [
        ("/app.js", "text/javascript; charset=utf-8", "web/app.js"),
        ("/app.css", "text/css; charset=utf-8", "web/app.css"),
        (
            "/vendor/hls.min.js",
            "text/javascript; charset=utf-8",
            "web/vendor/hls.min.js",
        ),
    ] {
        let a = get(ports.admin, path, &[]).unwrap();
        assert_eq!(
            (a.status, a.header("content-type")),
            (200, Some(ctype)),
            "{path}"
        );
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.body, std::fs::read(root().join(file)).unwrap(), "{path}");
    }
    let npm = root().join("tests/browser/node_modules/hls.js/dist/hls.min.js");
    assert_eq!(
        std::fs::read(root().join("web/vendor/hls.min.js")).unwrap(),
        std::fs::read(&npm).expect("npm ci in tests/browser (scripts/test.sh does)"),
        "web/vendor/hls.min.js is not npm's hls.js"
    );
    // The script keeps the JWT in memory: no storage, no cookie.
    let js = std::fs::read_to_string(root().join("web/app.js")).unwrap();
    for never in [
        "localStorage",
        "sessionStorage",
        "document.cookie",
        "eval(",
        "innerHTML",
    ] {
        assert!(!js.contains(never), "app.js uses {never}");
    }

    // CSRF: a cross-site form post is refused before anything happens, and nothing works
    // without the bearer token (no ambient cookie credential exists).
    let form = send(
        "POST",
        ports.admin,
        "/api/streams",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "https://evil.example"),
        ],
        Some(b"url=http://x/y.m3u8"),
    )
    .unwrap();
    assert_eq!(form.status, 415);
    let (s, _, _) = api_as(UA, ports.admin, "GET", "/api/streams", None, None);
    assert_eq!(s, 401);
}

#[test]
fn the_page_in_chromium_logs_in_adds_plays_and_signs_out() {
    let dir = tempfile::tempdir().unwrap();
    let origin = movie_origin(dir.path());
    let (_h, ports) = serve(dir.path(), &origin);
    let browser = root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "chromium and tests/browser/node_modules are missing: scripts/test.sh installs them"
    );
    let stream = format!("http://127.0.0.1:{}/movie/index.m3u8", origin.port);
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "node", "admin.mjs"])
        .arg(format!("http://127.0.0.1:{}/", ports.admin))
        .arg(&stream)
        .env("UA", UA)
        .current_dir(&browser);
    if let Ok(d) = std::env::var("SCREENSHOTS") {
        cmd.env("SCREENSHOTS", d);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "admin.mjs said {stdout:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let ctx = format!("{v}\norigin saw: {:?}", origin.requests());
    assert_eq!(v["result"], "done", "{ctx}");
    assert_eq!(
        v["steps"],
        json!([
            "logged in",
            "stream added",
            "stream edited",
            "rules saved",
            "played",
            "copied",
            "stream deleted",
            "session revoked",
            "signed out"
        ]),
        "{ctx}"
    );
    assert_eq!(v["title"], "hlsgate");
    // The rules editor: a refused rule is explained, a good one saved and shown again.
    assert!(
        v["rulesError"]
            .as_str()
            .unwrap()
            .contains("country rules need a country database"),
        "{ctx}"
    );
    assert_eq!(
        v["rules"],
        json!([{"type": "ip.src", "values": "10.0.0.0/8, 192.0.2.7/32", "action": "block"}]),
        "{ctx}"
    );
    assert_eq!(v["referers"], "*.example.com, none", "{ctx}");
    // Played 4 s of media through hls.js, decoded (the video has a size).
    assert!(v["played"]["currentTime"].as_f64().unwrap() >= 4.0, "{ctx}");
    assert_eq!(v["played"]["engine"], "hls.js", "{ctx}");
    assert_eq!(v["played"]["error"], Value::Null, "{ctx}");
    assert_eq!(
        (
            v["played"]["width"].as_u64(),
            v["played"]["height"].as_u64()
        ),
        (Some(320), Some(180))
    );
    // The edge reported this browser as a viewer of the stream.
    assert!(v["viewers"].as_u64().unwrap() >= 1, "{ctx}");
    // The playback URL: the edge's, with a token, copied as shown.
    let url = v["playbackUrl"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/api/hls/", ports.edge))
            && url.ends_with("/1/main.m3u8"),
        "{url}"
    );
    // "Copy URL" asks for a fresh one (a new token of the same session): the same shape.
    let copied = v["copied"].as_str().unwrap();
    assert!(
        copied.starts_with(&url[..url.find("/api/hls/").unwrap() + 9]),
        "{copied}"
    );
    assert!(copied.ends_with("/1/main.m3u8"), "{copied}");
    // The other session worked until the page revoked it.
    assert_eq!(
        (v["otherBefore"].as_u64(), v["otherAfter"].as_u64()),
        (Some(200), Some(401)),
        "{ctx}"
    );
    // The JWT was nowhere but in the script's memory.
    assert_eq!(
        v["stored"],
        json!({"local": 0, "session": 0, "cookie": "", "url": format!("http://127.0.0.1:{}/", ports.admin)})
    );
    assert_eq!(v["cookies"], 0);
    // Before sign-out the URL plays; after it, the edge refuses it (session ended).
    assert_eq!(v["before"]["status"], 200, "{ctx}");
    assert_eq!(v["after"]["status"], 403, "{ctx}");
    assert!(
        v["after"]["body"].as_str().unwrap().contains("error"),
        "{ctx}"
    );
    assert!(v["stoppedAfterMs"].as_u64().unwrap() <= 15000);
    assert_eq!(
        v["videoAfterSignout"],
        json!({"src": null, "readyState": 0, "hidden": true}),
        "{ctx}"
    );
    // No CSP violation, script error or failed load in the page's console: only the 400
    // of the refused country rule and the 403 of the test's own probe after sign-out.
    assert_eq!(
        v["console"],
        json!([
            "Failed to load resource: the server responded with a status of 400 (Bad Request)",
            "Failed to load resource: the server responded with a status of 403 (Forbidden)"
        ]),
        "{ctx}"
    );
}
