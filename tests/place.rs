//! Where and on how many screens: access rules (Cloudflare Stream's shape) per static stream,
//! per store stream and inside credentials, a stream's referrers, the viewer's country from a
//! MaxMind-format database that PyPI's `mmdb-writer` makes (no database is downloaded), and
//! screens per account — on `hlsgate serve` and a second `hlsgate edge` sharing its store and
//! key file, played by ffmpeg.
//!
//! Viewers' addresses come from `X-Forwarded-For` (the edges trust 127.0.0.1 as a proxy):
//! 127.0.0.2 is in DE, 127.0.0.3 in US, 127.0.0.4 in FR; anything else is unknown (XX).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const UA: &str = "hlsgate-place/1.0";
const DE: (&str, &str) = ("X-Forwarded-For", "127.0.0.2");
const US: (&str, &str) = ("X-Forwarded-For", "127.0.0.3");
const FR: (&str, &str) = ("X-Forwarded-For", "127.0.0.4");
const COUNTRIES: [&str; 3] = ["127.0.0.2/32=DE", "127.0.0.3/32=US", "127.0.0.4/32=FR"];

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python")
}

fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

/// Write `out` with PyPI's mmdb-writer.
fn make_mmdb(out: &Path, pairs: &[&str]) {
    let o = Command::new(venv_python())
        .arg(helper("make_mmdb.py"))
        .arg(out)
        .args(pairs)
        .output()
        .expect("target/pyvenv with mmdb-writer (scripts/test.sh makes it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A JWT signed by PyJWT.
fn pyjwt(key: &Path, claims: Value) -> String {
    let o = Command::new(venv_python())
        .arg(helper("sign_jwt.py"))
        .arg(key)
        .arg("ES384")
        .arg("ivs")
        .arg(claims.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Harness {
    dir: PathBuf,
    serve: Hlsgate,
    edge2: Hlsgate,
    ports: EdgePorts,
    origin: Origin,
}

/// The YAML both edges share beyond their listeners: the database, trusted proxy, a
/// registered ES384 JWT key, token binding to the /24 (so one viewer may move between the
/// test's countries), and the streams: `ts` blocks DE, `open` has no rules, `embed` wants a
/// page of example.com.
fn extra(dir: &Path, origin: &Origin) -> String {
    let o = origin.port;
    format!(
        r#"geoip:
  database: "{dir}/countries.mmdb"
streams:
  ts:
    url: "http://127.0.0.1:{o}/ts/index.m3u8"
    access_rules:
      - {{type: ip.geoip.country, country: [DE], action: block}}
  open: {{ url: "http://127.0.0.1:{o}/ts/index.m3u8" }}
  embed:
    url: "http://127.0.0.1:{o}/ts/index.m3u8"
    referers: ["*.example.com", "player.example.net/embed/*"]
"#,
        dir = dir.display()
    )
}

/// Keys each config needs in its sections.
fn set_up(config: &Path, dir: &Path) {
    add_config_keys(
        config,
        "edge",
        "  trusted_proxies: [\"127.0.0.1/32\"]\n  access_log: \"stderr\"\n",
    );
    add_config_keys(
        config,
        "tokens",
        &format!(
            "  bind_ipv4_prefix: 24\n  jwt:\n    keys:\n      ivs: \"{}/es384.pub\"\n",
            dir.display()
        ),
    );
}

/// A config `name` in `dir` for an edge on `store`, with [`extra`] and [`set_up`]'s keys.
fn config_in(dir: &Path, name: &str, store: &str, origin: &Origin) -> (PathBuf, EdgePorts) {
    let (config, ports) = write_config_with(dir, name, "2s", store, &extra(dir, origin));
    set_up(&config, dir);
    (config, ports)
}

fn sqlite_in(dir: &Path) -> String {
    format!("sqlite://{}/hlsgate.db", dir.display())
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let origin = Origin::with_streams(dir.join("origin"));
        let mmdb = dir.join("countries.mmdb");
        make_mmdb(&mmdb, &COUNTRIES);
        openssl(
            &dir,
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "es384.sec",
            ],
        );
        openssl(
            &dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "es384.sec",
                "-out",
                "es384.pem",
            ],
        );
        openssl(
            &dir,
            &["ec", "-in", "es384.pem", "-pubout", "-out", "es384.pub"],
        );
        let (config, ports) = config_in(&dir, "hlsgate.yaml", &sqlite_in(&dir), &origin);
        let (config2, ports2) = config_in(&dir, "edge2.yaml", &sqlite_in(&dir), &origin);
        let serve = Hlsgate::start("serve", &config, ports.edge);
        let edge2 = Hlsgate::start("edge", &config2, ports2.edge);
        Harness {
            dir,
            serve,
            edge2,
            ports,
            origin,
        }
    })
}

