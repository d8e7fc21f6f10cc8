//! The running process: one Pingora server holding the edge, the metrics endpoint and the
//! admin (as the role asks), and what it does on signals.
//!
//! | signal | effect |
//! |---|---|
//! | `SIGHUP` | reload the config: streams, token keys, CORS, limits, external auth, certificates; a config that does not load is refused and logged, the old one keeps serving |
//! | `SIGQUIT` | hand the listening sockets to a process started with `--upgrade` (Pingora's graceful upgrade; waited for up to 5 s), finish the requests in flight, exit; with no such process, log and keep serving |
//! | `SIGTERM` | stop accepting, finish the requests in flight, exit as soon as none is left or `edge.shutdown_grace` has passed |
//! | `SIGINT` | exit now |
//!
//! Under systemd (`Type=notify`) the process says `READY=1` with its PID once it listens,
//! so a process started by `ExecReload` (`--upgrade --background`) becomes the unit's main
//! process when it takes over.

use crate::admin::{AdminApp, AdminState};
use crate::config::Config;
use crate::edge::guard::Limits;
use crate::edge::store_cache::StoreCache;
use crate::edge::{self, access::AccessLog, EdgeState, Live};
use crate::metrics::METRICS;
use crate::store;
use crate::tls::Certs;
use crate::token::Keyring;
use anyhow::{anyhow, Context};
use pingora_core::server::configuration::Opt;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which parts run in this process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Edge, admin and metrics: the single-node default.
    Serve,
    /// Edge and metrics.
    Edge,
    /// The admin alone.
    Admin,
}

impl Role {
    fn edge(self) -> bool {
        self != Role::Admin
    }
    fn admin(self) -> bool {
        self != Role::Edge
    }
}

/// Pingora's pause between handing the sockets over and stopping its own accepting
/// (`CLOSE_TIMEOUT` in pingora-core's server).
const HANDOVER: Duration = Duration::from_secs(5);

/// How often TLS certificate files are looked at for a renewal.
const CERT_CHECK: Duration = Duration::from_secs(10);

/// Read the config and its token key file (created when missing).
pub fn load(path: &Path) -> anyhow::Result<(Config, Keyring)> {
    let cfg = Config::load(path).map_err(|e| anyhow!("{e}"))?;
    let keyring = key_file(path, &cfg, true)?;
    Ok((cfg, keyring))
}

/// The token keys of `cfg` (read from `path`); `create`: make the key file when it is
/// missing (a start), or never (a reload: a new key would fail every token outstanding).
fn key_file(path: &Path, cfg: &Config, create: bool) -> anyhow::Result<Keyring> {
    let file = &cfg.tokens.secret_file;
    let keyring = if create {
        Keyring::load_or_create(file)
    } else {
        Keyring::load(file)
    };
    keyring.map_err(|e| {
        anyhow!(
            "{}: tokens.secret_file: {} ({e}){}",
            path.display(),
            file.display(),
            if create {
                ""
            } else {
                "; a reload never creates key files"
            }
        )
    })
}

/// The listeners a role opens, with the config keys that name them.
fn listeners(cfg: &Config, role: Role) -> Vec<(&'static str, std::net::SocketAddr)> {
    let mut v = Vec::new();
    if role.edge() {
        v.push(("edge.listen", cfg.edge.listen));
        if let Some(t) = &cfg.edge.tls {
            v.push(("edge.tls.listen", t.listen));
        }
        v.push(("metrics.listen", cfg.metrics_listen));
    }
    if role.admin() {
        v.push(("admin.listen", cfg.admin.listen));
        if let Some(t) = &cfg.admin.tls {
            v.push(("admin.tls.listen", t.listen));
        }
    }
    v
}

/// How a process is started, besides its config file.
#[derive(Debug, Default, Clone)]
pub struct Start {
    /// Take the listening sockets over from the running process (through
    /// `edge.upgrade_socket`).
    pub upgrade: bool,
    /// In place of `edge.upgrade_socket` (the systemd unit gives each instance its own).
    pub upgrade_socket: Option<PathBuf>,
}

