//! The `hlsgate` command: `serve`, `edge`, `admin`, `check-config`, `token`.
//! Every start-up error is one line on stderr and a non-zero exit, never a panic.

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use hlsgate::config::Config;
use hlsgate::server::Role;
use hlsgate::token::{self, Binding, Grant};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
        #[command(flatten)]
        run: RunFlags,
    },
    /// The edge alone (a CDN node; several share one store).
    Edge {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
        #[command(flatten)]
        run: RunFlags,
    },
    /// The admin sidecar alone.
    Admin {
        #[arg(short = 'c', long = "config", default_value = "conf/hlsgate.yaml")]
        config: PathBuf,
        #[command(flatten)]
        run: RunFlags,
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

#[derive(clap::Args)]
struct RunFlags {
    /// Take the listening sockets over from the running process (through
    /// edge.upgrade_socket; send that process SIGQUIT within 5 s), with no connection lost.
    #[arg(short = 'u', long)]
    upgrade: bool,
    /// Check the config, then carry on in the background and return at once (systemd's
    /// ExecReload: `--upgrade --background`, then SIGQUIT to the old process).
    #[arg(long)]
    background: bool,
    /// In place of edge.upgrade_socket (the systemd unit gives each instance its own).
    #[arg(long, value_name = "PATH")]
    upgrade_socket: Option<PathBuf>,
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
        Command::Serve { config, run } => start(&config, Role::Serve, run),
        Command::Edge { config, run } => start(&config, Role::Edge, run),
        Command::Admin { config, run } => start(&config, Role::Admin, run),
    }
}

fn start(config: &Path, role: Role, flags: RunFlags) -> ExitCode {
    let start = hlsgate::server::Start {
        upgrade: flags.upgrade,
        upgrade_socket: flags.upgrade_socket,
    };
    // With --background, a config that does not load fails the command (and so systemd's
    // reload) here, before the running process is told to hand over; the child runs
    // exactly the config checked.
    let loaded = match start.load(config) {
        Ok(l) => l,
        Err(e) => return report(Err(e)),
    };
    if flags.background {
        match hlsgate::server::background() {
            Ok(true) => {}
            Ok(false) => return ExitCode::SUCCESS,
            Err(e) => return report(Err(e)),
        }
    }
    init_logging();
    report(hlsgate::server::run(config, role, start, loaded))
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

fn print_token(
    path: &Path,
    stream: &str,
    ip: Option<IpAddr>,
    ua: Option<String>,
    ttl: Option<u32>,
) -> anyhow::Result<()> {
    let (cfg, keyring) = hlsgate::server::load(path)?;
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
        scope: hlsgate::token::Scope::path(),
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // pingora-cache warns on every first cache hit that it has no header-compression
        // dictionary (hlsgate needs none): not something to alarm an operator with. Its
        // connector logs ERROR "failed to acquire reusable stream" whenever a pooled origin
        // connection is still held by its idle watcher (it then opens a new one): normal
        // traffic, not an error (origin failures are hlsgate's own log lines and metrics).
        // Its app logs ERROR "H2 handshake error" for every client that negotiates h2 and
        // leaves before the connection preface (certificate checks, scanners): a viewer's
        // doing, not the edge's.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,pingora_cache::meta=error,pingora_core::connectors=off,\
                 pingora_core::apps=off,pingora_core::apps::http_app=info",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
