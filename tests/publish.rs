//! Publishers, run for real: Debian's nginx with its RTMP module (`libnginx-mod-rtmp`)
//! started on loopback with `on_publish` / `on_update` / `on_publish_done` / `on_play`
//! callbacks to `hlsgate serve`, ffmpeg publishing with the stream key the admin handed out,
//! nginx-rtmp relaying the accepted stream into its HLS application under the stream's
//! public id, and ffmpeg playing that HLS through the edge.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// nginx with the RTMP module, in the foreground, stopped on drop.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and exits (a SIGKILL'd master leaves its
        // workers running, orphaned, past the test). SIGKILL only if it has not gone in 5 s.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(dir: &Path, rtmp: u16, http: u16, admin: u16) -> Nginx {
    assert!(
        Path::new(RTMP_MODULE).exists(),
        "{RTMP_MODULE} is missing: scripts/test.sh installs libnginx-mod-rtmp"
    );
    std::fs::create_dir_all(dir.join("hls")).unwrap();
    let hook = |h: &str| format!("http://127.0.0.1:{admin}/hooks/rtmp/{h}");
    let conf = format!(
        r#"load_module {RTMP_MODULE};
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp};
        notify_method post;
        application live {{
            live on;
            on_publish {publish};
            on_publish_done {done};
            on_update {update};
            notify_update_timeout 1s;
            on_play {play};
        }}
        application hls {{
            live on;
            allow publish 127.0.0.1;
            deny publish all;
            deny play all;
            hls on;
            hls_path {d}/hls;
            hls_nested on;
            hls_fragment 1s;
            hls_playlist_length 6s;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{
        listen 127.0.0.1:{http};
        location /hls/ {{ root {d}; add_header Cache-Control no-cache; }}
    }}
}}
"#,
        d = dir.display(),
        publish = hook("on_publish"),
        done = hook("on_publish_done"),
        update = hook("on_update"),
        play = hook("on_play"),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    // As root, nginx's worker must be allowed to write the HLS folder.
    let user = if unsafe { libc::geteuid() } == 0 {
        "daemon off; user root;"
    } else {
        "daemon off;"
    };
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf_path)
        .args(["-p", &dir.display().to_string(), "-g", user])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx is installed (scripts/test.sh installs it)");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", rtmp)).is_err() {
        assert!(Instant::now() < deadline, "nginx-rtmp did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child }
}

/// `hlsgate serve` whose hooks relay into the nginx-rtmp started beside it (ports free on
/// loopback, HLS written below `dir/media`).
struct World {
    ports: EdgePorts,
    rtmp: u16,
    http: u16,
    media: PathBuf,
    _serve: Hlsgate,
    _nginx: Nginx,
}

impl World {
    fn start(dir: &Path) -> World {
        let (rtmp, http) = (free_port(), free_port());
        let (config, ports) = write_config(dir, "2s", "streams: {}\n");
        let text = std::fs::read_to_string(&config).unwrap()
            + &format!(
                "hooks:\n  rtmp_relay: \"rtmp://127.0.0.1:{rtmp}/hls/\"\n  rtmp_publish_url: \"rtmp://127.0.0.1:{rtmp}/live\"\n"
            );
        std::fs::write(&config, text).unwrap();
        let serve = Hlsgate::start("serve", &config, ports.edge);
        let media = dir.join("media");
        let nginx = nginx(&media, rtmp, http, ports.admin);
        World {
            ports,
            rtmp,
            http,
            media,
            _serve: serve,
            _nginx: nginx,
        }
    }
}

/// ffmpeg publishing a test picture and tone to `url` for at most `secs` seconds.
fn publish(url: &str, secs: u32) -> Child {
    publish_with(url, secs, &[])
}

/// [`publish`] with more output options (the RTMP protocol's, e.g. `-rtmp_flashver`).
fn publish_with(url: &str, secs: u32, opts: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-c:a", "aac", "-ac", "1", "-t", &secs.to_string()])
        .args(["-f", "flv"])
        .args(opts)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait up to `secs` for `child` to exit; its exit status if it did.
fn exits_within(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn api(
    port: u16,
    method: &str,
    path: &str,
    jwt: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (s, v, _) = api_as("publisher-test", port, method, path, jwt, body);
    (s, v)
}

fn segments(playlist: &PathBuf) -> usize {
    std::fs::read_to_string(playlist)
        .map(|t| t.lines().filter(|l| l.ends_with(".ts")).count())
        .unwrap_or(0)
}

#[test]
fn nginx_rtmp_publishers_need_their_stream_key_and_play_through_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::start(dir.path());
    let (rtmp, http, media, a) = (w.rtmp, w.http, w.media.clone(), w.ports.admin);

    let creds = json!({"username": "publisher", "password": "correct horse battery"});
    assert_eq!(
        api(a, "POST", "/api/register", None, Some(creds.clone())).0,
        201
    );
    let (_, v) = api(a, "POST", "/api/login", None, Some(creds));
    let jwt = v["token"].as_str().unwrap().to_owned();
    let (s, v) = api(
        a,
        "POST",
        "/api/streams",
        Some(&jwt),
        Some(json!({"url": format!("http://127.0.0.1:{http}/hls/new/index.m3u8")})),
    );
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    assert_eq!(v["live"], false);
    let url = format!("http://127.0.0.1:{http}/hls/{id}/index.m3u8");
    let (s, v) = api(
        a,
        "PUT",
        &format!("/api/streams/{id}"),
        Some(&jwt),
        Some(json!({ "url": url })),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = api(
        a,
        "POST",
        &format!("/api/streams/{id}/key"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    let publish_url = v["publishUrl"].as_str().unwrap().to_owned();
    assert_eq!(publish_url, format!("rtmp://127.0.0.1:{rtmp}/live/{key}"));

    // a bad key: nginx-rtmp is told 403 and drops the publisher; nothing is packaged
    let mut bad = publish(&format!("rtmp://127.0.0.1:{rtmp}/live/sk_0000"), 10);
    let st = exits_within(&mut bad, 8).expect("a refused publisher is disconnected");
    assert!(!st.success());

    // the good key: HLS appears under the stream's id (never the key) and plays via the edge
    let mut good = publish(&publish_url, 60);
    let playlist = media.join(format!("hls/{id}/index.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments(&playlist) < 3 {
        assert!(
            Instant::now() < deadline,
            "no HLS under hls/{id}/ ({:?})",
            std::fs::read_dir(media.join("hls")).map(|d| d.count())
        );
        assert!(
            good.try_wait().unwrap().is_none(),
            "the publisher was dropped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let names: Vec<String> = std::fs::read_dir(media.join("hls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![id.to_string()],
        "the key must not name anything"
    );
    let (_, v) = api(a, "GET", &format!("/api/streams/{id}"), Some(&jwt), None);
    assert_eq!(
        (v["live"].as_bool(), v["publisherIp"].as_str()),
        (Some(true), Some("127.0.0.1")),
        "{v}"
    );
    assert!(v["liveSince"].as_i64().is_some());
    let (_, v) = api(
        a,
        "GET",
        &format!("/api/stream?streamID={id}"),
        Some(&jwt),
        None,
    );
    let play_url = v["url"].as_str().unwrap().to_owned();
    let out = Command::new("timeout")
        .args([
            "30",
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-user_agent",
            "publisher-test",
        ])
        .args([
            "-i", &play_url, "-t", "3", "-map", "0", "-c", "copy", "-f", "null", "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RTMP playback bypassing the edge is refused
    let out = Command::new("timeout")
        .args(["15", "ffmpeg", "-nostdin", "-loglevel", "error"])
        .args([
            "-i",
            &format!("rtmp://127.0.0.1:{rtmp}/live/{key}"),
            "-t",
            "1",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "RTMP playback must be refused");

    // rotation: the running publisher is dropped at its next on_update
    let t = Instant::now();
    let (s, v) = api(
        a,
        "POST",
        &format!("/api/streams/{id}/key"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200);
    assert_ne!(v["key"].as_str().unwrap(), key);
    let st = exits_within(&mut good, 10).expect("the rotated key's publisher is dropped");
    assert!(!st.success());
    let dropped = t.elapsed();
    assert!(
        dropped < Duration::from_secs(5),
        "dropped after {dropped:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, v) = api(a, "GET", &format!("/api/streams/{id}"), Some(&jwt), None);
        if v["live"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "still live: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // the old key no longer publishes
    let mut old = publish(&publish_url, 10);
    assert!(!exits_within(&mut old, 8).expect("refused").success());
    eprintln!("rotated publisher dropped after {dropped:?}");
}

/// A user with a stream (its origin unused) and that stream's key: `(jwt, id, key)`.
fn publisher(a: u16, user: &str) -> (String, i64, String) {
    let creds = json!({"username": user, "password": "correct horse battery"});
    assert_eq!(
        api(a, "POST", "/api/register", None, Some(creds.clone())).0,
        201
    );
    let (_, v) = api(a, "POST", "/api/login", None, Some(creds));
    let jwt = v["token"].as_str().unwrap().to_owned();
    let url = json!({"url": "http://127.0.0.1:9/live/index.m3u8"});
    let (_, v) = api(a, "POST", "/api/streams", Some(&jwt), Some(url));
    let id = v["id"].as_i64().unwrap();
    let (_, v) = api(
        a,
        "POST",
        &format!("/api/streams/{id}/key"),
        Some(&jwt),
        None,
    );
    let key = v["key"].as_str().unwrap().to_owned();
    (jwt, id, key)
}

/// SRS `http_hooks`: SRS is not packaged for Debian, so its callbacks are replayed with the
/// bodies SRS 5 sends (the shape of its docs' examples, `http_hooks` section).
#[test]
fn srs_http_hooks_with_recorded_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ports) = write_config(dir.path(), "2s", "streams: {}\n");
    let _serve = Hlsgate::start("serve", &config, ports.edge);
    let a = ports.admin;
    let (jwt, id, key) = publisher(a, "srs-publisher");
    let srs = |action: &str, stream: &str| {
        json!({
            "server_id": "vid-0xk989d", "service_id": "plw7q98n", "action": action,
            "client_id": "341w361a", "ip": "127.0.0.1", "vhost": "__defaultVhost__",
            "app": "live", "tcUrl": "rtmp://127.0.0.1:1935/live", "stream": stream,
            "param": "", "stream_url": format!("/live/{stream}"), "stream_id": "vid-124q9y3"
        })
    };
    let hook = |action: &str, stream: &str| {
        api(
            a,
            "POST",
            &format!("/hooks/srs/{action}"),
            None,
            Some(srs(action, stream)),
        )
    };
    assert_eq!(hook("on_publish", "sk_wrong"), (403, json!({"code": 403})));
    assert_eq!(hook("on_publish", &key), (200, json!({"code": 0})));
    let (_, v) = api(a, "GET", &format!("/api/streams/{id}"), Some(&jwt), None);
    assert_eq!(
        (v["live"].as_bool(), v["publisherIp"].as_str()),
        (Some(true), Some("127.0.0.1"))
    );
    assert_eq!(
        hook("on_play", &key).0,
        403,
        "viewers watch through the edge"
    );
    assert_eq!(hook("on_unpublish", &key), (200, json!({"code": 0})));
    let (_, v) = api(a, "GET", &format!("/api/streams/{id}"), Some(&jwt), None);
    assert_eq!(v["live"], false);
    assert_eq!(hook("on_stop", &key), (200, json!({"code": 0})));
    // garbage is refused, not a crash
    let r = send(
        "POST",
        a,
        "/hooks/srs/on_publish",
        &[("Content-Type", "application/json")],
        Some(b"{nope"),
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

/// Callbacks are believed only from `hooks.allow_from`: from anywhere else, a good key is
/// refused too (nothing is marked live).
#[test]
fn callbacks_from_outside_allow_from_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ports) = write_config(
        dir.path(),
        "2s",
        "streams: {}\nhooks:\n  allow_from: [\"10.0.0.0/8\"]\n",
    );
    let _serve = Hlsgate::start("serve", &config, ports.edge);
    let a = ports.admin;
    let (jwt, id, key) = publisher(a, "outsider");
    let form = format!("call=publish&name={key}&addr=127.0.0.1&clientid=7&app=live");
    let r = send(
        "POST",
        a,
        "/hooks/rtmp/on_publish",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 403);
    let body = json!({"action": "on_publish", "client_id": "7", "ip": "127.0.0.1", "app": "live", "stream": key});
    assert_eq!(
        api(a, "POST", "/hooks/srs/on_publish", None, Some(body)).0,
        403
    );
    let (_, v) = api(a, "GET", &format!("/api/streams/{id}"), Some(&jwt), None);
    assert_eq!(v["live"], false);
}

/// Behind a reverse proxy on the same host every caller reaches the admin from loopback:
/// a forwarded callback is judged by the client the proxy names (with the proxy in
/// `admin.trusted_proxies`), and refused when the proxy is not trusted.
#[test]
fn forwarded_callbacks_are_judged_by_the_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let (config, ports) = write_config(dir.path(), "2s", "streams: {}\n");
    let _serve = Hlsgate::start("serve", &config, ports.edge);
    let a = ports.admin;
    let (jwt, id, key) = publisher(a, "proxied");
    let form = format!("call=publish&name={key}&addr=127.0.0.1&clientid=9&app=live");
    let hook = |headers: &[(&str, &str)]| {
        let mut hs = vec![("Content-Type", "application/x-www-form-urlencoded")];
        hs.extend_from_slice(headers);
        send(
            "POST",
            a,
            "/hooks/rtmp/on_publish",
            &hs,
            Some(form.as_bytes()),
        )
        .unwrap()
        .status
    };
    let live = || api(a, "GET", &format!("/api/streams/{id}"), Some(&jwt), None).1["live"].clone();
    // forwarded through a proxy that is not trusted: whoever it names, refused
    for forwarded in [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Real-IP", "127.0.0.1"),
        ("Forwarded", "for=127.0.0.1"),
    ] {
        assert_eq!(hook(&[forwarded]), 403, "{forwarded:?}");
    }
    assert_eq!(live(), false);
    // 40 forged on_publish_done through the proxy do not end a live stream
    assert_eq!(hook(&[]), 302, "nginx-rtmp itself, directly");
    assert_eq!(live(), true);
    for _ in 0..40 {
        let r = send(
            "POST",
            a,
            "/hooks/rtmp/on_publish_done",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Forwarded-For", "198.51.100.7"),
            ],
            Some(form.replace("call=publish", "call=publish_done").as_bytes()),
        )
        .unwrap();
        assert_eq!(r.status, 403);
    }
    assert_eq!(live(), true);
}

/// A publisher that claims to be nginx-rtmp's local relay (`-rtmp_flashver
/// ngx-local-relay`, which any RTMP client can send) is checked like any other: rotating its
/// key drops it at its next `on_update`.
#[test]
fn a_publisher_claiming_to_be_the_relay_is_dropped_at_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::start(dir.path());
    let (rtmp, media, a) = (w.rtmp, w.media.clone(), w.ports.admin);
    let (jwt, id, key) = publisher(a, "spoofing-publisher");
    let url = format!("rtmp://127.0.0.1:{rtmp}/live/{key}");
    let mut spoof = publish_with(&url, 60, &["-rtmp_flashver", "ngx-local-relay"]);
    let playlist = media.join(format!("hls/{id}/index.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments(&playlist) < 2 {
        assert!(Instant::now() < deadline, "no HLS under hls/{id}/");
        assert!(
            spoof.try_wait().unwrap().is_none(),
            "dropped before rotation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    let (s, _) = api(
        a,
        "POST",
        &format!("/api/streams/{id}/key"),
        Some(&jwt),
        None,
    );
    assert_eq!(s, 200);
    let st = exits_within(&mut spoof, 10).expect("the spoofing publisher is dropped");
    assert!(!st.success());
    eprintln!(
        "publisher claiming ngx-local-relay dropped {:?} after rotation",
        t.elapsed()
    );
}