impl Start {
    /// The config at `path` and its key file, with this start's overrides.
    pub fn load(&self, path: &Path) -> anyhow::Result<(Config, Keyring)> {
        let (mut cfg, keyring) = load(path)?;
        self.apply(&mut cfg);
        Ok((cfg, keyring))
    }

    /// This start's overrides of what the config file says.
    fn apply(&self, cfg: &mut Config) {
        if let Some(s) = &self.upgrade_socket {
            cfg.edge.upgrade_socket = s.clone();
        }
    }
}

/// Run `role` with `loaded` (`start.load(path)`: `path` is read again on SIGHUP) until a
/// signal ends it.
pub fn run(path: &Path, role: Role, start: Start, loaded: (Config, Keyring)) -> anyhow::Result<()> {
    let upgrade = start.upgrade;
    let (cfg, keyring) = loaded;
    if !upgrade {
        // Pingora cannot report a busy port as an error; find out first. The probes are
        // held until all are bound (two keys naming one port are caught), then dropped for
        // Pingora to bind them itself. An upgrade takes them from the old process instead.
        let mut probes = Vec::new();
        for (key, addr) in listeners(&cfg, role) {
            probes.push(
                std::net::TcpListener::bind(addr).with_context(|| {
                    format!("{}: {key}: cannot listen on {addr}", path.display())
                })?,
            );
        }
    }
    let access = match role.edge() {
        true => AccessLog::open(&cfg.edge.access_log, cfg.edge.access_log_json)
            .map_err(|e| anyhow!("{}: edge.access_log: {e}", path.display()))?
            .map(Arc::new),
        false => None,
    };
    let certs =
        |t: &Option<crate::config::Tls>, what: &str| -> anyhow::Result<Option<Arc<Certs>>> {
            let Some(t) = t else { return Ok(None) };
            let c = Certs::load(t, what).map_err(|e| anyhow!("{}: {what}: {e}", path.display()))?;
            c.watch(CERT_CHECK);
            Ok(Some(c))
        };
    let edge_certs = if role.edge() {
        certs(&cfg.edge.tls, "edge.tls")?
    } else {
        None
    };
    let admin_certs = if role.admin() {
        certs(&cfg.admin.tls, "admin.tls")?
    } else {
        None
    };

    // The store and the admin run on their own runtime; Pingora's runtimes only await it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hlsgate-store")
        .enable_all()
        .build()
        .context("cannot start the store runtime")?;
    let store = rt
        .block_on(store::open(&cfg.store_url))
        .map_err(|e| anyhow!("{}: store.url: {e}", path.display()))?;
    tracing::info!(backend = store.backend(), url = %store::redact_url(&cfg.store_url), "store open");
    let directory = Arc::new(StoreCache::new(
        store.clone(),
        rt.handle().clone(),
        cfg.store_cache_ttl,
        cfg.store_stale_if_error,
    ));
    let cfg = Arc::new(cfg);
    let keyring = Arc::new(keyring);

    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    // The upgrade socket's folder: the owner's only where hlsgate makes it (see `private`).
    if let Some(dir) = cfg.edge.upgrade_socket.parent() {
        crate::private::create_dir(dir).with_context(|| {
            format!(
                "{}: edge.upgrade_socket: cannot create {}",
                path.display(),
                dir.display()
            )
        })?;
    }
    let mut server = Server::new_with_opt_and_conf(Some(opt), edge::server_conf(&cfg));
    if upgrade {
        tracing::info!(socket = %cfg.edge.upgrade_socket.display(), "waiting for the running process's listening sockets (send it SIGQUIT)");
    }
    server.bootstrap();

    let mut control = Control {
        path: path.to_owned(),
        // Readiness is probed on the plain listeners: a probe that connects to a TLS one
        // and leaves is a failed handshake, logged as an ERROR by Pingora (the TLS
        // listeners are bound by the same services, before them).
        listeners: listeners(&cfg, role)
            .into_iter()
            .filter(|(key, _)| !key.ends_with("tls.listen"))
            .map(|(_, a)| a)
            .collect(),
        start,
        cfg: parking_lot::Mutex::new(cfg.clone()),
        edge: None,
        admin: None,
        certs: edge_certs.iter().chain(&admin_certs).cloned().collect(),
        access: access.clone(),
    };
    if role.edge() {
        for s in cfg.streams.values() {
            tracing::info!(stream = %s.id, origin = %s.origin, playlist = %s.playlist, "static stream");
        }
        let live: Live = Arc::new(arc_swap::ArcSwap::from_pointee(EdgeState::new(
            cfg.clone(),
            keyring.clone(),
            Some(directory.clone()),
        )));
        let limits = Limits::new(&cfg.edge);
        METRICS.count_connections(limits.clone());
        METRICS.streams.set_limit(cfg.metrics_stream_labels);
        edge::add_services(&mut server, &live, &limits, edge_certs.as_ref(), access);
        tracing::info!(listen = %cfg.edge.listen, "edge listening");
        if let Some(t) = &cfg.edge.tls {
            tracing::info!(listen = %t.listen, "edge listening (TLS: h2, http/1.1)");
        }
        tracing::info!(listen = %cfg.metrics_listen, "metrics at /metrics");
        control.edge = Some((live, limits));
    }
    if role.admin() {
        let state = Arc::new(AdminState::new(
            cfg.clone(),
            keyring.clone(),
            store.clone(),
            directory.clone(),
        ));
        let app = AdminApp::new(state.clone(), rt.handle().clone());
        let open = app.open.clone();
        let mut svc = pingora_core::services::listening::Service::new("hlsgate admin".into(), app);
        svc.threads = Some(1);
        svc.add_tcp(&cfg.admin.listen.to_string());
        tracing::info!(listen = %cfg.admin.listen, "admin API listening");
        if let (Some(t), Some(c)) = (&cfg.admin.tls, &admin_certs) {
            svc.add_tls_with_settings(&t.listen.to_string(), None, c.settings(false));
            tracing::info!(listen = %t.listen, "admin API listening (TLS)");
        }
        server.add_service(svc);
        control.admin = Some((state, open));
    }
    let control = Arc::new(control);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals(control.clone())),
    });
    if let Some(a) = &control.access {
        a.flush();
    }
    // `rt` (the store) lives until here.
    drop(rt);
    Ok(())
}

