//! The admin sidecar, run for real as `hlsgate serve` (or `hlsgate admin` + `hlsgate edge`
//! sharing one store) over a real SQLite file and a real PostgreSQL database: every test
//! runs on both (`sqlite::*`, `postgres::*`). A loopback origin serves ffmpeg-made HLS and
//! ffmpeg plays the URLs the admin hands out.

mod common;

use common::*;
use hlsgate::token::{self, Binding, Grant, Keyring};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PLAYER: &str = "hlsgate-test-player/1.0";

/// One origin (with the ffmpeg streams) for the whole test binary.
fn origin() -> &'static (Origin, PathBuf) {
    static O: OnceLock<(Origin, PathBuf)> = OnceLock::new();
    O.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        (Origin::with_streams(root.clone()), root)
    })
}

fn ts_url() -> String {
    format!("http://127.0.0.1:{}/ts/index.m3u8", origin().0.port)
}

/// A test's world: its folder, its store, and a config for `hlsgate serve`.
struct World {
    dir: tempfile::TempDir,
    db: TestDb,
    config: PathBuf,
    ports: EdgePorts,
}

fn world(backend: Backend, extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path());
    let (config, ports) = write_config_with(dir.path(), "serve.yaml", "2s", &db.url, extra);
    World {
        dir,
        db,
        config,
        ports,
    }
}

impl World {
    fn serve(&self) -> Hlsgate {
        Hlsgate::start("serve", &self.config, self.ports.edge)
    }
}

/// A JSON API call: `(status, body as JSON or Null, raw response)`.
fn api(
    port: u16,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value, Response) {
    let auth = jwt.map(|j| format!("Bearer {j}"));
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    if body.is_some() {
        h.push(("Content-Type", "application/json"));
    }
    let r = send(method, port, path, &h, body.map(str::as_bytes)).unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v, r)
}

/// Register (if needed) and log in; the JWT.
fn login(port: u16, user: &str, password: &str) -> String {
    let creds = json!({"username": user, "password": password}).to_string();
    let (s, v, _) = api(port, "POST", "/api/register", None, Some(&creds), &[]);
    assert!(s == 201 || s == 409, "register {s} {v}");
    let (s, v, _) = api(port, "POST", "/api/login", None, Some(&creds), &[]);
    assert_eq!(s, 200, "login: {v}");
    v["token"].as_str().unwrap().to_owned()
}

fn add_stream(port: u16, jwt: &str, url: &str) -> i64 {
    let (s, v, _) = api(
        port,
        "POST",
        "/api/streams",
        Some(jwt),
        Some(&json!({ "url": url }).to_string()),
        &[],
    );
    assert_eq!(s, 201, "{v}");
    v["id"].as_i64().unwrap()
}

/// `GET /api/stream?streamID=N` as the player (its User-Agent): the playback URL's path.
fn playback_path(port: u16, jwt: &str, id: i64) -> String {
    let (s, v, _) = api(
        port,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(jwt),
        None,
        &[("User-Agent", PLAYER)],
    );
    assert_eq!(s, 200, "{v}");
    path_of(v["url"].as_str().unwrap())
}

fn play_status(edge: u16, path: &str) -> u16 {
    get(edge, path, &[("User-Agent", PLAYER)]).unwrap().status
}

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

/// The seed's Postman flow with its exact request bodies, then ffmpeg plays the URL.
fn seed_flow_plays_through_the_edge(backend: Backend) {
    let w = world(backend, "");
    let _h = w.serve();
    let a = w.ports.admin;
    let body = r#"{
       "username": "testuser",
       "password": "securepassword"
     }"#;
    let (s, v, _) = api(a, "POST", "/api/register", None, Some(body), &[]);
    assert_eq!((s, v["message"].is_string()), (201, true), "{v}");
    let (s, v, _) = api(a, "POST", "/api/login", None, Some(body), &[]);
    assert_eq!(s, 200, "{v}");
    let jwt = v["token"].as_str().unwrap().to_owned();
    assert_eq!(jwt.split('.').count(), 3, "a JWT");

    let (s, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
    assert_eq!((s, v["streams"].as_array().unwrap().len()), (200, 0), "{v}");
    let update = format!("{{\n  \"streamID\": 1,\n  \"newUrl\": \"{}\"\n}}", ts_url());
    let (s, v, _) = api(
        a,
        "POST",
        "/api/update-stream",
        Some(&jwt),
        Some(&update),
        &[],
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["message"], "Stream URL updated successfully");
    let id = v["streamID"].as_i64().unwrap();
    let (s, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
    assert_eq!(s, 200);
    let list = v["streams"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["url"], ts_url());
    assert_eq!(list[0]["ID"], id, "the seed's GORM field names too");

    let (s, v, _) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
        &[("User-Agent", PLAYER)],
    );
    assert_eq!(s, 200, "{v}");
    let url = v["url"].as_str().unwrap();
    let edge_base = format!("http://127.0.0.1:{}/api/hls/", w.ports.edge);
    assert!(url.starts_with(&edge_base), "{url}");
    assert!(url.ends_with(&format!("/{id}/index.m3u8")), "{url}");
    let (ok, err) = ffmpeg_play(url, PLAYER);
    assert!(ok, "ffmpeg could not play {url}: {err}");
    // Bound to the User-Agent the admin saw.
    let r = get(
        w.ports.edge,
        &path_of(url),
        &[("User-Agent", "another-player")],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get(w.ports.edge, &path_of(url), &[("User-Agent", PLAYER)]).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("X-New-Token").is_some());

    // The store is not on every request: 100 playlist requests cost at most one session
    // and one stream query per `store.cache_ttl` (2 s).
    let queries = |what: &str| {
        let m = get(w.ports.metrics, "/metrics", &[]).unwrap().text();
        sample(
            &m,
            &format!("hlsgate_store_queries_total{{result=\"found\",what=\"{what}\"}}"),
        )
    };
    std::thread::sleep(Duration::from_millis(2100)); // what the edge knows has expired
    let (sessions, streams) = (queries("session"), queries("stream"));
    let t = Instant::now();
    for _ in 0..100 {
        assert_eq!(play_status(w.ports.edge, &path_of(url)), 200);
    }
    let periods = (t.elapsed().as_secs_f64() / 2.0).ceil() + 1.0;
    let (ds, dt) = (queries("session") - sessions, queries("stream") - streams);
    eprintln!(
        "100 requests in {:?}: {ds} session and {dt} stream queries",
        t.elapsed()
    );
    assert!(ds >= 1.0 && dt >= 1.0, "the first request asks the store");
    assert!(
        ds <= periods && dt <= periods,
        "{ds} / {dt} queries > {periods}"
    );
}

