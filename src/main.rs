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
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        run: RunFlags,
    },
    /// The edge alone (a CDN node; several share one store).
    Edge {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        run: RunFlags,
    },
    /// The admin sidecar alone.
    Admin {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Validate a config: exit 0, or exit 2 naming the file, key and problem.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a signed playback URL for a stream's playlist.
    Token {
        #[command(flatten)]
        config: ConfigArg,
        /// The stream: a key of `streams` in the config, or the number of a stream users
        /// registered through the admin (its `streamID`, looked up in the store).
        #[arg(long)]
        stream: String,
        /// Bind the token to this client IP (with the configured prefix length).
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Bind the token to this exact User-Agent.
        #[arg(long)]
        ua: Option<String>,
        /// Lifetime: seconds, or a duration as the config writes them ("90s", "5m", "2h";
        /// default: tokens.ttl). An unbound token and every renewal of it stop working
        /// then; one bound to both --ip and --ua is renewed for that viewer until
        /// tokens.session_ttl.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u32>,
    },
}

/// Where the config is read from.
#[derive(clap::Args)]
struct ConfigArg {
    /// The YAML config file [default: conf/hlsgate.yaml in the current folder, else
    /// /etc/hlsgate/hlsgate.yaml]. Relative paths in it are relative to the current folder.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The checkout's config, then the package's.
const DEFAULT_CONFIGS: [&str; 2] = ["conf/hlsgate.yaml", "/etc/hlsgate/hlsgate.yaml"];

impl ConfigArg {
    /// The file given, or the first default that exists; an error naming every place
    /// looked at when none does.
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.config {
            return Ok(p.clone());
        }
        DEFAULT_CONFIGS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let here = std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                anyhow!(
                    "no config given and none at {} (in {here}) or {}: run it from the \
                     checkout's folder or pass -c FILE",
                    DEFAULT_CONFIGS[0],
                    DEFAULT_CONFIGS[1]
                )
            })
    }
}

/// `--ttl`: whole seconds, or a duration as in the config (`humantime`: "5m", "1h 30m").
fn parse_ttl(s: &str) -> Result<u32, String> {
    let secs = match s.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{e} (seconds, or a duration such as 90s, 5m, 2h)"))?
            .as_secs(),
    };
    if secs == 0 {
        return Err("must be at least 1 second".into());
    }
    u32::try_from(secs).map_err(|_| "longer than 136 years".into())
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
        Command::CheckConfig { config } => {
            let path = match config.path() {
                Ok(p) => p,
                Err(e) => return report(Err(e)),
            };
            match Config::load(&path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Token {
            config,
            stream,
            ip,
            ua,
            ttl,
        } => report(
            config
                .path()
                .and_then(|c| print_token(&c, &stream, ip, ua, ttl)),
        ),
        Command::Serve { config, run } => start(config, Role::Serve, run),
        Command::Edge { config, run } => start(config, Role::Edge, run),
        Command::Admin { config, run } => start(config, Role::Admin, run),
    }
}

fn start(config: ConfigArg, role: Role, flags: RunFlags) -> ExitCode {
    let config = match config.path() {
        Ok(p) => p,
        Err(e) => return report(Err(e)),
    };
    let config = config.as_path();
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
    // A static stream by its name, or a registered one by its number (from the store).
    let (id, playlist) = match cfg.streams.get(stream) {
        Some(s) => (s.id.clone(), s.playlist.clone()),
        None => match stream.parse::<i64>().ok().filter(|n| *n > 0) {
            Some(n) => (n.to_string(), store_stream(&cfg, n)?.endpoint),
            None => {
                return Err(anyhow!(
                    "unknown stream {stream:?}: not in {}'s streams, and not a stream number",
                    path.display()
                ))
            }
        },
    };
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
        stream: id.clone(),
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
            &id,
            &playlist
        )
    );
    Ok(())
}

/// Registered stream `id`, read from the config's store.
fn store_stream(cfg: &Config, id: i64) -> anyhow::Result<hlsgate::store::StreamRecord> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = hlsgate::store::open(&cfg.store_url)
            .await
            .map_err(|e| anyhow!("the store: {e}"))?;
        store
            .stream(id)
            .await
            .map_err(|e| anyhow!("the store: {e}"))?
            .ok_or_else(|| anyhow!("unknown stream {id}: no such stream in the store"))
    })
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