/// What a signal acts on.
struct Control {
    path: PathBuf,
    /// Every listening address of this process (ready = all of them accept).
    listeners: Vec<std::net::SocketAddr>,
    start: Start,
    /// The config in force.
    cfg: parking_lot::Mutex<Arc<Config>>,
    edge: Option<(Live, Arc<Limits>)>,
    admin: Option<(Arc<AdminState>, Arc<AtomicUsize>)>,
    certs: Vec<Arc<Certs>>,
    access: Option<Arc<AccessLog>>,
}

/// Keys a reload cannot apply to a running process (listening sockets, threads, the
/// store, the cache's size): they take effect on `--upgrade` or a restart.
fn fixed_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |key, changed: bool| {
        if changed {
            v.push(key)
        }
    };
    check("edge.listen", old.edge.listen != new.edge.listen);
    check("edge.threads", old.edge.threads != new.edge.threads);
    check(
        "edge.work_stealing",
        old.edge.work_stealing != new.edge.work_stealing,
    );
    check("edge.tls", old.edge.tls != new.edge.tls);
    check("admin.listen", old.admin.listen != new.admin.listen);
    check("admin.tls", old.admin.tls != new.admin.tls);
    check("metrics.listen", old.metrics_listen != new.metrics_listen);
    check("store.url", old.store_url != new.store_url);
    check("cache", old.cache != new.cache);
    check(
        "edge.upgrade_socket",
        old.edge.upgrade_socket != new.edge.upgrade_socket,
    );
    check(
        "edge.access_log",
        old.edge.access_log != new.edge.access_log
            || old.edge.access_log_json != new.edge.access_log_json,
    );
    check(
        "edge.shutdown_grace",
        old.edge.shutdown_grace != new.edge.shutdown_grace,
    );
    check(
        "origins.ca_file",
        old.origins.ca_file != new.origins.ca_file,
    );
    v
}