/// Bob can neither list, read, change, delete nor play Alice's stream, nor end her
/// session; each attempt is answered 403/404 and changes nothing.
fn users_cannot_touch_each_others_streams(backend: Backend) {
    let w = world(backend, "");
    let _h = w.serve();
    let (a, e) = (w.ports.admin, w.ports.edge);
    let alice = login(a, "alice", "alice-password");
    let bob = login(a, "bob", "bob-password");
    let x = add_stream(a, &alice, &ts_url());
    let alice_path = playback_path(a, &alice, x);

    let (s, v, _) = api(a, "GET", "/api/streams", Some(&bob), None, &[]);
    assert_eq!((s, v["streams"].as_array().unwrap().len()), (200, 0), "{v}");
    let item = format!("/api/streams/{x}");
    let (s, v, _) = api(a, "GET", &item, Some(&bob), None, &[]);
    assert_eq!((s, error_of(&v)), (404, "Stream not found"));
    let evil = json!({"url": "http://127.0.0.1:9/evil/index.m3u8"}).to_string();
    let (s, _, _) = api(a, "PUT", &item, Some(&bob), Some(&evil), &[]);
    assert_eq!(s, 404);
    let (s, _, _) = api(a, "DELETE", &item, Some(&bob), None, &[]);
    assert_eq!(s, 404);
    let (s, v, _) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={x}"),
        Some(&bob),
        None,
        &[],
    );
    assert_eq!((s, error_of(&v)), (404, "Stream not found"));
    // The seed route with Alice's id makes Bob a new stream and leaves hers alone.
    let seed = json!({"streamID": x, "newUrl": "http://127.0.0.1:9/evil/index.m3u8"}).to_string();
    let (s, v, _) = api(
        a,
        "POST",
        "/api/update-stream",
        Some(&bob),
        Some(&seed),
        &[],
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["created"], true);
    let bobs = v["streamID"].as_i64().unwrap();
    assert_ne!(bobs, x);
    let (_, v, _) = api(a, "GET", &item, Some(&alice), None, &[]);
    assert_eq!(v["url"], ts_url(), "Alice's stream is unchanged");
    // Bob's token for his own stream does not open Alice's.
    let bob_path = playback_path(a, &bob, bobs);
    let token = bob_path.split('/').nth(3).unwrap();
    let r = get(
        e,
        &format!("/api/hls/{token}/{x}/index.m3u8"),
        &[("User-Agent", PLAYER)],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    // Even a validly signed token for Alice's stream naming Bob's session (as if the
    // admin had issued one) is refused: the stream's owner is not the session's user.
    let (_, v, _) = api(a, "GET", "/api/sessions", Some(&bob), None, &[]);
    let bob_sid = v["sessions"][0]["id"].as_str().unwrap();
    let keyring = Keyring::load_or_create(&w.dir.path().join("secret.key")).unwrap();
    let now = token::unix_now();
    let crafted = keyring.issue(&Grant {
        stream: x.to_string(),
        session: hlsgate::store::session_bytes(bob_sid).unwrap(),
        exp: now + 60,
        session_exp: now + 600,
        binding: Binding::default(),
        stored_session: true,
        scope: hlsgate::token::Scope::path(),
    });
    let r = get(e, &format!("/api/hls/{crafted}/{x}/index.m3u8"), &[]).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    // Bob cannot end Alice's session.
    let (_, v, _) = api(a, "GET", "/api/sessions", Some(&alice), None, &[]);
    let sid = v["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (s, _, _) = api(
        a,
        "DELETE",
        &format!("/api/sessions/{sid}"),
        Some(&bob),
        None,
        &[],
    );
    assert_eq!(s, 404);
    assert_eq!(play_status(e, &alice_path), 200, "Alice still plays");
    let (s, _, _) = api(a, "GET", "/api/streams", Some(&alice), None, &[]);
    assert_eq!(s, 200, "Alice is still logged in");
}

