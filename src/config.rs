//! The YAML config: file structs (`deny_unknown_fields`, so a typo cannot silently disable a
//! check) parsed and validated into [`Config`]. Every error names the file, the key and the
//! problem on one line. The shipped `conf/hlsgate.yaml` documents every key and its default.

use crate::origin::Origin;
pub use crate::stream::{valid_stream_id, OriginPolicy, Stream};
use crate::stream::{AllowEntry, Shield};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A config problem: `FILE: KEY: PROBLEM`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("invalid duration {s:?}: {e} (e.g. \"30s\")"))
    })
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Text(s) => parse_size(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {s:?} (e.g. \"256MiB\", \"1GB\", \"65536\")"
            ))
        }),
    }
}

/// `"256MiB"`, `"1.5 GB"`, `"64k"`, `"1048576"`: binary (KiB, MiB, GiB) and decimal (kB,
/// MB, GB) units; a bare `k`/`m`/`g` is binary.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    let v = num * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {s:?} (expected IP:PORT, e.g. \"0.0.0.0:8080\")"
        ))
    })
}

fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| {
            parse_net(s)
                .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an IP or CIDR")))
        })
        .collect()
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

// ---- file structs -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    edge: FileEdge,
    admin: FileAdmin,
    metrics: FileMetrics,
    store: FileStore,
    tokens: FileTokens,
    origins: FileOrigins,
    cache: FileCache,
    hooks: FileHooks,
    auth: FileAuth,
    geoip: Option<FileGeoIp>,
    streams: BTreeMap<String, FileStream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGeoIp {
    /// A MaxMind-format country database (`.mmdb`).
    database: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileAuth {
    external: Option<FileExternal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileExternal {
    url: String,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default = "default_external_timeout", deserialize_with = "duration")]
    timeout: Duration,
    #[serde(default)]
    allow_by_default: bool,
    #[serde(default = "default_external_cache", deserialize_with = "duration")]
    cache_ttl: Duration,
}

