//! The `hlsgate` command: `serve`, `edge`, `admin`, `check-config`, `token`.
//! Every start-up error is one line on stderr and a non-zero exit, never a panic.

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use hlsgate::admin::{self, AdminState};
use hlsgate::config::Config;
use hlsgate::edge::store_cache::StoreCache;
use hlsgate::edge::{self, EdgeState};
use hlsgate::store;
use hlsgate::token::{self, Binding, Grant, Keyring};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "hlsgate", version, about = "A secure HLS edge on Pingora")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Edge, admin and metrics in one process: the single-node default.
    Serve {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
    },
    /// The edge alone (a CDN node; several share one store).
    Edge {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
    },
    /// The admin sidecar alone.
    Admin {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
    },
    /// Validate a config: exit 0, or exit 2 naming the file, key and problem.
    CheckConfig {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
    },
    /// Print a signed playback URL for a stream's playlist.
    Token {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
        /// Stream id (a key of `streams` in the config).
        #[arg(long)]
        stream: String,
        /// Bind the token to this client IP (with the configured prefix length).
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Bind the token to this exact User-Agent.
        #[arg(long)]
        ua: Option<String>,
        /// Lifetime in seconds (default: tokens.ttl). An unbound token and every renewal
        /// of it stop working then; one bound to both --ip and --ua is renewed for that
        /// viewer until tokens.session_ttl.
        #[arg(long)]
        ttl: Option<u32>,
    },
}

/// mimalloc: Pingora's request path allocates a lot of small short-lived objects (about
/// +40 % requests/s on cached live playlists against glibc's malloc on the bench machine).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (the same index in mimalloc v2 and v3, see mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Cached segments are ~1 MiB buffers that come and go as the cache evicts: return their
/// memory to the OS at once instead of after mimalloc's default 10 ms delay, so RSS follows
/// `cache.max_bytes` under a storm of misses.
fn tune_allocator() {
    // SAFETY: sets an allocator option; takes no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} static stream{})",
                    config.display(),
                    c.streams.len(),
                    if c.streams.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Token {
            config,
            stream,
            ip,
            ua,
            ttl,
        } => report(print_token(&config, &stream, ip, ua, ttl)),
        Command::Serve { config } => report(run(&config, Role::Serve)),
        Command::Edge { config } => report(run(&config, Role::Edge)),
        Command::Admin { config } => report(run(&config, Role::Admin)),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hlsgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<(Config, Keyring)> {
    let cfg = Config::load(path).map_err(|e| anyhow!("{e}"))?;
    let keyring = Keyring::load_or_create(&cfg.tokens.secret_file).map_err(|e| {
        anyhow!(
            "{}: tokens.secret_file: {} ({e})",
            path.display(),
            cfg.tokens.secret_file.display()
        )
    })?;
    Ok((cfg, keyring))
}

fn print_token(
    path: &Path,
    stream: &str,
    ip: Option<IpAddr>,
    ua: Option<String>,
    ttl: Option<u32>,
) -> anyhow::Result<()> {
    let (cfg, keyring) = load(path)?;
    let s = cfg
        .streams
        .get(stream)
        .ok_or_else(|| anyhow!("unknown stream {stream:?} (not in {})", path.display()))?;
    let now = token::unix_now();
    let fully_bound = ip.is_some() && ua.is_some();
    // `--ttl` means what it says for a URL anyone could use: an unbound token and anything
    // renewed from it end then (a leaked URL must not become a bearer credential for the
    // session's 12 h). A token bound to both IP and User-Agent is renewed for that viewer
    // until tokens.session_ttl, as the seed does.
    let ttl = ttl.unwrap_or(cfg.tokens.ttl.as_secs() as u32).max(1);
    let session_ttl = if fully_bound {
        (cfg.tokens.session_ttl.as_secs() as u32).max(ttl)
    } else {
        ttl
    };
    let grant = Grant {
        stream: s.id.clone(),
        session: token::new_session_id(),
        exp: now.saturating_add(ttl),
        session_exp: now.saturating_add(session_ttl),
        binding: Binding {
            ip: ip.map(|ip| (ip, cfg.tokens.prefix_for(ip))),
            ua,
        },
        stored_session: false,
        exchanged: false,
    };
    println!(
        "{}",
        hlsgate::playback::url(
            &cfg.admin.public_edge_url,
            &keyring.issue(&grant),
            &s.id,
            &s.playlist
        )
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Serve,
    Edge,
    Admin,
}

fn run(path: &Path, role: Role) -> anyhow::Result<()> {
    let (cfg, keyring) = load(path)?;
    init_logging();
    let bind = |key: &str, addr: std::net::SocketAddr| {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("{}: {key}: cannot listen on {addr}", path.display()))
    };
    // Pingora cannot report a busy port as an error; find out first. The probes are held
    // until all are bound (so two keys naming one port are caught), then dropped for
    // Pingora to bind them itself.
    let probes = match role {
        Role::Admin => Vec::new(),
        Role::Serve | Role::Edge => vec![
            bind("edge.listen", cfg.edge.listen)?,
            bind("metrics.listen", cfg.metrics_listen)?,
        ],
    };
    let admin_listener = match role {
        Role::Edge => None,
        Role::Serve | Role::Admin => Some(bind("admin.listen", cfg.admin.listen)?),
    };
    drop(probes);

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
    ));
    let cfg = Arc::new(cfg);
    let keyring = Arc::new(keyring);

    if let Some(listener) = admin_listener {
        listener.set_nonblocking(true)?;
        let state = Arc::new(AdminState::new(
            cfg.clone(),
            keyring.clone(),
            store.clone(),
            directory.clone(),
        ));
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        tracing::info!(listen = %cfg.admin.listen, "admin API listening");
        let serve = admin::serve(state, listener);
        if role == Role::Admin {
            return rt.block_on(async {
                tokio::select! {
                    r = serve => r.context("admin server"),
                    _ = shutdown_signal() => {
                        tracing::info!("admin stopping");
                        Ok(())
                    }
                }
            });
        }
        rt.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin server stopped");
            }
        });
    }

    for s in cfg.streams.values() {
        tracing::info!(stream = %s.id, origin = %s.origin, playlist = %s.playlist, "static stream");
    }
    tracing::info!(listen = %cfg.edge.listen, "edge listening");
    tracing::info!(listen = %cfg.metrics_listen, "metrics at /metrics");
    let state = Arc::new(EdgeState::new(cfg, keyring, Some(directory)));
    // `rt` stays alive: run_forever never returns.
    edge::server(state).run_forever()
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