/// In `serve`, ending a session stops its playback URLs at once: logout, revoking one
/// session from another, and the per-user session cap evicting the oldest.
fn ended_sessions_stop_playback_at_once_in_serve(backend: Backend) {
    let w = world(backend, "");
    // The cap comes from the config.
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("admin:\n", "admin:\n  max_sessions_per_user: 2\n");
    std::fs::write(&w.config, text).unwrap();
    let _h = w.serve();
    let (a, e) = (w.ports.admin, w.ports.edge);
    let jwt = login(a, "carol", "carol-password");
    let id = add_stream(a, &jwt, &ts_url());
    let path = playback_path(a, &jwt, id);
    assert_eq!(play_status(e, &path), 200);
    let (s, _, _) = api(a, "POST", "/api/logout", Some(&jwt), None, &[]);
    assert_eq!(s, 204);
    let r = get(e, &path, &[("User-Agent", PLAYER)]).unwrap();
    assert_eq!(
        (r.status, r.text().contains("session has ended")),
        (403, true),
        "{}",
        r.text()
    );
    let (s, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
    assert_eq!((s, error_of(&v)), (401, "session has ended"));

    // Revoke one session from another.
    let one = login(a, "carol", "carol-password");
    let two = login(a, "carol", "carol-password");
    let one_path = playback_path(a, &one, id);
    let (_, v, _) = api(a, "GET", "/api/sessions", Some(&two), None, &[]);
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{v}");
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    let (s, _, _) = api(
        a,
        "DELETE",
        &format!("/api/sessions/{}", other["id"].as_str().unwrap()),
        Some(&two),
        None,
        &[],
    );
    assert_eq!(s, 204);
    assert_eq!(play_status(e, &one_path), 403);
    let (s, _, _) = api(a, "GET", "/api/streams", Some(&one), None, &[]);
    assert_eq!(s, 401);

    // Cap of 2: a third and fourth login end the oldest.
    let two_path = playback_path(a, &two, id);
    let _three = login(a, "carol", "carol-password");
    assert_eq!(play_status(e, &two_path), 200, "2 sessions: within the cap");
    let four = login(a, "carol", "carol-password");
    assert_eq!(play_status(e, &two_path), 403, "the oldest was evicted");
    let (_, v, _) = api(a, "GET", "/api/sessions", Some(&four), None, &[]);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "{v}");
}

/// `hlsgate admin` and a separate `hlsgate edge` sharing the store: the edge sees a
/// logout within 5 s (its cache lives `store.cache_ttl`, 2 s by default), and a deleted
/// stream the same way.
fn a_separate_edge_sees_logout_within_5s(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path());
    let (admin_cfg, ap) = write_config_with(dir.path(), "admin.yaml", "2s", &db.url, "");
    let (edge_cfg, ep) = write_config_with(dir.path(), "edge.yaml", "2s", &db.url, "");
    let _admin = Hlsgate::start("admin", &admin_cfg, ap.admin);
    let _edge = Hlsgate::start("edge", &edge_cfg, ep.edge);
    let (a, e) = (ap.admin, ep.edge);
    // The edge process has no admin API.
    assert!(get(ep.admin, "/healthz", &[]).is_err());

    let jwt = login(a, "dave", "dave-password");
    let id = add_stream(a, &jwt, &ts_url());
    let path = playback_path(a, &jwt, id);
    let (ok, err) = ffmpeg_play(&format!("http://127.0.0.1:{e}{path}"), PLAYER);
    assert!(ok, "{err}");
    let (s, _, _) = api(a, "POST", "/api/logout", Some(&jwt), None, &[]);
    assert_eq!(s, 204);
    let ended = Instant::now();
    let mut status = 200;
    while ended.elapsed() < Duration::from_secs(10) && status == 200 {
        status = play_status(e, &path);
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = ended.elapsed();
    assert_eq!(status, 403, "still playing {took:?} after logout");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("separate edge refused the ended session after {took:?}");

    // A deleted stream disappears from the edge too.
    let jwt = login(a, "dave", "dave-password");
    let path = playback_path(a, &jwt, id);
    assert_eq!(play_status(e, &path), 200);
    let (s, _, _) = api(
        a,
        "DELETE",
        &format!("/api/streams/{id}"),
        Some(&jwt),
        None,
        &[],
    );
    assert_eq!(s, 204);
    let deleted = Instant::now();
    while deleted.elapsed() < Duration::from_secs(10) && status != 404 {
        status = play_status(e, &path);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status, 404);
    assert!(deleted.elapsed() < Duration::from_secs(5));
}

