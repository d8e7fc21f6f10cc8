//! The Debian package and its systemd unit, as an operator would get them: the `.deb` built
//! by `scripts/package.sh` (cargo-deb), its contents, its config run from the installed
//! tree (ffmpeg plays the packaged demo), the unit checked by `systemd-analyze verify` and
//! `systemd-analyze security` in a throwaway root; and the unit's reload sequence
//! (`--upgrade --background`, then SIGQUIT) with systemd's notify socket.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Build the package (release build) and return its path.
fn build_deb() -> PathBuf {
    // (as an operator runs it: a release build under cargo's test variables would be
    // rebuilt by the next plain `cargo build --release`, and this one by that)
    let (ok, _, err) = run(shell_env(&mut Command::new("bash"))
        .arg(repo().join("scripts/package.sh"))
        .current_dir(repo()));
    assert!(ok, "scripts/package.sh failed:\n{err}");
    let version = env!("CARGO_PKG_VERSION");
    let deb = repo().join(format!("target/debian/hlsgate_{version}-1_amd64.deb"));
    assert!(deb.exists(), "{} missing:\n{err}", deb.display());
    deb
}

#[test]
fn deb_holds_a_working_install_and_units_that_verify() {
    let deb = build_deb();
    let (ok, listing, err) = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(ok, "{err}");
    for path in [
        "./usr/bin/hlsgate",
        "./etc/hlsgate/hlsgate.yaml",
        "./lib/systemd/system/hlsgate@.service",
        "./usr/share/hlsgate/demo/index.m3u8",
        "./usr/share/hlsgate/demo/seg0.ts",
        "./usr/share/doc/hlsgate/README.md",
        "./usr/share/doc/hlsgate/hlsgate.yaml.example",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} not in the package:\n{listing}"
        );
    }
    let (_, conffiles, _) = run(Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/hlsgate/hlsgate.yaml");
    let (_, control, _) = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb));
    assert!(
        control.contains("Package: hlsgate") && control.contains("Depends: libc6"),
        "{control}"
    );

    // Unpacked into a throwaway root.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (ok, _, err) = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(ok, "{err}");
    let bin = root.join("usr/bin/hlsgate");
    let (ok, out, _) = run(Command::new(&bin).arg("--version"));
    assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size < 60 << 20, "the binary is not stripped: {size} bytes");

    // The packaged config names only absolute paths, each shipped by the package or made
    // by the unit (StateDirectory /var/lib/hlsgate, RuntimeDirectory /run/hlsgate-*).
    let conf = std::fs::read_to_string(root.join("etc/hlsgate/hlsgate.yaml")).unwrap();
    assert!(
        !conf.contains("\"data/") && !conf.contains("file://conf"),
        "relative paths left"
    );
    assert!(conf.contains("file:///usr/share/hlsgate/demo/index.m3u8"));
    assert!(conf.contains("/var/lib/hlsgate/secret.key"));
    assert!(conf.contains("sqlite:///var/lib/hlsgate/hlsgate.db"));

    // Run that config from the unpacked tree (paths moved under it, ports free): the
    // unit's ExecStartPre passes and ffmpeg plays the packaged demo.
    let state = tmp.path().join("state");
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    let ports = EdgePorts {
        edge: free_port(),
        metrics: free_port(),
        admin: free_port(),
    };
    let local = conf
        .replace(
            "/usr/share/hlsgate",
            &root.join("usr/share/hlsgate").display().to_string(),
        )
        .replace("/var/lib/hlsgate", &state.display().to_string())
        .replace("/run/hlsgate-serve", &run_dir.display().to_string())
        .replace("\"0.0.0.0:8080\"", &format!("\"127.0.0.1:{}\"", ports.edge))
        .replace(
            "\"127.0.0.1:8081\"",
            &format!("\"127.0.0.1:{}\"", ports.admin),
        )
        .replace(
            "\"127.0.0.1:9100\"",
            &format!("\"127.0.0.1:{}\"", ports.metrics),
        )
        .replace(
            "\"http://127.0.0.1:8080\"",
            &format!("\"http://127.0.0.1:{}\"", ports.edge),
        );
    let cfg = tmp.path().join("hlsgate.yaml");
    std::fs::write(&cfg, local).unwrap();
    let (ok, out, err) = run(Command::new(&bin).arg("check-config").arg("-c").arg(&cfg));
    assert!(ok, "{out}{err}");
    let mut child = Command::new(&bin)
        .arg("serve")
        .arg("-c")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(ports.edge, "/healthz", &[]).map_or(true, |r| r.status != 200) {
        assert!(
            Instant::now() < deadline,
            "the packaged binary did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, url, err) = run(Command::new(&bin)
        .args(["token", "--stream", "demo", "-c"])
        .arg(&cfg));
    assert!(ok, "{err}");
    let (played, err) = ffmpeg_play(url.trim(), "package-test/1.0");
    let _ = child.kill();
    let _ = child.wait();
    assert!(played, "{err}");

    // The unit, in the root with the host's base targets beside it (what a Debian system
    // has): `systemd-analyze verify` for each instance, with nothing to say.
    let units = root.join("lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".target") || name.ends_with(".slice") {
            let _ = std::fs::copy(&p, units.join(&name));
        }
    }
    let unit = std::fs::read_to_string(units.join("hlsgate@.service")).unwrap();
    for instance in ["serve", "edge", "admin"] {
        let (ok, out, err) = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(format!("hlsgate@{instance}.service")));
        assert!(ok && err.trim().is_empty(), "verify {instance}: {out}{err}");
    }
    // Every command the unit runs exists (in the package, or /bin/kill on the host).
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        let cmd = line
            .split_once('=')
            .unwrap()
            .1
            .split_whitespace()
            .next()
            .unwrap();
        let inside = root.join(cmd.trim_start_matches('/'));
        assert!(
            inside.exists() || Path::new(cmd).exists(),
            "{line}: {cmd} missing"
        );
    }
    assert!(unit.contains("Type=notify") && unit.contains("NotifyAccess=all"));
    assert!(
        unit.contains("--upgrade --background")
            && unit.contains("ExecReload=/bin/kill -QUIT $MAINPID")
    );
    // Hardening kept: systemd's own exposure score.
    let (_, out, err) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--root={}", root.display()))
        .arg("hlsgate@serve.service"));
    let text = format!("{out}{err}");
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("hlsgate@serve.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}

/// The unit's first ExecReload command. Its output goes to a file: the process left in
/// the background keeps it open (a pipe would never reach its end).
fn reload_command(config: &Path, upgrade_sock: &str, log: &Path) -> (bool, String) {
    let status = Command::new(bin())
        .args(["serve", "-c"])
        .arg(config)
        .args([
            "--upgrade-socket",
            upgrade_sock,
            "--upgrade",
            "--background",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .status()
        .unwrap();
    (
        status.success(),
        std::fs::read_to_string(log).unwrap_or_default(),
    )
}

/// What the notify socket received so far.
fn notes(sock: &UnixDatagram) -> Vec<String> {
    let mut v = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = sock.recv(&mut buf) {
        v.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    v
}

#[test]
fn the_units_reload_sequence_hands_over_and_a_bad_config_fails_it() {
    let dir = tempfile::tempdir().unwrap().keep();
    let origin = Origin::with_streams(dir.join("origin"));
    let (config, ports) = write_config(&dir, "5s", &format!("streams:\n{}", origin.streams_yaml()));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("grace_period: \"0s\"", "shutdown_grace: \"5s\"");
    std::fs::write(&config, &text).unwrap();
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // SAFETY: set before any thread of this test binary reads the environment (the only
    // other test does not start hlsgate with it).
    std::env::set_var("NOTIFY_SOCKET", &notify);
    let upgrade_sock = dir.join("run-serve-upgrade.sock");
    let us = upgrade_sock.to_str().unwrap();

    // ExecStart
    let mut old = Hlsgate::spawn("serve", &config, ports.edge, &["--upgrade-socket", us]);
    old.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|n: &String| n.starts_with("READY=1\nMAINPID="))
    {
        assert!(
            Instant::now() < deadline,
            "no READY from the first process: {seen:?}"
        );
        seen.extend(notes(&sock));
    }
    let old_pid: u32 = seen
        .iter()
        .find_map(|n| n.strip_prefix("READY=1\nMAINPID="))
        .unwrap()
        .parse()
        .unwrap();

    // ExecReload with a broken config: the first command fails, nothing is handed over.
    std::fs::write(&config, format!("{text}\nedge: [")).unwrap();
    let (ok, err) = reload_command(&config, us, &dir.join("reload.log"));
    assert!(!ok && err.contains("hlsgate.yaml"), "{err}");
    std::fs::write(&config, &text).unwrap();

    // ExecReload: the new process in the background (the command returns at once), then
    // SIGQUIT to MAINPID; the new process tells systemd it is the main process now.
    let url = old.token_url(&["--stream", "ts", "--ttl", "600"]);
    let started = Instant::now();
    let (ok, err) = reload_command(&config, us, &dir.join("reload.log"));
    assert!(ok, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "--background waited"
    );
    old.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_pid: u32 = loop {
        assert!(
            Instant::now() < deadline,
            "no READY from the new process: {seen:?}"
        );
        seen.extend(notes(&sock));
        if let Some(p) = seen
            .iter()
            .filter_map(|n| n.strip_prefix("READY=1\nMAINPID="))
            .map(|p| p.parse::<u32>().unwrap())
            .find(|p| *p != old_pid)
        {
            break p;
        }
    };
    // While the old one drains, and after it has gone, the edge answers.
    assert_eq!(get(ports.edge, &path_of(&url), &[]).unwrap().status, 200);
    assert!(
        old.wait_exit(Duration::from_secs(12)).is_some(),
        "old process still running"
    );
    assert!(seen.iter().any(|n| n == "STOPPING=1"), "{seen:?}");
    assert_eq!(get(ports.edge, &path_of(&url), &[]).unwrap().status, 200);
    // The new process is not a child of this test: stop it by its PID.
    unsafe { libc::kill(new_pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(ports.edge, "/healthz", &[]).is_ok() {
        assert!(
            Instant::now() < deadline,
            "new process did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