/// `POST /api/playback-token` as `jwt`'s user on the admin at `port`: `(status, answer)`.
fn playback_token(port: u16, jwt: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = api_as(
        UA,
        port,
        "POST",
        "/api/playback-token",
        Some(jwt),
        Some(body),
    );
    (s, v)
}

/// `(status, body)` of a GET on `edge`.
fn on(edge: &Hlsgate, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut hs = vec![("User-Agent", UA)];
    hs.extend_from_slice(headers);
    let r = get(edge.port, path, &hs).unwrap();
    (r.status, r.text())
}

fn url_on(edge: &Hlsgate, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", edge.port)
}

fn denials(h: &Harness, reason: &str) -> f64 {
    let m = get(h.ports.metrics, "/metrics", &[]).unwrap().text();
    sample(
        &m,
        &format!("hlsgate_auth_denials_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn a_blocked_country_is_refused_and_an_allowed_one_plays_on_every_edge() {
    let h = harness();
    let before = denials(h, "country");
    let p = path_of(&h.serve.token_url(&["--stream", "ts"]));
    for edge in [&h.serve, &h.edge2] {
        let (s, body) = on(edge, &p, &[DE]);
        assert_eq!(
            (s, body.as_str()),
            (403, r#"{"error":"not allowed from this country"}"#)
        );
        // Played to the end by ffmpeg from the US and from an address the database does
        // not know.
        for from in [US, ("X-Forwarded-For", "127.0.0.77")] {
            let (ok, err) = ffmpeg_play_with(&url_on(edge, &p), UA, &[from]);
            assert!(ok, "{from:?}: {err}");
        }
    }
    assert!(denials(h, "country") >= before + 1.0);
    // The access log names the viewer's country, refused or not.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let log = h.serve.log_text();
        let refused = log.lines().any(|l| {
            l.contains(" 403 ") && l.contains("deny=country") && l.contains(" country=DE ")
        });
        let played = log
            .lines()
            .any(|l| l.contains(" 200 ") && l.contains(" country=US "));
        if refused && played {
            break;
        }
        assert!(Instant::now() < deadline, "access log:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_jwts_access_rules_narrow_the_streams_and_never_widen_them() {
    let h = harness();
    let key = h.dir.join("es384.pem");
    let claims = |stream: &str, rules: Value| {
        json!({"aws:channel-arn": format!("arn:aws:ivs:us-west-2:1:channel/{stream}"),
               "exp": unix() + 300, "accessRules": rules})
    };
    // Narrowing: `open` allows everyone; this token blocks the US.
    let no_us = pyjwt(
        &key,
        claims(
            "open",
            json!([{"type": "ip.geoip.country", "country": ["US"], "action": "block"}]),
        ),
    );
    let p = format!("/hls/open/index.m3u8?token={no_us}");
    assert_eq!(on(&h.serve, &p, &[US]).0, 403);
    assert_eq!(on(&h.edge2, &p, &[US]).0, 403);
    let (ok, err) = ffmpeg_play_with(&url_on(&h.serve, &p), UA, &[FR]);
    assert!(ok, "{err}");
    // The native token exchanged on edge 1 carries the rules: edge 2, which never saw the
    // JWT, refuses it from the US (same /24, so the binding holds) and serves it from FR.
    let (s, playlist) = on(&h.serve, &p, &[FR]);
    assert_eq!(s, 200, "{playlist}");
    let seg = first_edge_uri(&playlist);
    assert_eq!(on(&h.edge2, &seg, &[FR]).0, 200);
    let (s, body) = on(&h.edge2, &seg, &[US]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"not allowed from this country"}"#)
    );
    // Networks too.
    let one_net = pyjwt(
        &key,
        claims(
            "open",
            json!([{"type": "ip.src", "ip": ["127.0.0.4/32"], "action": "allow"},
                   {"type": "any", "action": "block"}]),
        ),
    );
    let p = format!("/hls/open/index.m3u8?token={one_net}");
    let (s, playlist) = on(&h.serve, &p, &[FR]);
    assert_eq!(s, 200, "{playlist}");
    let (s, body) = on(&h.serve, &p, &[("X-Forwarded-For", "127.0.0.9")]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"not allowed from this network"}"#)
    );
    // The network rule travels in the exchanged token too: edge 2 refuses it elsewhere.
    let seg = first_edge_uri(&playlist);
    assert_eq!(on(&h.edge2, &seg, &[FR]).0, 200);
    let (s, body) = on(&h.edge2, &seg, &[("X-Forwarded-For", "127.0.0.9")]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"not allowed from this network"}"#)
    );
    // Never widening: `ts` blocks DE; a token allowing everyone does not let DE in.
    let all = pyjwt(
        &key,
        claims("ts", json!([{"type": "any", "action": "allow"}])),
    );
    let p = format!("/hls/ts/index.m3u8?token={all}");
    assert_eq!(on(&h.serve, &p, &[DE]).0, 403);
    assert_eq!(on(&h.serve, &p, &[US]).0, 200);
    // Rules the edge cannot read make the token malformed: refused, not ignored.
    let bad = pyjwt(
        &key,
        claims(
            "open",
            json!([{"type": "ip.geoip.region", "region": ["CA"], "action": "block"}]),
        ),
    );
    assert_eq!(
        on(
            &h.serve,
            &format!("/hls/open/index.m3u8?token={bad}"),
            &[US]
        )
        .0,
        401
    );
}

#[test]
fn referers_admit_listed_pages_only() {
    let h = harness();
    let p = path_of(&h.serve.token_url(&["--stream", "embed"]));
    for (referer, want) in [
        ("https://www.example.com/live", 200),
        ("https://player.example.net/embed/7", 200),
        ("https://player.example.net/other", 403),
        ("https://evil.example/?www.example.com", 403),
    ] {
        let (s, body) = on(&h.edge2, &p, &[("Referer", referer)]);
        assert_eq!(s, want, "{referer}: {body}");
    }
    let (s, body) = on(&h.edge2, &p, &[]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"not allowed from this page (Referer)"}"#)
    );
    let (ok, err) = ffmpeg_play_opts(
        &url_on(&h.serve, &p),
        UA,
        &[],
        &["-referer", "https://www.example.com/"],
    );
    assert!(ok, "{err}");
}