/// SIGKILL and restart: every user, stream and session is still there, and the playback
/// URL issued before the crash still plays.
fn a_killed_serve_restarts_with_everything(backend: Backend) {
    let w = world(backend, "");
    let h = w.serve();
    let a = w.ports.admin;
    let jwt = login(a, "erin", "erin-password");
    let id = add_stream(a, &jwt, &ts_url());
    let path = playback_path(a, &jwt, id);
    assert_eq!(play_status(w.ports.edge, &path), 200);
    h.kill_hard();

    let _h = w.serve();
    let (s, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
    assert_eq!(s, 200, "the session survived: {v}");
    assert_eq!(v["streams"][0]["id"], id);
    assert_eq!(v["streams"][0]["url"], ts_url());
    let (_, v, _) = api(a, "GET", "/api/sessions", Some(&jwt), None, &[]);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    let creds = json!({"username": "erin", "password": "erin-password"}).to_string();
    let (s, _, _) = api(a, "POST", "/api/login", None, Some(&creds), &[]);
    assert_eq!(s, 200, "the user survived");
    assert_eq!(play_status(w.ports.edge, &path), 200, "old URL plays");
    let _ = &w.db;
}

/// Bad input gets a clear 4xx and changes nothing.
fn bad_input_is_refused_clearly(backend: Backend) {
    let w = world(backend, "");
    let _h = w.serve();
    let a = w.ports.admin;
    let reg = |body: &str| {
        let (s, v, _) = api(a, "POST", "/api/register", None, Some(body), &[]);
        (s, error_of(&v).to_owned())
    };
    assert_eq!(reg("{not json").0, 400);
    assert!(reg("{not json").1.starts_with("Cannot parse JSON"));
    assert_eq!(reg(r#"{"username":"x"}"#).0, 400);
    assert_eq!(reg(r#"{"username":"ab","password":"long enough"}"#).0, 400);
    assert_eq!(
        reg(r#"{"username":"bad name","password":"long enough"}"#).0,
        400
    );
    let (s, m) = reg(r#"{"username":"samename","password":"SameName"}"#);
    assert_eq!((s, m.as_str()), (400, "password must not be the username"));
    let (s, m) = reg(r#"{"username":"frank","password":"short"}"#);
    assert_eq!(
        (s, m.as_str()),
        (400, "password must be at least 8 characters")
    );
    let big = format!(
        r#"{{"username":"big","password":"{}"}}"#,
        "a".repeat(70_000)
    );
    let (s, v, _) = api(a, "POST", "/api/register", None, Some(&big), &[]);
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].is_string(), "a JSON error: {v}");
    let jwt = login(a, "frank", "frank-password");
    let (s, m) = reg(r#"{"username":"frank","password":"another password"}"#);
    assert_eq!((s, m.as_str()), (409, "username already taken"));
    let again = login(a, "frank", "frank-password");
    assert!(!again.is_empty(), "the 409 did not change the password");

    // Origins: http(s) only; internal addresses unless origins.allow names them.
    for bad in [
        "file:///etc/passwd",
        "ftp://example.com/live/index.m3u8",
        "http://169.254.169.254/latest/index.m3u8",
        "http://10.0.0.1/live/index.m3u8",
        "http://[::1]/live/index.m3u8",
        "http://127.0.0.1/../index.m3u8",
        "http://user:pw@example.com/live/index.m3u8",
        "not a url",
    ] {
        let (s, v, _) = api(
            a,
            "POST",
            "/api/update-stream",
            Some(&jwt),
            Some(&json!({"streamID": 1, "newUrl": bad}).to_string()),
            &[],
        );
        assert_eq!(s, 400, "{bad}: {v}");
        let (s, _, _) = api(
            a,
            "POST",
            "/api/streams",
            Some(&jwt),
            Some(&json!({ "url": bad }).to_string()),
            &[],
        );
        assert_eq!(s, 400, "{bad}");
    }
    let (_, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
    assert_eq!(
        v["streams"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );

    // Authentication.
    let (s, v, _) = api(a, "GET", "/api/streams", None, None, &[]);
    assert_eq!((s, error_of(&v)), (401, "missing bearer token"));
    let mut forged = jwt.clone().into_bytes();
    let n = forged.len() - 3;
    forged[n] = if forged[n] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (s, v, _) = api(a, "GET", "/api/streams", Some(&forged), None, &[]);
    assert_eq!((s, error_of(&v)), (401, "invalid or expired token"));
    for q in ["", "?streamID=abc", "?streamID=-1", "?streamID=0"] {
        let (s, _, _) = api(a, "GET", &format!("/api/stream{q}"), Some(&jwt), None, &[]);
        assert_eq!(s, 400, "{q}");
    }
    let (s, _, _) = api(a, "GET", "/api/streams/abc", Some(&jwt), None, &[]);
    assert_eq!(s, 400);
    let (s, v, _) = api(a, "GET", "/api/nope", None, None, &[]);
    assert_eq!((s, error_of(&v)), (404, "no such route"));
    let (s, v, _) = api(a, "GET", "/api/login", None, None, &[]);
    assert_eq!((s, error_of(&v)), (405, "method not allowed"));

    // Only a trusted backend may name the viewer.
    let id = add_stream(a, &jwt, &ts_url());
    let (s, _, _) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
        &[("X-Viewer-IP", "203.0.113.7")],
    );
    assert_eq!(s, 403);
}

/// A trusted backend asks for a URL on a viewer's behalf: the token is bound to the
/// viewer it names, not to the backend.
fn a_trusted_backend_names_the_viewer(backend: Backend) {
    let w = world(backend, "");
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("admin:\n", "admin:\n  trusted_backends: [\"127.0.0.1\"]\n");
    std::fs::write(&w.config, text).unwrap();
    let _h = w.serve();
    let (a, e) = (w.ports.admin, w.ports.edge);
    let jwt = login(a, "gina", "gina-password");
    let id = add_stream(a, &jwt, &ts_url());
    let (s, v, _) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
        &[
            ("User-Agent", "backend/1.0"),
            ("X-Viewer-IP", "127.0.0.1"),
            ("X-Viewer-User-Agent", "viewer-tv/2.0"),
        ],
    );
    assert_eq!(s, 200, "{v}");
    let path = path_of(v["url"].as_str().unwrap());
    assert_eq!(
        get(e, &path, &[("User-Agent", "viewer-tv/2.0")])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(e, &path, &[("User-Agent", "backend/1.0")])
            .unwrap()
            .status,
        403
    );
    // Bound to another IP: the loopback viewer is refused.
    let (_, v, _) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
        &[
            ("X-Viewer-IP", "203.0.113.7"),
            ("X-Viewer-User-Agent", "tv"),
        ],
    );
    let path = path_of(v["url"].as_str().unwrap());
    assert_eq!(get(e, &path, &[("User-Agent", "tv")]).unwrap().status, 403);
}

/// Login is rate-limited per username and per client IP (429 + Retry-After), and a
/// failure looks and takes the same whether or not the user exists.
fn login_is_rate_limited_and_failures_are_uniform(backend: Backend) {
    let w = world(backend, "");
    let text = std::fs::read_to_string(&w.config).unwrap().replace(
        "admin:\n",
        "admin:\n  login_attempts_per_user: 4\n  login_attempts_per_ip: 40\n  trusted_proxies: [\"127.0.0.1\"]\n",
    );
    std::fs::write(&w.config, text).unwrap();
    let _h = w.serve();
    let a = w.ports.admin;
    login(a, "hank", "hank-password");
    let attempt = |user: &str, pw: &str| {
        let body = json!({"username": user, "password": pw}).to_string();
        let t = Instant::now();
        let (s, v, r) = api(a, "POST", "/api/login", None, Some(&body), &[]);
        (s, v, r, t.elapsed())
    };
    // Failures: same status and body for a wrong password and an unknown user; timing
    // compared on medians (argon2 runs in both cases).
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..3 {
        let (s1, v1, _, t1) = attempt("hank", "wrong-password");
        let (s2, v2, _, t2) = attempt(&format!("nobody{i}"), "wrong-password");
        assert_eq!((s1, &v1), (401, &json!({"error": "Invalid credentials"})));
        assert_eq!((s2, &v2), (s1, &v1));
        known.push(t1);
        unknown.push(t2);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[1].as_secs_f64(), unknown[1].as_secs_f64());
    eprintln!("failed login median: existing user {k:.4}s, unknown user {u:.4}s");
    assert!(k / u < 3.0 && u / k < 3.0, "existing {k}s vs unknown {u}s");

    // Finding 7: failures count per user and client. This client has 3 failures for
    // hank; a 4th uses its budget, and then even the right password is refused from it,
    // without checking it.
    assert_eq!(attempt("hank", "wrong-password").0, 401);
    let (s, v, r, _) = attempt("hank", "hank-password");
    assert_eq!((s, error_of(&v)), (429, "too many attempts; retry later"));
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let from = |ip: &str, user: &str, pw: &str| {
        let body = json!({"username": user, "password": pw}).to_string();
        let h = [("X-Forwarded-For", ip)];
        api(a, "POST", "/api/login", None, Some(&body), &h).0
    };
    // hank has more failures than the budget overall: a client with a failure of its own
    // gets no second try...
    assert_eq!(from("198.51.100.1", "hank", "guess-1"), 401);
    assert_eq!(from("198.51.100.1", "hank", "guess-2"), 429);
    // ...but the owner, from a client with no recent failures, is let in: an attacker
    // cannot lock hank out by failing on purpose.
    assert_eq!(from("203.0.113.5", "hank", "hank-password"), 200);
    // IPv6 clients share a budget per /64.
    for i in 0..4 {
        assert_eq!(
            from(&format!("2001:db8:7::{i}"), "ivan", "wrong-pw"),
            401,
            "{i}"
        );
    }
    assert_eq!(from("2001:db8:7::99", "ivan", "wrong-pw"), 429);
    // A name no user can have is refused before it becomes a limiter key.
    let long = "x".repeat(60_000);
    assert_eq!(from("203.0.113.9", &long, "whatever1"), 401);
    // Other users are not affected by hank's limit...
    login(a, "ivan", "ivan-password");
    // ...until this IP's budget (40 a minute) runs out.
    let mut last = 0;
    for i in 0..40 {
        last = attempt(&format!("spray{i}"), "wrong-password").0;
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "per-IP limit");
}

/// The OpenAPI document lists every route the API serves.
fn openapi_lists_every_route(backend: Backend) {
    let w = world(backend, "");
    let _h = w.serve();
    let (s, v, r) = api(w.ports.admin, "GET", "/api/openapi.json", None, None, &[]);
    assert_eq!(s, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/register", "post"),
        ("/api/login", "post"),
        ("/api/logout", "post"),
        ("/api/streams", "get"),
        ("/api/streams", "post"),
        ("/api/streams/{id}", "get"),
        ("/api/streams/{id}", "put"),
        ("/api/streams/{id}", "delete"),
        ("/api/update-stream", "post"),
        ("/api/stream", "get"),
        ("/api/sessions", "get"),
        ("/api/sessions/{id}", "delete"),
        ("/api/playback-keys", "get"),
        ("/api/playback-keys", "post"),
        ("/api/playback-keys/{kid}", "delete"),
        ("/api/playback-token", "post"),
        ("/api/stream-cookies", "get"),
        ("/api/signout", "post"),
        ("/api/viewers/revoke", "post"),
        ("/api/streams/{id}/key", "post"),
        ("/api/viewers", "get"),
        ("/api/viewers/{id}", "delete"),
        ("/api/screens", "get"),
        ("/api/screens", "put"),
        ("/hooks/rtmp/on_publish", "post"),
        ("/hooks/rtmp/on_update", "post"),
    ] {
        assert!(v["paths"][path][method].is_object(), "{method} {path}");
    }
    let _ = w.dir.path();
}

/// Two `hlsgate edge` processes and one `hlsgate admin` on one store: each edge reports
/// its viewers in batches, the admin lists both, and a deleted viewer session is refused
/// by its edge within 5 s while the other keeps playing.
fn viewers_across_edges_are_listed_and_deleted(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path());
    let (admin_cfg, ap) = write_config_with(dir.path(), "admin.yaml", "2s", &db.url, "");
    let (e1_cfg, p1) = write_config_with(dir.path(), "edge1.yaml", "2s", &db.url, "");
    let (e2_cfg, p2) = write_config_with(dir.path(), "edge2.yaml", "2s", &db.url, "");
    let _admin = Hlsgate::start("admin", &admin_cfg, ap.admin);
    let _e1 = Hlsgate::start("edge", &e1_cfg, p1.edge);
    let _e2 = Hlsgate::start("edge", &e2_cfg, p2.edge);
    let a = ap.admin;
    let owner = login(a, "erin", "erin-password");
    let id = add_stream(a, &owner, &ts_url());
    // two viewers (two login sessions), one on each edge
    let path_a = playback_path(a, &login(a, "erin", "erin-password"), id);
    let path_b = playback_path(a, &login(a, "erin", "erin-password"), id);
    let (ok, err) = ffmpeg_play(&format!("http://127.0.0.1:{}{path_a}", p1.edge), PLAYER);
    assert!(ok, "{err}");
    assert_eq!(play_status(p2.edge, &path_b), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let viewers = loop {
        let (s, v, _) = api(
            a,
            "GET",
            &format!("/api/viewers?streamID={id}"),
            Some(&owner),
            None,
            &[],
        );
        assert_eq!(s, 200, "{v}");
        if v["viewers"].as_array().unwrap().len() == 2 {
            break v["viewers"].as_array().unwrap().clone();
        }
        assert!(Instant::now() < deadline, "viewers not reported: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let edges: Vec<&str> = viewers
        .iter()
        .map(|v| v["edge"].as_str().unwrap())
        .collect();
    assert!(
        edges.contains(&format!("127.0.0.1:{}", p1.edge).as_str()),
        "{viewers:?}"
    );
    assert!(
        edges.contains(&format!("127.0.0.1:{}", p2.edge).as_str()),
        "{viewers:?}"
    );
    for v in &viewers {
        assert_eq!(
            (v["ip"].as_str(), v["userAgent"].as_str()),
            (Some("127.0.0.1"), Some(PLAYER))
        );
        assert!(v["lastSeen"].as_i64().unwrap() >= v["firstSeen"].as_i64().unwrap());
    }
    let on_e1 = viewers
        .iter()
        .find(|v| v["edge"] == format!("127.0.0.1:{}", p1.edge))
        .unwrap();
    assert!(
        on_e1["bytes"].as_i64().unwrap() > 10_000,
        "ffmpeg's segments count: {on_e1}"
    );
    let vid = on_e1["id"].as_str().unwrap().to_owned();
    // only the stream's owner may end it
    let other = login(a, "frank", "frank-password");
    let (s, _, _) = api(
        a,
        "DELETE",
        &format!("/api/viewers/{vid}"),
        Some(&other),
        None,
        &[],
    );
    assert_eq!(s, 404);
    let (s, _, _) = api(
        a,
        "DELETE",
        &format!("/api/viewers/{vid}"),
        Some(&owner),
        None,
        &[],
    );
    assert_eq!(s, 204);
    let t = Instant::now();
    let mut status = 200;
    while t.elapsed() < Duration::from_secs(10) && status == 200 {
        status = play_status(p1.edge, &path_a);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        status,
        403,
        "still playing {:?} after the delete",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    eprintln!("deleted viewer refused after {:?}", t.elapsed());
    assert_eq!(
        play_status(p2.edge, &path_b),
        200,
        "the other viewer plays on"
    );
    let (_, v, _) = api(
        a,
        "GET",
        &format!("/api/viewers?streamID={id}"),
        Some(&owner),
        None,
        &[],
    );
    assert_eq!(v["viewers"].as_array().unwrap().len(), 1, "{v}");
}

crate::both!(
    viewers_across_edges_are_listed_and_deleted,
    seed_flow_plays_through_the_edge,
    users_cannot_touch_each_others_streams,
    ended_sessions_stop_playback_at_once_in_serve,
    a_separate_edge_sees_logout_within_5s,
    a_killed_serve_restarts_with_everything,
    bad_input_is_refused_clearly,
    a_trusted_backend_names_the_viewer,
    login_is_rate_limited_and_failures_are_uniform,
    openapi_lists_every_route,
);

/// The store goes away (its PostgreSQL database is dropped under a running `serve`):
/// a viewer the edge has already admitted keeps playing for `store.stale_if_error` (default
/// 60 s); one it has never seen is answered 503 at once (the store is known down: no query
/// waits), as is the admin; `hlsgate_store_up` says 0; a static stream plays on. A second
/// `hlsgate edge` on the same store and key file that admitted the viewer too holds the
/// same way, and refuses the never-seen one at once too. With
/// `store.stale_if_error: 0s` every store-backed viewer is refused (fail closed).
#[test]
fn a_store_outage_keeps_seen_viewers_and_refuses_the_rest_at_once() {
    for stale in ["60s", "0s"] {
        let w = world(
            Backend::Postgres,
            &format!("streams:\n  static: {{ url: \"{}\" }}\n", ts_url()),
        );
        let stale_key = format!("  stale_if_error: \"{stale}\"\n");
        add_config_keys(&w.config, "store", &stale_key);
        let h = w.serve();
        // A second edge on the same store and key file: it decides from what it has read.
        let (edge2_cfg, p2) =
            write_config_with(w.dir.path(), "edge2.yaml", "2s", &w.db.url, "streams: {}\n");
        add_config_keys(&edge2_cfg, "store", &stale_key);
        let _edge2 = Hlsgate::start("edge", &edge2_cfg, p2.edge);
        let (a, e) = (w.ports.admin, w.ports.edge);
        let jwt = login(a, "olga", "olga-password");
        let id = add_stream(a, &jwt, &ts_url());
        let seen = playback_path(a, &jwt, id);
        assert_eq!(play_status(e, &seen), 200);
        assert_eq!(play_status(p2.edge, &seen), 200);
        // Another login's URL, issued before the outage but never played.
        let unseen = playback_path(a, &login(a, "olga", "olga-password"), id);
        let stateless = path_of(&h.token_url(&["--stream", "static"]));
        assert_eq!(play_status(e, &stateless), 200);

        let name = w.db.url.rsplit('/').next().unwrap().to_owned();
        drop_postgres_database(&name);
        std::thread::sleep(Duration::from_millis(2200)); // the edge's cache_ttl (2 s) ends
        let want = if stale == "0s" { 503 } else { 200 };
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            let r = get(e, &seen, &[("User-Agent", PLAYER)]).unwrap();
            slowest = slowest.max(t.elapsed());
            assert_eq!(r.status, want, "stale_if_error {stale}: {}", r.text());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(slowest < Duration::from_secs(1), "{slowest:?}");
        // The second edge, which admitted the same viewer before, holds the same way.
        assert_eq!(play_status(p2.edge, &seen), want, "second edge");
        for edge in [e, e, p2.edge, p2.edge] {
            let t = Instant::now();
            let r = get(edge, &unseen, &[("User-Agent", PLAYER)]).unwrap();
            assert_eq!(
                (r.status, r.text()),
                (503, r#"{"error":"store unavailable"}"#.into())
            );
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "a refusal took {:?}",
                t.elapsed()
            );
        }
        let m = get(w.ports.metrics, "/metrics", &[]).unwrap().text();
        assert_eq!(sample(&m, "hlsgate_store_up "), 0.0);
        if stale != "0s" {
            assert!(sample(&m, "hlsgate_store_stale_answers_total ") > 0.0);
        }
        let (s, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
        assert_eq!((s, error_of(&v)), (503, "store unavailable"));
        assert_eq!(
            play_status(e, &stateless),
            200,
            "static streams do not need the store"
        );
    }
}

/// A TCP relay to PostgreSQL that can freeze: while frozen it stops passing bytes either
/// way (the database's connections stay open and answer nothing, as a PostgreSQL stopped
/// with SIGSTOP or a network partition). For the frozen-store test; the server itself is
/// shared by every test and cannot be frozen.
struct FreezingRelay {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Its connections to the server, closed when the relay is dropped.
    server_side: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Drop for FreezingRelay {
    fn drop(&mut self) {
        self.freeze(false);
        for s in self.server_side.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl FreezingRelay {
    fn start(to: &str) -> FreezingRelay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server_side = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to, f, kept) = (to.to_owned(), frozen.clone(), server_side.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&to) else {
                    continue;
                };
                kept.lock().unwrap().push(server.try_clone().unwrap());
                for (mut a, mut b) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            while f.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            match a.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    while f.load(Ordering::Relaxed) {
                                        std::thread::sleep(Duration::from_millis(20));
                                    }
                                    if b.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        FreezingRelay {
            port,
            frozen,
            server_side,
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The store freezes (its connections stay open and answer nothing): viewers already seen
/// play on without waiting for it (their last good answers go out after 50 ms), new ones
/// are refused 503 at once once a query's timeout (1 s) has marked the store down
/// (`hlsgate_store_up` 0); when it thaws the edge finds it again (a background probe a
/// second) and the new viewer plays.
#[test]
fn a_frozen_store_holds_no_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path());
    let base = postgres_base();
    let host = base
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let relay = FreezingRelay::start(&host);
    let url = db.url.replace(&host, &format!("127.0.0.1:{}", relay.port));
    let (config, ports) = write_config_with(
        dir.path(),
        "serve.yaml",
        "2s",
        &url,
        &format!("streams:\n  static: {{ url: \"{}\" }}\n", ts_url()),
    );
    let _h = Hlsgate::start("serve", &config, ports.edge);
    let (a, e) = (ports.admin, ports.edge);
    let jwt = login(a, "fay", "fay-password");
    let id = add_stream(a, &jwt, &ts_url());
    let seen = playback_path(a, &jwt, id);
    assert_eq!(play_status(e, &seen), 200);
    let unseen = playback_path(a, &login(a, "fay", "fay-password"), id);

    relay.freeze(true);
    std::thread::sleep(Duration::from_millis(2200)); // the edge's cache_ttl (2 s) ends
    let mut times = Vec::new();
    for _ in 0..25 {
        let t = Instant::now();
        assert_eq!(play_status(e, &seen), 200);
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    // None waits on the frozen store: past 50 ms the edge's last good answer is used
    // while the query runs on to its timeout (1 s), which marks the store down.
    assert!(
        times.iter().all(|t| *t < Duration::from_millis(400)),
        "{times:?}"
    );
    let t = Instant::now();
    let r = get(e, &unseen, &[("User-Agent", PLAYER)]).unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    // The store is known down: no query is tried (a background probe finds it back).
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
    assert_eq!(sample(&m, "hlsgate_store_up "), 0.0);

    relay.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while play_status(e, &unseen) != 200 {
        assert!(Instant::now() < deadline, "the store never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = get(ports.metrics, "/metrics", &[]).unwrap().text();
    assert_eq!(sample(&m, "hlsgate_store_up "), 1.0);
    // (Dropped in turn: hlsgate, the relay, which cuts its server connections, then the
    // database, whose DROP would wait on connections the relay still held.)
}

/// A client that never finishes its request headers is cut off after the admin's header
/// timeout (10 s), so slow or idle connections cannot pile up.
#[test]
fn a_stalled_admin_client_is_disconnected() {
    use std::io::{Read, Write};
    let w = world(Backend::Sqlite, "");
    let _h = w.serve();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.ports.admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf);
    let took = t.elapsed();
    assert!(
        n.is_ok(),
        "closed by the server, not our read timeout: {n:?}"
    );
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
}

/// One account cannot fill the store with streams: past `admin.max_streams_per_user`, both
/// ways of creating one (`POST /api/streams`, the seed's `update-stream` with a new id)
/// are 403, and updating an own stream still works.
#[test]
fn streams_per_user_are_capped() {
    let w = world(Backend::Sqlite, "streams: {}\n");
    let text = std::fs::read_to_string(&w.config).unwrap().replacen(
        "admin:\n",
        "admin:\n  max_streams_per_user: 3\n",
        1,
    );
    std::fs::write(&w.config, text).unwrap();
    let _h = w.serve();
    let a = w.ports.admin;
    let jwt = login(a, "quinn", "quinn-password");
    let ids: Vec<i64> = (0..3).map(|_| add_stream(a, &jwt, &ts_url())).collect();
    let body = json!({ "url": ts_url() }).to_string();
    let (s, v, _) = api(a, "POST", "/api/streams", Some(&jwt), Some(&body), &[]);
    assert_eq!(
        (s, error_of(&v)),
        (403, "stream limit reached (admin.max_streams_per_user)")
    );
    let create = json!({"streamID": 999_999, "newUrl": ts_url()}).to_string();
    let (s, _, _) = api(
        a,
        "POST",
        "/api/update-stream",
        Some(&jwt),
        Some(&create),
        &[],
    );
    assert_eq!(s, 403);
    let update = json!({"streamID": ids[0], "newUrl": ts_url()}).to_string();
    let (s, v, _) = api(
        a,
        "POST",
        "/api/update-stream",
        Some(&jwt),
        Some(&update),
        &[],
    );
    assert_eq!(s, 200, "{v}");
    let (_, v, _) = api(a, "GET", "/api/streams", Some(&jwt), None, &[]);
    assert_eq!(v["streams"].as_array().unwrap().len(), 3);
    // another user has their own allowance
    let other = login(a, "rosa", "rosa-password");
    add_stream(a, &other, &ts_url());
}