fn default_concurrency() -> usize {
    10
}
fn default_external_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_external_cache() -> Duration {
    Duration::from_secs(30)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileHooks {
    rtmp_relay: String,
    rtmp_publish_url: String,
    #[serde(deserialize_with = "nets")]
    allow_from: Vec<IpNet>,
}

impl Default for FileHooks {
    fn default() -> Self {
        FileHooks {
            rtmp_relay: "rtmp://127.0.0.1:1935/hls/".into(),
            rtmp_publish_url: "rtmp://127.0.0.1:1935/live".into(),
            allow_from: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileCache {
    #[serde(deserialize_with = "size")]
    max_bytes: u64,
    #[serde(deserialize_with = "size")]
    max_object_bytes: u64,
    #[serde(deserialize_with = "duration")]
    segment_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    vod_playlist_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    live_playlist_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    stale_if_error: Duration,
    #[serde(deserialize_with = "duration")]
    error_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    lock_timeout: Duration,
}

impl Default for FileCache {
    fn default() -> Self {
        let p = crate::cache::Policy::default();
        FileCache {
            max_bytes: p.max_bytes,
            max_object_bytes: p.max_object_bytes,
            segment_ttl: p.segment_ttl,
            vod_playlist_ttl: p.vod_playlist_ttl,
            live_playlist_ttl: p.live_playlist_ttl,
            stale_if_error: p.stale_if_error,
            error_ttl: p.error_ttl,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileEdge {
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
    threads: usize,
    work_stealing: bool,
    #[serde(deserialize_with = "nets")]
    trusted_proxies: Vec<IpNet>,
    #[serde(deserialize_with = "duration")]
    origin_connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    origin_read_timeout: Duration,
    /// How long SIGTERM (and the old process of an upgrade) waits for requests in flight.
    #[serde(deserialize_with = "duration", alias = "grace_period")]
    shutdown_grace: Duration,
    #[serde(deserialize_with = "duration")]
    idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    header_timeout: Duration,
    max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold open at once (0: no cap).
    max_connections_per_ip: usize,
    /// Distinct client addresses one token session may come from (0: no check).
    token_max_ips: usize,
    /// Refuse (403) a session past `token_max_ips`, not only count it.
    token_block_shared: bool,
    /// Credentials (JWT, CloudFront, Akamai, secure_link) from one client address that may
    /// fail their signature check per second; past it that address is answered 429 without
    /// a check until the next second (0: no bound).
    max_failed_verifications: u32,
    #[serde(deserialize_with = "duration")]
    origin_total_timeout: Duration,
    cors: FileCors,
    tls: Option<FileTls>,
    /// The Unix socket an upgrading process takes the listening sockets over.
    upgrade_socket: PathBuf,
    /// `off`, `stdout`, `stderr` or a file path.
    access_log: String,
    /// `text` or `json`.
    access_log_format: String,
}

/// `edge.tls` / `admin.tls`: a listener speaking TLS (ALPN h2 and http/1.1).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    /// More certificate/key pairs, chosen by SNI from their names.
    #[serde(default)]
    certs: Vec<FileCertPair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCertPair {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileCors {
    allow_origins: Vec<String>,
}

impl Default for FileEdge {
    fn default() -> Self {
        FileEdge {
            listen: ([0, 0, 0, 0], 8080).into(),
            threads: 2,
            work_stealing: false,
            trusted_proxies: Vec::new(),
            origin_connect_timeout: Duration::from_secs(3),
            origin_read_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            max_connections_per_ip: 0,
            token_max_ips: 0,
            max_failed_verifications: 20,
            token_block_shared: false,
            origin_total_timeout: Duration::from_secs(60),
            cors: FileCors::default(),
            tls: None,
            upgrade_socket: "data/upgrade.sock".into(),
            access_log: "stdout".into(),
            access_log_format: "text".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAdmin {
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
    public_edge_url: String,
    cookie_domain: Option<String>,
    max_sessions_per_user: u32,
    /// Streams one user may have (0: no cap).
    max_streams_per_user: u32,
    /// Viewer sessions at once for one account's credentials, across the edges (0: no cap).
    max_screens_per_user: u32,
    /// What a screen past the limit gets: `refuse` (403 `screens`) or `end_oldest`.
    screens_full: ScreensFull,
    login_attempts_per_ip: u32,
    login_attempts_per_user: u32,
    #[serde(deserialize_with = "nets")]
    trusted_proxies: Vec<IpNet>,
    #[serde(deserialize_with = "nets")]
    trusted_backends: Vec<IpNet>,
    tls: Option<FileTls>,
}

impl Default for FileAdmin {
    fn default() -> Self {
        FileAdmin {
            listen: ([127, 0, 0, 1], 8081).into(),
            public_edge_url: "http://127.0.0.1:8080".into(),
            cookie_domain: None,
            max_sessions_per_user: 10,
            max_streams_per_user: 100,
            max_screens_per_user: 0,
            screens_full: ScreensFull::Refuse,
            login_attempts_per_ip: 20,
            login_attempts_per_user: 10,
            trusted_proxies: Vec::new(),
            trusted_backends: Vec::new(),
            tls: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileMetrics {
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
    stream_labels: usize,
}

impl Default for FileMetrics {
    fn default() -> Self {
        FileMetrics {
            listen: ([127, 0, 0, 1], 9100).into(),
            stream_labels: 20,
        }
    }
}

/// Most `metrics.stream_labels`: series per metric a scrape can hold for streams.
pub const MAX_STREAM_LABELS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileStore {
    url: String,
    #[serde(deserialize_with = "duration")]
    cache_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    stale_if_error: Duration,
}

impl Default for FileStore {
    fn default() -> Self {
        FileStore {
            url: "sqlite://data/hlsgate.db".into(),
            cache_ttl: Duration::from_secs(2),
            stale_if_error: Duration::from_secs(60),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileTokens {
    secret_file: PathBuf,
    #[serde(deserialize_with = "duration")]
    ttl: Duration,
    #[serde(deserialize_with = "duration")]
    session_ttl: Duration,
    bind_ipv4_prefix: u8,
    bind_ipv6_prefix: u8,
    jwt: FileJwt,
    cloudfront: FileJwt,
    akamai: FileAkamai,
    secure_link: FileSecureLink,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileAkamai {
    key_hex: String,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileSecureLink {
    secret: String,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileJwt {
    /// KID -> public key PEM (inline) or the path of a PEM file.
    keys: BTreeMap<String, String>,
}

impl Default for FileTokens {
    fn default() -> Self {
        FileTokens {
            secret_file: "data/secret.key".into(),
            ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(12 * 3600),
            bind_ipv4_prefix: 32,
            bind_ipv6_prefix: 64,
            jwt: FileJwt::default(),
            cloudfront: FileJwt::default(),
            akamai: FileAkamai::default(),
            secure_link: FileSecureLink::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileOrigins {
    /// PEM file of the CAs HTTPS origins are verified against (default: the system's).
    ca_file: Option<PathBuf>,
    allow: Vec<String>,
    users: Vec<String>,
    media_types: Vec<String>,
    /// Another hlsgate that misses are fetched from (`http(s)://host[:port]`).
    shield: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStream {
    url: String,
    /// The token modes this stream admits (default: every configured one).
    auth: Option<Vec<String>>,
    /// Most viewer sessions at once, across every edge sharing the store (0: no cap).
    #[serde(default)]
    max_viewers: u32,
    /// Cloudflare-style access rules (`crate::rules`).
    #[serde(default)]
    access_rules: Vec<crate::rules::RuleDoc>,
    /// Pages the stream may be embedded in (`crate::rules::Referers`).
    #[serde(default)]
    referers: Vec<String>,
}

/// Check a TLS listener's files now (a typo is a start-up error, not a failed handshake).
fn tls(t: &Option<FileTls>, key: &str) -> Result<Option<Tls>, (String, String)> {
    let Some(t) = t else { return Ok(None) };
    let mut pairs = vec![(t.cert.clone(), t.key.clone())];
    pairs.extend(t.certs.iter().map(|p| (p.cert.clone(), p.key.clone())));
    for (i, (cert, pk)) in pairs.iter().enumerate() {
        let at = if i == 0 {
            key.to_owned()
        } else {
            format!("{key}.certs[{}]", i - 1)
        };
        crate::tls::load_pair(cert, pk).map_err(|p| (at, p))?;
    }
    Ok(Some(Tls {
        listen: t.listen,
        pairs,
    }))
}

// ---- validated config ---------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub edge: Edge,
    pub admin: Admin,
    pub metrics_listen: SocketAddr,
    /// How many streams get their own `stream` label (the rest: `_other`); 0 = none.
    pub metrics_stream_labels: usize,
    pub store_url: String,
    /// How long an edge trusts what it read from the store about a stream or a session.
    pub store_cache_ttl: Duration,
    /// How long past `store_cache_ttl` what an edge read from the store still admits
    /// viewers while the store cannot be reached (0: not at all).
    pub store_stale_if_error: Duration,
    pub tokens: Tokens,
    pub origins: OriginPolicy,
    pub cache: crate::cache::Policy,
    /// Longest a viewer waits for another viewer's fetch of the same object before
    /// fetching it too.
    pub cache_lock_timeout: Duration,
    pub streams: BTreeMap<String, Stream>,
    pub hooks: Hooks,
    /// `auth.external`: the platform's playback-authorisation handler (Nimble-style).
    pub external: Option<External>,
    /// `geoip.database`, read (country access rules).
    pub geoip: Option<Arc<crate::geoip::GeoIp>>,
}

/// `auth.external`.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// `http://host:port/path` the edge POSTs each new viewer session to.
    pub url: http::Uri,
    /// Most calls in flight at once; more wait (a bounded queue) or get the default.
    pub concurrency: usize,
    /// Longest a call (waiting for a slot included) may take; then the default.
    pub timeout: Duration,
    /// The answer when the handler is down, slow, busy or answers nonsense.
    pub allow_by_default: bool,
    /// How long one viewer session's decision is remembered.
    pub cache_ttl: Duration,
}

/// `hooks`: publishing callbacks (nginx-rtmp, SRS) on the admin listener.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// `Location` prefix of an accepted `on_publish` (the stream id is appended): nginx-rtmp
    /// relays the stream there, into its packaging application, under the public id.
    pub rtmp_relay: String,
    /// Where publishers send their stream: `publishUrl` is this + `/` + the key.
    pub rtmp_publish_url: String,
    /// Peers whose callbacks are believed (the media servers).
    pub allow_from: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub listen: SocketAddr,
    pub threads: usize,
    /// One tokio runtime for all threads, tasks moving between them (`true`), or one
    /// runtime per thread, each connection staying on the thread that took it (`false`).
    pub work_stealing: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub origin_connect_timeout: Duration,
    pub origin_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Longest a viewer's keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Longest a viewer may take to send one whole request header.
    pub header_timeout: Duration,
    /// Most viewer connections open at once; past it new ones get 503.
    pub max_connections: usize,
    /// `edge.max_connections_per_ip`: most open at once from one address (IPv6: one /64);
    /// past it that address's new ones get 503 (0: no cap).
    pub max_connections_per_ip: usize,
    /// `edge.token_max_ips`: distinct addresses one token session may use (0: off).
    pub token_max_ips: usize,
    /// `edge.max_failed_verifications`: failed credential checks per client address and
    /// second before it is answered 429 (0: off).
    pub max_failed_verifications: u32,
    /// `edge.token_block_shared`: refuse, not only count, a session past it.
    pub token_block_shared: bool,
    /// Longest one origin fetch may take from connect to its last body byte.
    pub origin_total_timeout: Duration,
    /// `edge.cors.allow_origins`: `Origin`s answered with credentials (`*` wildcards).
    /// Empty: `Access-Control-Allow-Origin: *` without credentials.
    pub cors_allow_origins: Vec<String>,
    /// `edge.tls`: a second listener speaking HTTPS (h2 and http/1.1).
    pub tls: Option<Tls>,
    /// `edge.upgrade_socket`: where `--upgrade` receives the listening sockets.
    pub upgrade_socket: PathBuf,
    pub access_log: AccessLog,
    /// `edge.access_log_format: json`.
    pub access_log_json: bool,
}

/// Where the edge writes one line per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    Stderr,
    File(PathBuf),
}

/// A TLS listener: its address and certificate/key pairs (the first is the default; the
/// others are chosen by SNI from the names in their certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub listen: SocketAddr,
    pub pairs: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Without a trailing `/`.
    pub public_edge_url: String,
    /// `admin.cookie_domain`: the `Domain` of cookie-mode cookies (`None`: host-only).
    pub cookie_domain: Option<String>,
    /// Oldest sessions beyond this many per user are ended at login; 0: no cap.
    pub max_sessions_per_user: u32,
    /// `admin.max_streams_per_user`: streams one user may have (0: no cap).
    pub max_streams_per_user: u32,
    /// `admin.max_screens_per_user`: viewer sessions at once across every edge sharing the
    /// store, for the credentials issued to one account (0: no cap; a user may set a lower
    /// one of their own).
    pub max_screens_per_user: u32,
    /// `admin.screens_full`: what the screen past the limit gets.
    pub screens_full: ScreensFull,
    /// Login (and register) attempts a minute from one client IP; 0: no limit.
    pub login_attempts_per_ip: u32,
    /// Login attempts a minute for one username; 0: no limit.
    pub login_attempts_per_user: u32,
    /// Peers whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Peers that may name the viewer a playback URL is for (X-Viewer-IP,
    /// X-Viewer-User-Agent).
    pub trusted_backends: Vec<IpNet>,
    /// `admin.tls`.
    pub tls: Option<Tls>,
}

/// `admin.screens_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScreensFull {
    /// The new viewer session is refused: 403 `screens`.
    #[default]
    Refuse,
    /// The account's oldest viewer session is ended (403 `screens` on its next request)
    /// and the new one plays.
    EndOldest,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub secret_file: PathBuf,
    pub ttl: Duration,
    pub session_ttl: Duration,
    pub bind_ipv4_prefix: u8,
    pub bind_ipv6_prefix: u8,
    /// `tokens.jwt.keys`: public keys of JWT playback tokens (query mode, IVS style).
    pub jwt: std::sync::Arc<crate::token::jwt::JwtKeys>,
    /// `tokens.cloudfront.keys`: CloudFront key pairs' public keys.
    pub cloudfront: std::sync::Arc<crate::token::cloudfront::CloudFrontKeys>,
    /// `tokens.akamai.key_hex` / `key_file`, decoded.
    pub akamai: Option<Secret<Vec<u8>>>,
    /// `tokens.secure_link.secret` / `secret_file`.
    pub secure_link: Option<Secret<String>>,
}

/// A secret that never shows in `Debug` output.
#[derive(Clone)]
pub struct Secret<T>(pub std::sync::Arc<T>);

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Tokens {
    /// The prefix length a token binds `ip` with.
    pub fn prefix_for(&self, ip: IpAddr) -> u8 {
        match ip.to_canonical() {
            IpAddr::V4(_) => self.bind_ipv4_prefix,
            IpAddr::V6(_) => self.bind_ipv6_prefix,
        }
    }
}

/// `ID -> inline PEM or the path of a PEM file`, read.
fn read_pems(
    keys: &BTreeMap<String, String>,
    at: &str,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut pems = BTreeMap::new();
    for (kid, v) in keys {
        let key = format!("{at}.{kid}");
        if kid.is_empty() || kid.len() > 128 {
            return Err(err(&key, "key ids are 1-128 characters".into()));
        }
        let pem = if v.trim_start().starts_with("-----BEGIN") {
            v.clone()
        } else {
            std::fs::read_to_string(v)
                .map_err(|e| err(&key, format!("cannot read PEM file {v:?}: {e}")))?
        };
        pems.insert(kid.clone(), pem);
    }
    Ok(pems)
}

impl Config {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate YAML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, problem: String| ConfigError {
            file: file.clone(),
            key: key.to_owned(),
            problem,
        };
        let de = serde_yaml::Deserializer::from_str(text);
        let f: FileConfig = match serde_path_to_error::deserialize(de) {
            Ok(f) => f,
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." {
                    "(top level)".into()
                } else {
                    key
                };
                let problem = e.into_inner().to_string();
                // serde_yaml starts its messages with the parent's path: said once is enough.
                let problem = match problem.split_once(": ") {
                    Some((head, rest)) if key.starts_with(head) => rest.to_owned(),
                    _ => problem,
                };
                return Err(err(&key, problem));
            }
        };

        if f.edge.threads == 0 || f.edge.threads > 256 {
            return Err(err("edge.threads", "must be between 1 and 256".into()));
        }
        for (key, d) in [
            ("edge.origin_connect_timeout", f.edge.origin_connect_timeout),
            ("edge.origin_read_timeout", f.edge.origin_read_timeout),
            ("edge.idle_timeout", f.edge.idle_timeout),
            ("edge.header_timeout", f.edge.header_timeout),
            ("edge.origin_total_timeout", f.edge.origin_total_timeout),
        ] {
            if d.is_zero() {
                return Err(err(key, "must be more than 0s".into()));
            }
        }
        if f.edge.max_connections == 0 {
            return Err(err("edge.max_connections", "must be more than 0".into()));
        }
        if f.edge.origin_total_timeout < f.edge.origin_read_timeout {
            return Err(err(
                "edge.origin_total_timeout",
                "must not be shorter than edge.origin_read_timeout".into(),
            ));
        }
        let public = f.admin.public_edge_url.trim_end_matches('/').to_owned();
        if !(public.starts_with("http://") || public.starts_with("https://")) {
            return Err(err(
                "admin.public_edge_url",
                format!("{public:?} is not an http:// or https:// URL"),
            ));
        }
        if !(f.store.url.starts_with("sqlite://")
            || f.store.url.starts_with("postgres://")
            || f.store.url.starts_with("postgresql://"))
        {
            return Err(err(
                "store.url",
                "must start with sqlite:// or postgres://".into(),
            ));
        }
        if f.store.url == "sqlite://" {
            return Err(err("store.url", "sqlite:// needs a file path".into()));
        }
        if f.store.cache_ttl > Duration::from_secs(60) {
            return Err(err(
                "store.cache_ttl",
                "must be at most 60s (ended sessions must stop playing soon)".into(),
            ));
        }
        let t = &f.tokens;
        if t.ttl < Duration::from_secs(10) {
            return Err(err("tokens.ttl", "must be at least 10s".into()));
        }
        if t.session_ttl < t.ttl {
            return Err(err(
                "tokens.session_ttl",
                "must not be shorter than tokens.ttl".into(),
            ));
        }
        if t.session_ttl > Duration::from_secs(366 * 86400) {
            return Err(err("tokens.session_ttl", "must be at most 366 days".into()));
        }
        if t.bind_ipv4_prefix > 32 {
            return Err(err("tokens.bind_ipv4_prefix", "must be 0..=32".into()));
        }
        if t.bind_ipv6_prefix > 128 {
            return Err(err("tokens.bind_ipv6_prefix", "must be 0..=128".into()));
        }
        if t.secret_file.as_os_str().is_empty() {
            return Err(err("tokens.secret_file", "must not be empty".into()));
        }

        let pems = read_pems(&t.jwt.keys, "tokens.jwt.keys", &err)?;
        let jwt = crate::token::jwt::JwtKeys::from_pems(&pems)
            .map_err(|(kid, problem)| err(&format!("tokens.jwt.keys.{kid}"), problem))?;
        let pems = read_pems(&t.cloudfront.keys, "tokens.cloudfront.keys", &err)?;
        let cloudfront = crate::token::cloudfront::CloudFrontKeys::from_pems(&pems)
            .map_err(|(id, problem)| err(&format!("tokens.cloudfront.keys.{id}"), problem))?;
        let akamai = match (&t.akamai.key_file, t.akamai.key_hex.is_empty()) {
            (Some(_), false) => {
                return Err(err(
                    "tokens.akamai",
                    "give key_hex or key_file, not both".into(),
                ))
            }
            (Some(path), true) => Some(std::fs::read_to_string(path).map_err(|e| {
                err(
                    "tokens.akamai.key_file",
                    format!("cannot read {path:?}: {e}"),
                )
            })?),
            (None, false) => Some(t.akamai.key_hex.clone()),
            (None, true) => None,
        };
        let akamai = match akamai {
            Some(hex) => Some(Secret(std::sync::Arc::new(
                crate::token::akamai::key_from_hex(&hex)
                    .filter(|k| k.len() >= 16)
                    .ok_or_else(|| {
                        err(
                            "tokens.akamai.key_hex",
                            "must be at least 16 bytes in hex".into(),
                        )
                    })?,
            ))),
            None => None,
        };
        let secure_link = match (&t.secure_link.secret_file, t.secure_link.secret.is_empty()) {
            (Some(_), false) => {
                return Err(err(
                    "tokens.secure_link",
                    "give secret or secret_file, not both".into(),
                ))
            }
            (Some(path), true) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        err(
                            "tokens.secure_link.secret_file",
                            format!("cannot read {path:?}: {e}"),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, false) => Some(t.secure_link.secret.clone()),
            (None, true) => None,
        };
        if secure_link
            .as_ref()
            .is_some_and(|s| s.len() < 8 || s.contains(char::is_control))
        {
            return Err(err(
                "tokens.secure_link.secret",
                "must be at least 8 characters, no control characters".into(),
            ));
        }
        let secure_link = secure_link.map(|s| Secret(std::sync::Arc::new(s)));
        for (key, v) in [
            ("hooks.rtmp_relay", &f.hooks.rtmp_relay),
            ("hooks.rtmp_publish_url", &f.hooks.rtmp_publish_url),
        ] {
            if !(v.starts_with("rtmp://") || v.starts_with("rtmps://"))
                || v.contains(char::is_whitespace)
            {
                return Err(err(key, "must be an rtmp:// URL".into()));
            }
        }
        let external = match &f.auth.external {
            None => None,
            Some(x) => {
                let url: http::Uri = x
                    .url
                    .parse()
                    .ok()
                    .filter(|u: &http::Uri| u.scheme_str() == Some("http") && u.host().is_some())
                    .ok_or_else(|| err("auth.external.url", "must be an http:// URL".into()))?;
                if x.concurrency == 0 || x.concurrency > 10_000 {
                    return Err(err("auth.external.concurrency", "must be 1..=10000".into()));
                }
                if x.timeout.is_zero() {
                    return Err(err("auth.external.timeout", "must be more than 0".into()));
                }
                Some(External {
                    url,
                    concurrency: x.concurrency,
                    timeout: x.timeout,
                    allow_by_default: x.allow_by_default,
                    cache_ttl: x.cache_ttl.max(Duration::from_secs(1)),
                })
            }
        };
        if let Some(d) = &f.admin.cookie_domain {
            if d.is_empty()
                || d.len() > 253
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            {
                return Err(err("admin.cookie_domain", "must be a domain name".into()));
            }
        }
        for o in &f.edge.cors.allow_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && !o.contains(char::is_whitespace));
            if !ok {
                return Err(err(
                    "edge.cors.allow_origins",
                    format!("{o:?} is not an origin (scheme://host[:port], `*` wildcards)"),
                ));
            }
        }

        if f.metrics.stream_labels > MAX_STREAM_LABELS {
            return Err(err(
                "metrics.stream_labels",
                format!("at most {MAX_STREAM_LABELS} (0 turns per-stream series off)"),
            ));
        }
        let c = &f.cache;
        if c.max_bytes < 1 << 20 {
            return Err(err("cache.max_bytes", "must be at least 1MiB".into()));
        }
        if c.max_object_bytes == 0 {
            return Err(err("cache.max_object_bytes", "must be more than 0".into()));
        }
        for (key, d) in [
            ("cache.segment_ttl", c.segment_ttl),
            ("cache.vod_playlist_ttl", c.vod_playlist_ttl),
            ("cache.live_playlist_ttl", c.live_playlist_ttl),
            ("cache.lock_timeout", c.lock_timeout),
        ] {
            if d.is_zero() {
                return Err(err(key, "must be more than 0s".into()));
            }
        }

        let edge_tls = tls(&f.edge.tls, "edge.tls").map_err(|(k, p)| err(&k, p))?;
        let admin_tls = tls(&f.admin.tls, "admin.tls").map_err(|(k, p)| err(&k, p))?;
        let access_log = match f.edge.access_log.as_str() {
            "off" => AccessLog::Off,
            "stdout" => AccessLog::Stdout,
            "stderr" => AccessLog::Stderr,
            "" => {
                return Err(err(
                    "edge.access_log",
                    "off, stdout, stderr or a file path".into(),
                ))
            }
            path => AccessLog::File(path.into()),
        };
        let access_log_json = match f.edge.access_log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(err(
                    "edge.access_log_format",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        if f.edge.upgrade_socket.as_os_str().is_empty() {
            return Err(err("edge.upgrade_socket", "must be a path".into()));
        }
        let mut own = vec![f.edge.listen, f.admin.listen, f.metrics.listen];
        own.extend(edge_tls.iter().chain(&admin_tls).map(|t| t.listen));
        let mut origins = OriginPolicy {
            own,
            ca_file: f.origins.ca_file.clone(),
            ..OriginPolicy::default()
        };
        if let Some(ca) = &origins.ca_file {
            crate::tls::read_ca(ca).map_err(|p| err("origins.ca_file", p))?;
        }
        for (i, a) in f.origins.allow.iter().enumerate() {
            match AllowEntry::parse(a) {
                Some(e) => origins.allow.push(e),
                None => {
                    return Err(err(
                        &format!("origins.allow[{i}]"),
                        format!(
                            "{a:?} is neither an IP, a CIDR nor a host name \
                             (each optionally with :PORT; IPv6 with a port in brackets)"
                        ),
                    ))
                }
            }
        }
        for (i, u) in f.origins.users.iter().enumerate() {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && Origin::from_playlist_url(&format!("{u}x.m3u8")).is_ok()
                && u.ends_with('/');
            if !ok {
                return Err(err(
                    &format!("origins.users[{i}]"),
                    format!("{u:?} must be an http(s) URL prefix ending in `/`"),
                ));
            }
            origins.users.push(u.clone());
        }
        if let Some(url) = &f.origins.shield {
            let shield = Shield::parse(url).map_err(|p| err("origins.shield", p))?;
            if let Ok(ip) = shield.host.parse::<IpAddr>() {
                if origins.own.contains(&SocketAddr::new(ip, shield.port)) {
                    return Err(err(
                        "origins.shield",
                        "is this hlsgate's own listener (a shield is another hlsgate)".into(),
                    ));
                }
            }
            origins.shield = Some(shield);
        }
        for (i, t) in f.origins.media_types.iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            let valid = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a != "*"
                    && t.bytes().all(|c| c.is_ascii_graphic() && c != b';')
            });
            if !valid {
                return Err(err(
                    &format!("origins.media_types[{i}]"),
                    format!("{t:?} is not a media type (e.g. \"video/mp2t\", \"video/*\")"),
                ));
            }
            origins.media_types.push(t);
        }

        let geoip = match &f.geoip {
            Some(g) => {
                Some(crate::geoip::GeoIp::open(&g.database).map_err(|p| err("geoip.database", p))?)
            }
            None => None,
        };
        let mut streams = BTreeMap::new();
        for (id, s) in f.streams {
            let key = format!("streams.{id}.url");
            let access = crate::rules::AccessRules::from_docs(&s.access_rules)
                .map_err(|p| err(&format!("streams.{id}.access_rules"), p))?;
            if access.needs_country() && geoip.is_none() {
                return Err(err(
                    &format!("streams.{id}.access_rules"),
                    "a rule names countries: set geoip.database (a MaxMind-format .mmdb)".into(),
                ));
            }
            let access = (!access.is_empty()).then(|| Arc::new(access));
            let referers = crate::rules::Referers::parse(&s.referers)
                .map_err(|p| err(&format!("streams.{id}.referers"), p))?
                .map(Arc::new);
            if !valid_stream_id(&id) {
                return Err(err(
                    &format!("streams.{id}"),
                    "stream ids are 1-64 of A-Z a-z 0-9 _ -".into(),
                ));
            }
            if id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    &format!("streams.{id}"),
                    "numeric ids belong to streams in the store; give this one a name".into(),
                ));
            }
            let auth = match &s.auth {
                None => None,
                Some(names) => Some(
                    names
                        .iter()
                        .map(|n| {
                            crate::token::Mode::from_name(n).ok_or_else(|| {
                                err(
                                    &format!("streams.{id}.auth"),
                                    format!(
                                        "unknown mode {n:?} (path, jwt, cloudfront, akamai, \
                                         secure_link, external)"
                                    ),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let (origin, playlist) = Origin::from_playlist_url(&s.url).map_err(|p| err(&key, p))?;
            origin.check_allowed(&origins).map_err(|e| {
                // The operator may be told more than a user: the host is named.
                let what = match &origin {
                    Origin::Http { host, port, .. } => format!("origin {host} port {port}"),
                    Origin::File { .. } => "origin".into(),
                };
                err(
                    &key,
                    format!(
                        "{what} is {e}: a private, loopback or link-local address (name it \
                         in origins.allow, with its port), one of hlsgate's own listeners, \
                         or a name that does not resolve"
                    ),
                )
            })?;
            streams.insert(
                id.clone(),
                Stream {
                    id,
                    origin,
                    playlist,
                    owner: None,
                    auth,
                    max_viewers: s.max_viewers,
                    access,
                    referers,
                },
            );
        }

        Ok(Config {
            file: path.to_owned(),
            edge: Edge {
                listen: f.edge.listen,
                threads: f.edge.threads,
                work_stealing: f.edge.work_stealing,
                trusted_proxies: f.edge.trusted_proxies,
                origin_connect_timeout: f.edge.origin_connect_timeout,
                origin_read_timeout: f.edge.origin_read_timeout,
                shutdown_grace: f.edge.shutdown_grace,
                idle_timeout: f.edge.idle_timeout,
                header_timeout: f.edge.header_timeout,
                max_connections: f.edge.max_connections,
                max_connections_per_ip: f.edge.max_connections_per_ip,
                token_max_ips: f.edge.token_max_ips,
                max_failed_verifications: f.edge.max_failed_verifications,
                token_block_shared: f.edge.token_block_shared,
                origin_total_timeout: f.edge.origin_total_timeout,
                cors_allow_origins: f.edge.cors.allow_origins,
                tls: edge_tls,
                upgrade_socket: f.edge.upgrade_socket,
                access_log,
                access_log_json,
            },
            admin: Admin {
                listen: f.admin.listen,
                public_edge_url: public,
                cookie_domain: f.admin.cookie_domain,
                max_sessions_per_user: f.admin.max_sessions_per_user,
                max_streams_per_user: f.admin.max_streams_per_user,
                max_screens_per_user: f.admin.max_screens_per_user,
                screens_full: f.admin.screens_full,
                login_attempts_per_ip: f.admin.login_attempts_per_ip,
                login_attempts_per_user: f.admin.login_attempts_per_user,
                trusted_proxies: f.admin.trusted_proxies,
                trusted_backends: f.admin.trusted_backends,
                tls: admin_tls,
            },
            metrics_listen: f.metrics.listen,
            metrics_stream_labels: f.metrics.stream_labels,
            store_url: f.store.url,
            store_cache_ttl: f.store.cache_ttl,
            store_stale_if_error: f.store.stale_if_error,
            tokens: Tokens {
                secret_file: f.tokens.secret_file,
                ttl: f.tokens.ttl,
                session_ttl: f.tokens.session_ttl,
                bind_ipv4_prefix: f.tokens.bind_ipv4_prefix,
                bind_ipv6_prefix: f.tokens.bind_ipv6_prefix,
                jwt: std::sync::Arc::new(jwt),
                cloudfront: std::sync::Arc::new(cloudfront),
                akamai,
                secure_link,
            },
            origins,
            cache: crate::cache::Policy {
                max_bytes: f.cache.max_bytes,
                max_object_bytes: f.cache.max_object_bytes.min(f.cache.max_bytes),
                segment_ttl: f.cache.segment_ttl,
                vod_playlist_ttl: f.cache.vod_playlist_ttl,
                live_playlist_ttl: f.cache.live_playlist_ttl,
                stale_if_error: f.cache.stale_if_error,
                error_ttl: f.cache.error_ttl,
            },
            cache_lock_timeout: f.cache.lock_timeout,
            streams,
            external,
            geoip,
            hooks: Hooks {
                rtmp_relay: f.hooks.rtmp_relay,
                rtmp_publish_url: f.hooks.rtmp_publish_url.trim_end_matches('/').to_owned(),
                allow_from: f.hooks.allow_from,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in ["", "MiB", "12 parsecs", "-1MiB", "1e400"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let e = parse("cache:\n  max_bytes: lots\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cache.max_bytes") && e.contains("invalid size"),
            "{e}"
        );
        let e = parse("cache:\n  max_bytes: 1k\n").unwrap_err().to_string();
        assert!(e.contains("cache.max_bytes: must be at least 1MiB"), "{e}");
        let c = parse("cache:\n  max_bytes: 64MiB\n").unwrap();
        assert_eq!(c.cache.max_bytes, 64 << 20);
    }

    #[test]
    fn empty_config_gets_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.edge.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.tokens.ttl, Duration::from_secs(300));
        assert!(c.streams.is_empty());
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        for (text, key, problem) in [
            (
                "edge:\n  lisen: \"1.2.3.4:5\"\n",
                "edge.lisen",
                "unknown field `lisen`",
            ),
            (
                "edge:\n  listen: nope\n",
                "edge.listen",
                "invalid listen address",
            ),
            ("tokens:\n  ttl: 5x\n", "tokens.ttl", "invalid duration"),
            ("tokens:\n  ttl: 1s\n", "tokens.ttl", "at least 10s"),
            (
                "tokens:\n  bind_ipv4_prefix: 33\n",
                "tokens.bind_ipv4_prefix",
                "0..=32",
            ),
            (
                "edge:\n  trusted_proxies: [\"x/y\"]\n",
                "edge.trusted_proxies",
                "not an IP",
            ),
            ("store:\n  url: mysql://x\n", "store.url", "sqlite://"),
            (
                "streams:\n  a: { url: \"ftp://x/y.m3u8\" }\n",
                "streams.a.url",
                "scheme",
            ),
            (
                "streams:\n  a: { url: \"http://10.0.0.1/y.m3u8\" }\n",
                "streams.a.url",
                "origins.allow",
            ),
            (
                "streams:\n  a: { url: \"http://169.254.169.254/latest/x.m3u8\" }\n",
                "streams.a.url",
                "private",
            ),
            (
                "streams:\n  \"../x\": { url: \"http://example.com/y.m3u8\" }\n",
                "streams.../x",
                "stream ids",
            ),
            (
                "streams:\n  a: { url: \"file://does/not/exist/i.m3u8\" }\n",
                "streams.a.url",
                "folder",
            ),
            (
                "streams:\n  a: { ur: \"x\" }\n",
                "streams.a.ur",
                "unknown field",
            ),
            (
                "origins:\n  allow: [\"127.0.0.1\"]\nstreams:\n  a:\n    url: \"http://127.0.0.1:9/i.m3u8\"\n    access_rules: [{type: ip.geoip.country, country: [US], action: block}]\n",
                "streams.a.access_rules",
                "set geoip.database",
            ),
            (
                "origins:\n  allow: [\"127.0.0.1\"]\nstreams:\n  a:\n    url: \"http://127.0.0.1:9/i.m3u8\"\n    access_rules: [{type: ip.src, ip: [\"10.0.0.0/40\"], action: block}]\n",
                "streams.a.access_rules",
                "not an address or CIDR",
            ),
            (
                "origins:\n  allow: [\"127.0.0.1\"]\nstreams:\n  a:\n    url: \"http://127.0.0.1:9/i.m3u8\"\n    referers: [\"https://x.example\"]\n",
                "streams.a.referers",
                "host pattern",
            ),
            (
                "geoip:\n  database: \"/does/not/exist.mmdb\"\n",
                "geoip.database",
                "/does/not/exist.mmdb",
            ),
            (
                "geoip:\n  database: \"Cargo.toml\"\n",
                "geoip.database",
                "not a MaxMind database",
            ),
            (
                "origins:\n  allow: [\"a b\"]\n",
                "origins.allow[0]",
                "neither",
            ),
            ("edge: [", "edge", "invalid type"),
            ("- a\n- b\n", "(top level)", "invalid type"),
        ] {
            let e = parse(text).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with("test.yaml: "), "{s}");
            assert_eq!(e.key, key, "{text}: {s}");
            assert!(e.problem.contains(problem), "{text}: {s}");
            assert!(!s.contains('\n'), "one line: {s:?}");
        }
    }

    #[test]
    fn private_origins_need_the_allow_list() {
        let text = "origins:\n  allow: [\"127.0.0.1\", \"10.1.0.0/16\"]\nstreams:\n  a: { url: \"http://127.0.0.1:9/x/i.m3u8\" }\n  b: { url: \"http://10.1.2.3/i.m3u8\" }\n";
        let c = parse(text).unwrap();
        assert_eq!(c.streams["a"].playlist, "i.m3u8");
        assert!(parse("streams:\n  a: { url: \"http://10.2.2.3/i.m3u8\" }\n").is_err());
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut n = 0;
        // file:// stream paths are relative to the repo root, as when run from there.
        std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