#[test]
fn a_users_stream_rules_are_set_in_the_admin_and_apply_on_every_edge() {
    let h = harness();
    let jwt = login_as(UA, h.ports.admin, "rita-place");
    let url = format!("http://127.0.0.1:{}/ts/index.m3u8", h.origin.port);
    let (s, v, _) = api_as(
        UA,
        h.ports.admin,
        "POST",
        "/api/streams",
        Some(&jwt),
        Some(json!({"url": url, "accessRules": [
            {"type": "ip.geoip.country", "country": ["fr"], "action": "block"}],
            "referers": []})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["accessRules"],
        json!([{"type": "ip.geoip.country", "country": ["FR"], "action": "block"}])
    );
    let id = v["id"].as_i64().unwrap();
    // Bad rules change nothing.
    for bad in [
        json!({"accessRules": [{"type": "ip.src", "ip": ["300.1.1.1"], "action": "allow"}]}),
        json!({"accessRules": [{"type": "any", "action": "maybe"}]}),
        json!({"referers": ["https://scheme.example"]}),
    ] {
        let (s, v, _) = api_as(
            UA,
            h.ports.admin,
            "PUT",
            &format!("/api/streams/{id}"),
            Some(&jwt),
            Some(bad),
        );
        assert_eq!(s, 400, "{v}");
    }
    let (s, v, _) = api_as(
        UA,
        h.ports.admin,
        "GET",
        &format!("/api/streams/{id}"),
        Some(&jwt),
        None,
    );
    assert_eq!(
        (s, v["accessRules"][0]["country"][0].as_str()),
        (200, Some("FR")),
        "{v}"
    );
    let (s, v) = playback_token(h.ports.admin, &jwt, json!({"streamID": id}));
    assert_eq!(s, 200, "{v}");
    let p = path_of(v["url"].as_str().unwrap());
    for edge in [&h.serve, &h.edge2] {
        assert_eq!(on(edge, &p, &[FR]).0, 403);
        assert_eq!(on(edge, &p, &[US]).0, 200);
    }
    // Changed: now the US is blocked and FR allowed, on edge 2 within store.cache_ttl.
    let (s, v, _) = api_as(
        UA,
        h.ports.admin,
        "PUT",
        &format!("/api/streams/{id}"),
        Some(&jwt),
        Some(json!({"accessRules": [
            {"type": "ip.geoip.country", "country": ["US"], "action": "block"}]})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["url"].as_str(), Some(url.as_str()), "the URL is kept");
    let t = Instant::now();
    while on(&h.edge2, &p, &[US]).0 != 403 {
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "edge 2 still admits US"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(on(&h.serve, &p, &[US]).0, 403);
    assert_eq!(on(&h.edge2, &p, &[FR]).0, 200);
    // The admin's own token and cookies take rules too, and they only narrow.
    let (s, v) = playback_token(
        h.ports.admin,
        &jwt,
        json!({"streamID": id, "accessRules": [
            {"type": "ip.src", "ip": ["127.0.0.4/32"], "action": "block"}]}),
    );
    assert_eq!(s, 200, "{v}");
    let p = path_of(v["url"].as_str().unwrap());
    assert_eq!(on(&h.edge2, &p, &[FR]).0, 403);
    assert_eq!(on(&h.edge2, &p, &[("X-Forwarded-For", "127.0.0.8")]).0, 200);
    // Rules too big for a token are refused when asked for, not at the edge later.
    let nets: Vec<String> = (0..40).map(|i| format!("2001:db8:{i:x}::/48")).collect();
    let (s, v) = playback_token(
        h.ports.admin,
        &jwt,
        json!({"streamID": id, "accessRules": [
            {"type": "ip.src", "ip": nets, "action": "block"}]}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("bytes in a token"),
        "{v}"
    );
    let rules = r#"[{"type":"ip.geoip.country","country":["XX"],"action":"block"}]"#;
    let q: String = url_encode(rules);
    let cookies_path = format!("/api/stream-cookies?streamID={id}&accessRules={q}");
    let auth = format!("Bearer {jwt}");
    let cookies = || {
        send(
            "GET",
            h.ports.admin,
            &cookies_path,
            &[("User-Agent", UA), ("Authorization", &auth)],
            None,
        )
        .unwrap()
    };
    let r = cookies();
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r.cookie_header();
    // Each set is a viewer session of its own, even two asked for at once.
    let again = cookies();
    let policy = |c: &str| {
        c.split("; ")
            .find(|kv| kv.starts_with("CloudFront-Policy="))
            .map(str::to_owned)
    };
    assert_ne!(policy(&again.cookie_header()), policy(&cookie));
    let v: Value = serde_json::from_str(&r.text()).unwrap();
    let p = path_of(v["url"].as_str().unwrap());
    let (s, _) = on(
        &h.serve,
        &p,
        &[("Cookie", &cookie), ("X-Forwarded-For", "127.0.0.8")],
    );
    assert_eq!(s, 403, "unknown country (XX) blocked by the cookies' rules");
    assert_eq!(on(&h.serve, &p, &[("Cookie", &cookie), FR]).0, 200);
}

/// Percent-encode everything but unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn a_changed_database_file_is_read_again() {
    let h = harness();
    // An edge of its own: its database file is broken for a while below.
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::copy(h.dir.join("es384.pub"), dir.join("es384.pub")).unwrap();
    let mmdb = dir.join("countries.mmdb");
    make_mmdb(&mmdb, &COUNTRIES);
    let (config, ports) = config_in(&dir, "hlsgate.yaml", &sqlite_in(&dir), &h.origin);
    let mut edge = Hlsgate::start("edge", &config, ports.edge);
    let p = path_of(&edge.token_url(&["--stream", "ts"]));
    let newly_de = ("X-Forwarded-For", "127.0.0.5");
    assert_eq!(on(&edge, &p, &[newly_de]).0, 200);
    let mut pairs = COUNTRIES.to_vec();
    pairs.push("127.0.0.5/32=DE");
    make_mmdb(&mmdb, &pairs);
    let t = Instant::now();
    while on(&edge, &p, &[newly_de]).0 != 403 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new database is not used"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("new database in use after {:?}", t.elapsed());
    // A broken file is logged and the last good database kept.
    std::fs::write(dir.join("broken.tmp"), b"not a database").unwrap();
    std::fs::rename(dir.join("broken.tmp"), &mmdb).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(on(&edge, &p, &[newly_de]).0, 403);
    assert_eq!(on(&edge, &p, &[US]).0, 200);
    assert!(edge
        .log_text()
        .contains("does not load; keeping the previous one"));
    // SIGHUP reads it again too: refused while it is broken (the old one keeps serving),
    // taken once it is good.
    edge.signal("HUP");
    let t = Instant::now();
    while !edge.log_text().contains("config reload refused") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", edge.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(on(&edge, &p, &[newly_de]).0, 403);
    make_mmdb(&mmdb, &COUNTRIES);
    edge.signal("HUP");
    let t = Instant::now();
    while on(&edge, &p, &[newly_de]).0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", edge.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(edge.log_text().contains("config reloaded"));
}

/// After `--upgrade`, the new process applies the stream's rules and the rules inside tokens
/// issued before it started.
#[test]
fn rules_hold_after_an_upgrade() {
    let h = harness();
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::copy(h.dir.join("es384.pub"), dir.join("es384.pub")).unwrap();
    make_mmdb(&dir.join("countries.mmdb"), &COUNTRIES);
    let (config, ports) = config_in(&dir, "hlsgate.yaml", &sqlite_in(&dir), &h.origin);
    add_config_keys(
        &config,
        "edge",
        &format!("  upgrade_socket: \"{}/upgrade.sock\"\n", dir.display()),
    );
    add_config_keys(&config, "admin", "  max_screens_per_user: 1\n");
    let old = Hlsgate::start("serve", &config, ports.edge);
    // One screen for this account, taken before the hand-over.
    let login = login_as(UA, ports.admin, "una-upgrade");
    let id = add_stream_as(
        UA,
        ports.admin,
        &login,
        &format!("http://127.0.0.1:{}/ts/index.m3u8", h.origin.port),
    );
    let screen = |n: u32| {
        let (s, v) = playback_token(ports.admin, &login, json!({ "streamID": id }));
        assert_eq!(s, 200, "screen {n}: {v}");
        path_of(v["url"].as_str().unwrap())
    };
    let (first, second) = (screen(1), screen(2));
    let (s, first_playlist) = on(&old, &first, &[]);
    assert_eq!(s, 200, "{first_playlist}");
    let embed = path_of(&old.token_url(&["--stream", "embed"]));
    let jwt = pyjwt(
        &h.dir.join("es384.pem"),
        json!({"aws:channel-arn": "arn:aws:ivs:us-west-2:1:channel/open", "exp": unix() + 300,
               "accessRules": [{"type": "ip.geoip.country", "country": ["FR"], "action": "allow"},
                               {"type": "any", "action": "block"}]}),
    );
    let (s, playlist) = on(&old, &format!("/hls/open/index.m3u8?token={jwt}"), &[FR]);
    assert_eq!(s, 200, "{playlist}");
    let seg = first_edge_uri(&playlist);
    let native = path_of(&old.token_url(&["--stream", "ts"]));

    let new = old.upgraded();
    assert_eq!(on(&new, &seg, &[FR]).0, 200);
    let (s, body) = on(&new, &seg, &[US]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"not allowed from this country"}"#)
    );
    assert_eq!(on(&new, &native, &[DE]).0, 403);
    let (ok, err) = ffmpeg_play_with(&url_on(&new, &native), UA, &[US]);
    assert!(ok, "{err}");
    // Referrers, from the config the new process read.
    assert_eq!(
        on(&new, &embed, &[("Referer", "https://evil.example/")]).0,
        403
    );
    assert_eq!(
        on(&new, &embed, &[("Referer", "https://a.example.com/")]).0,
        200
    );
    // Screens, from the store: the new process, which never saw the first screen, still
    // counts it; the first plays on.
    let (s, body) = on(&new, &second, &[]);
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("every screen of this account is in use"),
        "{body}"
    );
    assert_eq!(on(&new, &first_edge_uri(&first_playlist), &[]).0, 200);
}

/// A 3-screen account: three ffmpeg viewers play (on two edges), the fourth is refused;
/// in `end_oldest` mode the fourth plays and the first one's next segment is refused. On
/// SQLite and on PostgreSQL (where the two edges' claims take turns on the account's row).
fn an_account_plays_on_at_most_its_screens(backend: Backend) {
    let h = harness();
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::copy(h.dir.join("es384.pub"), dir.join("es384.pub")).unwrap();
    make_mmdb(&dir.join("countries.mmdb"), &COUNTRIES);
    let db = TestDb::new(backend, &dir);
    let (config, ports) = config_in(&dir, "hlsgate.yaml", &db.url, &h.origin);
    let (config2, ports2) = config_in(&dir, "edge2.yaml", &db.url, &h.origin);
    for c in [&config, &config2] {
        add_config_keys(
            c,
            "admin",
            "  max_screens_per_user: 3\n  trusted_backends: [\"127.0.0.1/32\"]\n",
        );
    }
    let mut serve = Hlsgate::start("serve", &config, ports.edge);
    let mut edge2 = Hlsgate::start("edge", &config2, ports2.edge);
    let jwt = login_as(UA, ports.admin, "sam-screens");
    let url = format!("http://127.0.0.1:{}/ts/index.m3u8", h.origin.port);
    let id = add_stream_as(UA, ports.admin, &jwt, &url);
    // Asked for in the same second: each token is a viewer session (a screen) of its own.
    let token = || {
        let (s, v) = playback_token(ports.admin, &jwt, json!({"streamID": id}));
        assert_eq!(s, 200, "{v}");
        path_of(v["url"].as_str().unwrap())
    };
    let viewers: Vec<String> = (1..=4).map(|_| token()).collect();
    for (i, p) in viewers[..3].iter().enumerate() {
        let edge = if i == 2 { &edge2 } else { &serve };
        let (ok, err) = ffmpeg_play(&url_on(edge, p), UA);
        assert!(ok, "viewer {}: {err}", i + 1);
    }
    let (ok, err) = ffmpeg_play(&url_on(&edge2, &viewers[3]), UA);
    assert!(!ok && err.contains("403"), "the 4th screen played: {err}");
    let (s, body) = on(&serve, &viewers[3], &[]);
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("every screen of this account is in use"),
        "{body}"
    );
    // A full account's new sessions are refused for a second without a store
    // transaction each: 20 more asks, at most a claim or two.
    let claims = || {
        let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
        m.lines()
            .filter(|l| {
                l.starts_with("hlsgate_store_queries_total{") && l.contains("what=\"claim_screen\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let before = claims();
    for _ in 0..20 {
        assert_eq!(on(&serve, &viewers[3], &[]).0, 403);
    }
    assert!(claims() - before <= 2.0, "{} claims", claims() - before);
    let (s, v, _) = api_as(UA, ports.admin, "GET", "/api/screens", Some(&jwt), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["max"].as_u64(), v["screens"].as_array().map(Vec::len)),
        (Some(3), Some(3)),
        "{v}"
    );
    // The first viewer still plays: its screen is its own.
    let (s, first) = on(&serve, &viewers[0], &[]);
    assert_eq!(s, 200, "{first}");
    let first_seg = first_edge_uri(&first);

    // The account's own limit is the platform's to set (its backend is one of
    // admin.trusted_backends, as for X-Viewer-IP), not the viewer's.
    let set = |port: u16, jwt: &str, max: Value| {
        api_as(
            UA,
            port,
            "PUT",
            "/api/screens",
            Some(jwt),
            Some(json!({ "max": max })),
        )
    };
    let other = login_as(UA, h.ports.admin, "vic-screens");
    let (s, v, _) = set(h.ports.admin, &other, json!(9));
    assert_eq!(s, 403, "{v}");
    let (s, v, _) = set(ports.admin, &jwt, json!(4));
    assert_eq!(
        (s, v["max"].as_u64(), v["own"].as_u64()),
        (200, Some(4), Some(4)),
        "{v}"
    );
    // (the edges remember a full account for a second)
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, err) = ffmpeg_play(&url_on(&serve, &viewers[3]), UA);
    assert!(ok, "a 4-screen plan's 4th screen: {err}");
    let (s, v, _) = set(ports.admin, &jwt, Value::Null);
    assert_eq!((s, v["max"].as_u64()), (200, Some(3)), "{v}");
    assert_eq!(v["screens"].as_array().map(Vec::len), Some(4), "{v}");

    // end_oldest: a 5th plays and the oldest two (4 in use, 3 allowed again) are ended on
    // every edge.
    for (g, c) in [(&mut serve, &config), (&mut edge2, &config2)] {
        add_config_keys(c, "admin", "  screens_full: end_oldest\n");
        g.signal("HUP");
    }
    let t = Instant::now();
    loop {
        let log = serve.log_text() + &edge2.log_text();
        if log.matches("config reloaded").count() >= 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fifth = token();
    let (ok, err) = ffmpeg_play(&url_on(&edge2, &fifth), UA);
    assert!(ok, "5th screen in end_oldest mode: {err}");
    let (s, body) = on(&edge2, &first_seg, &[]);
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("a newer screen of this account took its place"),
        "{body}"
    );
    let t = Instant::now();
    while on(&serve, &first_seg, &[]).0 != 403 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "edge 1 still serves the ended screen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, v, _) = api_as(UA, ports.admin, "GET", "/api/screens", Some(&jwt), None);
    let ended: Vec<(&str, &str)> = v["ended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap(),
                e["endedReason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ended.len(), 2, "{v}");
    assert!(ended.iter().all(|(_, why)| *why == "screens"), "{v}");
    assert_eq!(v["screens"].as_array().map(Vec::len), Some(3), "{v}");
    // The second viewer was ended too; the third plays on.
    let (_, second) = on(&serve, &viewers[1], &[]);
    assert!(second.contains("a newer screen"), "{second}");
    let (ok, err) = ffmpeg_play(&url_on(&serve, &viewers[2]), UA);
    assert!(ok, "the 3rd screen: {err}");
    let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
    assert!(sample(&m, "hlsgate_auth_denials_total{reason=\"screens\"}") >= 1.0);
}

both!(an_account_plays_on_at_most_its_screens);

/// `X-Forwarded-For` buys no country from a peer that is not a trusted proxy: the TCP
/// peer's address is judged.
#[test]
fn a_forwarded_address_from_an_untrusted_peer_is_not_believed() {
    let h = harness();
    let dir = tempfile::tempdir().unwrap().keep();
    make_mmdb(&dir.join("countries.mmdb"), &COUNTRIES);
    let o = h.origin.port;
    let streams = format!(
        "geoip:\n  database: \"{}/countries.mmdb\"\nstreams:\n  us:\n    url: \"http://127.0.0.1:{o}/ts/index.m3u8\"\n    access_rules:\n      - {{type: ip.geoip.country, country: [US], action: allow}}\n      - {{type: any, action: block}}\n",
        dir.display()
    );
    let (config, ports) = write_config_with(&dir, "hlsgate.yaml", "2s", &sqlite_in(&dir), &streams);
    let edge = Hlsgate::start("edge", &config, ports.edge);
    let p = path_of(&edge.token_url(&["--stream", "us"]));
    // edge.trusted_proxies is empty: the viewer is 127.0.0.1 (XX), whatever it claims.
    let (s, body) = on(&edge, &p, &[US]);
    assert_eq!(
        (s, body.as_str()),
        (403, r#"{"error":"not allowed from this country"}"#)
    );
    // Where 127.0.0.1 is a trusted proxy (the shared edges), the forwarded address is
    // believed: DE is refused on the DE-blocking stream, though the peer itself is XX.
    let p2 = path_of(&h.serve.token_url(&["--stream", "ts"]));
    assert_eq!(on(&h.serve, &p2, &[DE]).0, 403);
    assert_eq!(on(&h.serve, &p2, &[]).0, 200);
}
