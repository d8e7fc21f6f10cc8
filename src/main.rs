//! The `hlsgate` command: `serve`, `edge`, `check-config`, `token`.
//! Every start-up error is one line on stderr and a non-zero exit, never a panic.

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use hlsgate::config::Config;
use hlsgate::edge::{self, EdgeState};
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
    /// Edge (+ admin and metrics as they arrive) in one process: the single-node default.
    Serve {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
    },
    /// The edge alone (a CDN node).
    Edge {
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
        /// Lifetime in seconds (default: tokens.ttl).
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
        Command::Serve { config } | Command::Edge { config } => report(run_edge(&config)),
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
    let ttl = ttl.unwrap_or(cfg.tokens.ttl.as_secs() as u32).max(1);
    let session_ttl = (cfg.tokens.session_ttl.as_secs() as u32).max(ttl);
    let grant = Grant {
        stream: s.id.clone(),
        session: token::new_session_id(),
        exp: now.saturating_add(ttl),
        session_exp: now.saturating_add(session_ttl),
        binding: Binding {
            ip: ip.map(|ip| (ip, cfg.tokens.prefix_for(ip))),
            ua,
        },
    };
    println!(
        "{}/api/hls/{}/{}/{}",
        cfg.admin.public_edge_url,
        keyring.issue(&grant),
        s.id,
        s.playlist
    );
    Ok(())
}

fn run_edge(path: &Path) -> anyhow::Result<()> {
    let (cfg, keyring) = load(path)?;
    init_logging();
    // Pingora cannot report a busy port as an error; find out first.
    for (key, addr) in [
        ("edge.listen", cfg.edge.listen),
        ("metrics.listen", cfg.metrics_listen),
    ] {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("{}: {key}: cannot listen on {addr}", path.display()))?;
    }
    for s in cfg.streams.values() {
        tracing::info!(stream = %s.id, origin = %s.origin, playlist = %s.playlist, "static stream");
    }
    tracing::info!(listen = %cfg.edge.listen, "edge listening");
    tracing::info!(listen = %cfg.metrics_listen, "metrics at /metrics");
    let state = Arc::new(EdgeState::new(Arc::new(cfg), Arc::new(keyring)));
    edge::server(state).run_forever()
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