impl Control {
    /// The config a SIGHUP would apply, or why not. Stricter than a start: an empty file is
    /// refused (not all defaults), so is one that drops every static stream the running
    /// config serves, and the key file must exist (a reload never creates one: a new key
    /// would fail every token outstanding).
    fn reloaded(&self) -> anyhow::Result<(Config, Keyring)> {
        let path = &self.path;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if text.trim().is_empty() {
            return Err(anyhow!(
                "{}: the file is empty (being written?); a reload never falls back to defaults",
                path.display()
            ));
        }
        let mut cfg = Config::load(path).map_err(|e| anyhow!("{e}"))?;
        self.start.apply(&mut cfg);
        let before = self.cfg.lock().streams.len();
        if before > 0 && cfg.streams.is_empty() {
            return Err(anyhow!(
                "{}: streams: the new config has none of the {before} static streams served now \
                 (a truncated file?); remove them one by one, or restart",
                path.display()
            ));
        }
        let keyring = key_file(path, &cfg, false)?;
        Ok((cfg, keyring))
    }

    /// `SIGHUP`: read the config again; apply it, or refuse it and keep the old one.
    fn reload(&self) {
        sd_notify("RELOADING=1");
        match self.reloaded() {
            Err(e) => {
                METRICS.reloads.with_label_values(&["refused"]).inc();
                tracing::error!(error = %format!("{e:#}"), "config reload refused; still serving the previous config");
            }
            Ok((cfg, keyring)) => {
                let cfg = Arc::new(cfg);
                let keyring = Arc::new(keyring);
                let fixed = fixed_keys_changed(&self.cfg.lock(), &cfg);
                if let Some((live, limits)) = &self.edge {
                    let next = live.load().renewed(cfg.clone(), keyring.clone());
                    live.store(Arc::new(next));
                    limits.set(&cfg.edge);
                }
                METRICS.streams.set_limit(cfg.metrics_stream_labels);
                if let Some((admin, _)) = &self.admin {
                    admin.reload(cfg.clone(), keyring);
                }
                for c in &self.certs {
                    c.refresh();
                }
                if let Some(a) = &self.access {
                    a.reopen();
                }
                METRICS.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    file = %self.path.display(),
                    static_streams = cfg.streams.len(),
                    "config reloaded"
                );
                if !fixed.is_empty() {
                    tracing::warn!(keys = %fixed.join(", "), "changed, but these take effect only on an upgrade (--upgrade) or a restart");
                }
                *self.cfg.lock() = cfg;
            }
        }
        sd_notify("READY=1");
    }

    fn open_connections(&self) -> usize {
        self.edge.as_ref().map_or(0, |(_, l)| l.open())
            + self
                .admin
                .as_ref()
                .map_or(0, |(_, open)| open.load(Ordering::Acquire))
    }

    /// After `delay` (the handover, for an upgrade), exit as soon as no connection is
    /// left, or when `edge.shutdown_grace` has passed (Pingora's own bound).
    fn drain(self: &Arc<Self>, delay: Duration) {
        edge::DRAINING.store(true, Ordering::Relaxed);
        sd_notify("STOPPING=1");
        let me = self.clone();
        let grace = self.cfg.lock().edge.shutdown_grace;
        let _ = std::thread::Builder::new()
            .name("hlsgate-drain".into())
            .spawn(move || {
                std::thread::sleep(delay + Duration::from_millis(200));
                let start = Instant::now();
                loop {
                    let open = me.open_connections();
                    if open == 0 || start.elapsed() >= grace {
                        tracing::info!(
                            open,
                            waited_ms = start.elapsed().as_millis() as u64,
                            "drained; exiting"
                        );
                        if let Some(a) = &me.access {
                            a.flush();
                        }
                        std::process::exit(0);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
    }
}

/// The signals of [`Control`], in place of Pingora's own watcher (which has no reload).
struct Signals(Arc<Control>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        // Pingora calls this once its services are started; each binds its listeners on a
        // task of its own. Ready (for systemd, scripts/run.sh and the tests) is when every
        // listener accepts.
        for addr in &self.0.listeners {
            let mut probe = *addr;
            if probe.ip().is_unspecified() {
                probe.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(probe),
            )
            .await
            .map_or(true, |c| c.is_err())
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        tracing::info!(
            pid = std::process::id(),
            "running (SIGHUP reloads, SIGQUIT hands over to --upgrade, SIGTERM drains)"
        );
        let (Ok(mut hup), Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot watch signals; exiting");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => self.0.reload(),
                _ = quit.recv() => {
                    let socket = self.0.cfg.lock().edge.upgrade_socket.clone();
                    // systemd's ExecReload starts the successor in the background and sends
                    // SIGQUIT at once: give it up to 5 s to start listening.
                    let mut waiting = successor_waiting(&socket);
                    let until = Instant::now() + Duration::from_secs(5);
                    while waiting == Some(false) && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        waiting = successor_waiting(&socket);
                    }
                    if waiting == Some(false) {
                        // Handing over to nobody would take the node down.
                        tracing::warn!(socket = %socket.display(), "SIGQUIT, but no process is waiting for the listening sockets (start `hlsgate ... --upgrade` first); still serving");
                        continue;
                    }
                    tracing::info!("SIGQUIT: handing the listening sockets over, then draining");
                    self.0.drain(HANDOVER);
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: draining");
                    self.0.drain(Duration::ZERO);
                    return ShutdownSignal::GracefulTerminate;
                }
                // `run` flushes the access log once Pingora returns.
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

/// Whether a process started with `--upgrade` listens on the upgrade socket `socket`, from
/// the kernel's table of Unix sockets (a probe connection would be taken for the hand-over
/// itself); `None` when that table cannot be read (the hand-over is then attempted).
fn successor_waiting(socket: &Path) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let given = socket.display().to_string();
    let absolute = std::env::current_dir()
        .ok()
        .map(|d| d.join(socket).display().to_string());
    Some(listening_on(&table, &given, absolute.as_deref()))
}

/// Whether `/proc/net/unix` text `table` has a listening socket (flags `00010000`,
/// `__SO_ACCEPTCON`) bound to `path` (or `absolute`, the same path from the working
/// folder).
fn listening_on(table: &str, path: &str, absolute: Option<&str>) -> bool {
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8 && f[3] == "00010000" && (f[7] == path || Some(f[7]) == absolute)
    })
}

/// Tell systemd (`Type=notify`, `NotifyAccess=all`) about the service's state; nothing
/// without `NOTIFY_SOCKET`.
pub fn sd_notify(msg: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    if let Ok(addr) = addr {
        let _ = sock.send_to_addr(msg.as_bytes(), &addr);
    }
}

/// `--background`: fork; the parent exits at once (for systemd's `ExecReload`, which
/// waits for its command), the child carries on in a session of its own. Called before
/// any thread is started.
pub fn background() -> anyhow::Result<bool> {
    // SAFETY: no other thread exists yet (called first thing in main); the child only
    // calls async-signal-safe functions before carrying on as the only thread.
    match unsafe { libc::fork() } {
        -1 => Err(anyhow!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: plain system calls on the child's own process and descriptors.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::close(null);
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_successor_is_a_listening_socket_on_the_upgrade_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/hlsgate/upgrade.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 12 data/upgrade.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 13 /tmp/other.sock\n";
        assert!(super::listening_on(
            table,
            "/run/hlsgate/upgrade.sock",
            None
        ));
        // connected, not listening: no successor
        assert!(!super::listening_on(table, "data/upgrade.sock", None));
        assert!(super::listening_on(
            table,
            "x/other.sock",
            Some("/tmp/other.sock")
        ));
        assert!(!super::listening_on(table, "/run/none.sock", None));
    }
}
