//! The `hlsgate` command as an operator runs it: config checks and start-up failures are one
//! clear line and a non-zero exit, never a panic.

mod common;

use common::{bin, free_port};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(bin())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn shipped_config_checks_ok() {
    let (code, out, _) = run(&["check-config"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "conf/hlsgate.yaml: ok");
}

#[test]
fn config_errors_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "edge:\n  listne: \"0.0.0.0:1\"\n",
            "edge.listne: unknown field",
        ),
        ("tokens:\n  ttl: soon\n", "tokens.ttl: invalid duration"),
        (
            "streams:\n  x: { url: \"http://169.254.169.254/a.m3u8\" }\n",
            "streams.x.url: origin 169.254.169.254",
        ),
        (
            "streams:\n  \"42\": { url: \"file://conf/demo/index.m3u8\" }\n",
            "streams.42: numeric ids belong to streams in the store",
        ),
        (
            "store:\n  cache_ttl: \"5m\"\n",
            "store.cache_ttl: must be at most 60s",
        ),
        (
            "admin:\n  trusted_backends: [\"lan\"]\n",
            "admin.trusted_backends",
        ),
    ] {
        let f = write(dir.path(), "c.yaml", text);
        let (code, _, err) = run(&["check-config", "-c", &f]);
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with(&format!("{f}: {want}")), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        // serve refuses the same config with the same line
        let (code, _, err) = run(&["serve", "-c", &f]);
        assert_ne!(code, 0);
        assert!(err.contains(want) && !err.contains("panicked"), "{err}");
    }
    let (code, _, err) = run(&["check-config", "-c", "/nonexistent/x.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/x.yaml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn busy_port_and_bad_key_file_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let f = write(
        dir.path(),
        "c.yaml",
        &format!(
            "edge:\n  listen: \"127.0.0.1:{port}\"\ntokens:\n  secret_file: \"{}/k\"\n",
            dir.path().display()
        ),
    );
    let (code, _, err) = run(&["serve", "-c", &f]);
    assert_ne!(code, 0);
    assert!(
        err.contains("edge.listen") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // the metrics port busy
    let f = write(
        dir.path(),
        "c3.yaml",
        &format!(
            "edge:\n  listen: \"127.0.0.1:{}\"\nmetrics:\n  listen: \"127.0.0.1:{port}\"\ntokens:\n  secret_file: \"{}/k\"\n",
            free_port(),
            dir.path().display()
        ),
    );
    let (code, _, err) = run(&["serve", "-c", &f]);
    assert_ne!(code, 0);
    assert!(
        err.contains("metrics.listen") && err.contains(&port.to_string()),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // a key file that is not a key file
    let keyfile = write(dir.path(), "bad.key", "1 tooshort\n");
    let f = write(
        dir.path(),
        "c2.yaml",
        &format!(
            "edge:\n  listen: \"127.0.0.1:{}\"\ntokens:\n  secret_file: \"{keyfile}\"\n",
            free_port()
        ),
    );
    let (code, _, err) = run(&["serve", "-c", &f]);
    assert_ne!(code, 0);
    assert!(
        err.contains("tokens.secret_file") && err.contains("line 1"),
        "{err}"
    );
    assert!(
        !err.contains("tooshort"),
        "key material must not be echoed: {err}"
    );
}

/// The admin port busy, and a store that cannot be reached: one line each, and the
/// store's password is not in it.
#[test]
fn admin_port_and_store_failures_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let base = format!(
        "edge:\n  listen: \"127.0.0.1:{}\"\nmetrics:\n  listen: \"127.0.0.1:{}\"\ntokens:\n  secret_file: \"{}/k\"\n",
        free_port(),
        free_port(),
        dir.path().display()
    );
    let f = write(
        dir.path(),
        "a.yaml",
        &format!("{base}admin:\n  listen: \"127.0.0.1:{port}\"\n"),
    );
    for cmd in ["serve", "admin"] {
        let (code, _, err) = run(&[cmd, "-c", &f]);
        assert_ne!(code, 0);
        assert!(
            err.contains("admin.listen") && err.contains(&port.to_string()),
            "{cmd}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // `edge` has no admin listener: the busy admin port does not matter to it... but its
    // store does. Nothing listens on port 1.
    let f = write(
        dir.path(),
        "s.yaml",
        &format!(
            "{base}admin:\n  listen: \"127.0.0.1:{}\"\nstore:\n  url: \"postgres://hlsgate:s3cret-pw@127.0.0.1:1/hlsgate\"\n",
            free_port()
        ),
    );
    for cmd in ["serve", "edge", "admin"] {
        let (code, _, err) = run(&[cmd, "-c", &f]);
        assert_ne!(code, 0, "{cmd}");
        assert!(
            err.contains("store.url") && err.contains("cannot connect"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("s3cret-pw"), "password leaked: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn token_prints_a_playback_url_and_refuses_unknown_streams() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.yaml",
        &format!(
            "tokens:\n  secret_file: \"{}/secret.key\"\nstreams:\n  demo: {{ url: \"file://conf/demo/index.m3u8\" }}\n",
            dir.path().display()
        ),
    );
    let (code, out, err) = run(&[
        "token",
        "-c",
        &f,
        "--stream",
        "demo",
        "--ua",
        "x",
        "--ip",
        "192.0.2.1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("http://127.0.0.1:8080/api/hls/"), "{out}");
    assert!(out.trim_end().ends_with("/demo/index.m3u8"), "{out}");
    // the key file was created private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, _, err) = run(&["token", "-c", &f, "--stream", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown stream"), "{err}");
}

/// The shipped systemd unit keeps its least-privilege settings, and the bench config the
/// load tests use is a valid config.
#[test]
fn systemd_unit_is_least_privilege_and_bench_config_checks() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hlsgate@.service"),
    )
    .unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "ExecStart=/usr/bin/hlsgate %i -c /etc/hlsgate/hlsgate.yaml --upgrade-socket /run/hlsgate-%i/upgrade.sock",
    ] {
        assert!(
            lines.contains(&want),
            "systemd/hlsgate@.service lacks {want:?}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("User=root") || l.starts_with("ProtectSystem=no")),
        "unit runs privileged"
    );
    let (code, out, err) = run(&["check-config", "-c", "bench/hlsgate.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The folders hlsgate creates (key file, SQLite store, upgrade socket) are its user's
/// only: another local user cannot connect to the upgrade socket first.
#[cfg(unix)]
#[test]
fn the_folders_hlsgate_creates_are_its_users_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (config, ports) = common::write_config(d, "2s", "streams: {}\n");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("secret_file: \"{}/secret.key\"", d.display()),
            &format!("secret_file: \"{}/keys/secret.key\"", d.display()),
        )
        .replace(
            &format!("sqlite://{}/hlsgate.db", d.display()),
            &format!("sqlite://{}/db/hlsgate.db", d.display()),
        );
    std::fs::write(&config, text).unwrap();
    common::add_config_keys(
        &config,
        "edge",
        &format!("  upgrade_socket: \"{}/run/upgrade.sock\"\n", d.display()),
    );
    let _serve = common::Hlsgate::start("serve", &config, ports.edge);
    for sub in ["keys", "db", "run"] {
        let mode = std::fs::metadata(d.join(sub)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{sub}");
    }
}

/// `hlsgate token` as README's walkthroughs run it: a registered stream by its number (from
/// the store) plays through the edge; `--ttl` takes the config's durations ("5m") and
/// refuses nonsense; with no `-c` outside the checkout, one line says where it looked.
#[test]
fn token_knows_store_streams_and_durations_and_the_default_config_is_explained() {
    use common::{add_stream_as, get, login_as, path_of, write_config, Hlsgate, Origin};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("origin");
    std::fs::create_dir_all(root.join("live")).unwrap();
    std::fs::write(
        root.join("live/index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n",
    )
    .unwrap();
    let origin = Origin::start(root);
    let (config, ports) = write_config(dir.path(), "5s", "");
    let g = Hlsgate::start("serve", &config, ports.edge);
    let jwt = login_as("cli-test", ports.admin, "cliuser");
    let url = format!("http://127.0.0.1:{}/live/index.m3u8", origin.port);
    let id = add_stream_as("cli-test", ports.admin, &jwt, &url);

    let cfg = config.display().to_string();
    let sid = id.to_string();
    let token_for = |ttl: &str| run(&["token", "-c", &cfg, "--stream", &sid, "--ttl", ttl]);
    let (code, out, err) = token_for("5m");
    assert_eq!(code, 0, "{err}");
    let u = out.trim();
    assert!(u.ends_with(&format!("/{id}/index.m3u8")), "{u}");
    let r = get(g.port, &path_of(u), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("#EXTM3U"), "{}", r.text());

    // a stream number the store does not have, and lifetimes that are no lifetimes
    let (code, _, err) = run(&["token", "-c", &cfg, "--stream", "999"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown stream 999"), "{err}");
    for bad in ["0", "5x", "0s"] {
        let (code, _, err) = run(&["token", "-c", &cfg, "--stream", "1", "--ttl", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--ttl"), "{err}");
    }
    // seconds as before, and a duration ends when it says (the token's expiry is in it:
    // an unbound URL made with --ttl 1s is refused once it has passed)
    let (code, out, _) = token_for("1s");
    assert_eq!(code, 0);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = get(g.port, &path_of(out.trim()), &[]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());

    // no -c, run from a folder without conf/: the places looked at, on one line
    let out = Command::new(bin())
        .args(["check-config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/etc/hlsgate/hlsgate.yaml").exists() {
        assert!(out.status.success(), "{err}");
    } else {
        assert!(!out.status.success());
        assert!(
            err.contains("conf/hlsgate.yaml")
                && err.contains("/etc/hlsgate/hlsgate.yaml")
                && err.contains("-c FILE"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let (code, out, _) = run(&["check-config"]);
    assert_eq!((code, out.trim()), (0, "conf/hlsgate.yaml: ok"));
    drop(g);
}
