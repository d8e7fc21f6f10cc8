//! The edge: Pingora server wiring and the state every request shares.
//!
//! ```text
//! hlsgate token --stream demo            # prints http://127.0.0.1:8080/api/hls/<token>/demo/index.m3u8
//! curl -i "$(hlsgate token --stream demo)"
//! ```

pub mod access;
pub mod admission;
pub mod cors;
pub mod external;
pub mod file;
pub mod guard;
pub mod modes;
mod packed;
pub mod proxy;
pub mod respond;
pub mod shield;
pub mod store_cache;
pub mod viewers;

use crate::cache::lock::FillLock;
use crate::cache::SegmentStore;
use crate::config::Config;
use crate::metrics::MetricsApp;
use crate::stream::Stream;
use crate::token::{Keyring, TokenError, Verified};
use admission::Denial;
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use std::collections::HashMap;
use std::sync::Arc;
use store_cache::StoreCache;

/// What every request of the edge shares.
pub struct EdgeState {
    pub cfg: Arc<Config>,
    pub keyring: Arc<Keyring>,
    /// Static streams from the config.
    pub streams: HashMap<String, Arc<Stream>>,
    /// The edge's cache of streams and sessions in the store (numeric stream ids).
    pub directory: Option<Arc<StoreCache>>,
    /// `tokens.ttl` in seconds.
    pub ttl: u32,
    /// The segment cache and its fill lock (leaked: Pingora's cache API wants `'static`).
    pub store: &'static SegmentStore,
    pub cache_lock: &'static CacheKeyLockImpl,
    /// Cached playlists (object identity + stream) that a viewer whose token is not
    /// renewed receives byte for byte: their next viewers skip the rewriter and get the
    /// cached `Bytes` as they are.
    pub verbatim: moka::sync::Cache<VerbatimKey, ()>,
    /// Origin objects whose fetch just failed (a 5xx, a refused connection, a timeout),
    /// by cache key, with the status and message given, for `cache.error_ttl`: their viewers get the
    /// stale copy or the same answer at once, instead of each trying the failing origin
    /// again (nginx's `proxy_cache_lock` + `use_stale`, for failures too).
    pub failed: moka::sync::Cache<pingora_cache::key::HashBinary, (u16, &'static str)>,
    /// Stale objects being refreshed in the background, by the path and query of the
    /// request that started it (`proxy::refresh_key`): what that viewer was admitted to
    /// fetch, for the refresh (a Pingora subrequest with a copy of that request) to fetch
    /// without admitting anyone again.
    pub refreshes: moka::sync::Cache<String, Arc<Refresh>>,
    /// Stale objects a background refresh is fetching now, by cache key: their viewers are
    /// answered the stale copy early (`serve_fresh_hit`), as while a failure is
    /// remembered. Bounded in time by the origin timeouts, should a refresh never end.
    pub refreshing: moka::sync::Cache<pingora_cache::key::HashBinary, ()>,
    /// JWTs already verified, by their text: `(stream, grant)`. ES384 verification costs
    /// about 0.2 ms (AWS-LC; 0.75 ms with ring); a player presents the same JWT on every
    /// playlist refresh, so it is verified once and its `exp` checked each time.
    /// The owner is the user whose registered key signed it (`None`: a configured key).
    pub jwt_seen: moka::sync::Cache<String, (String, crate::token::jwt::JwtGrant, Option<i64>)>,
    /// JWT playback keys: `tokens.jwt.keys` and the edge's own (`hlsgate-<kid>`, which the
    /// admin's `/api/playback-token` signs with).
    pub jwt_keys: crate::token::jwt::JwtKeys,
    /// The edge's own CloudFront-format cookie keys (`Keyring::derive`).
    pub cloudfront_native: Vec<(u8, [u8; 32])>,
    /// Recent exchanges of a foreign credential for a native token, by everything they
    /// depend on (see `admission::exchange`): the native token and the token checked. (The
    /// grant itself, rules included, travels in the token: nothing of it lives only here.)
    pub exchanges: moka::sync::Cache<u128, (String, Verified)>,
    /// Viewer sessions seen here, reported to the store; those the admin deleted (only with
    /// a store).
    pub viewers: Option<Arc<viewers::Viewers>>,
    /// The addresses each token session came from lately (`edge.token_max_ips`).
    pub session_ips: moka::sync::Cache<[u8; 16], Arc<parking_lot::Mutex<Vec<std::net::IpAddr>>>>,
    /// Failed credential checks by client address: `(unix second, failures in it)`
    /// (`edge.max_failed_verifications`).
    pub failed_checks: moka::sync::Cache<std::net::IpAddr, Arc<parking_lot::Mutex<(u32, u32)>>>,
    /// Accounts whose screens were all in use a moment ago, and the sessions holding them
    /// (`admission::screens`): the account's other viewer sessions are refused for
    /// [`FULL_FOR`] without a store transaction each; a holder new to this edge (after an
    /// upgrade, or moving between edges) is not.
    pub screens_full: moka::sync::Cache<i64, Arc<Vec<[u8; 16]>>>,
    /// `auth.external`: the platform's handler, its slots and its decisions.
    pub external: Option<Arc<external::External>>,
    /// The key of the exchange cache's hash (random per process).
    pub exchange_key: [u8; 16],
    /// Which state this is in the process (each config load makes a new one): what the
    /// edge's headers kept with cached objects were made for (`cache::Derived::tag`).
    pub generation: u64,
}

/// How long an account found with every screen in use is refused new sessions without
/// asking the store again: one claim transaction a second at most for an account whose
/// viewers (or a script with its credentials) keep opening new sessions.
pub const FULL_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The next [`EdgeState::generation`].
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A cached object's identity (key and when it was stored) and the stream it is seen
/// through (out-of-folder URIs depend on the stream's base).
pub type VerbatimKey = ([u8; 16], u128, String);

impl EdgeState {
    pub fn new(
        cfg: Arc<Config>,
        keyring: Arc<Keyring>,
        directory: Option<Arc<StoreCache>>,
    ) -> EdgeState {
        EdgeState::new_with(cfg, keyring, directory, None)
    }

    /// [`EdgeState::new`], reusing a segment cache, its lock and the viewer reporter.
    #[allow(clippy::type_complexity)]
    fn new_with(
        cfg: Arc<Config>,
        keyring: Arc<Keyring>,
        directory: Option<Arc<StoreCache>>,
        kept: Option<(
            &'static SegmentStore,
            &'static CacheKeyLockImpl,
            Option<Arc<viewers::Viewers>>,
        )>,
    ) -> EdgeState {
        let streams = cfg
            .streams
            .iter()
            .map(|(id, s)| (id.clone(), Arc::new(s.clone())))
            .collect();
        let ttl = cfg.tokens.ttl.as_secs().min(u32::MAX as u64) as u32;
        let (store, cache_lock, kept_viewers) = match kept {
            Some((s, l, v)) => (s, l, Some(v)),
            None => {
                // A fill's lock must outlive the slowest origin answer the timeouts allow:
                // a lock that expires first sends every waiting viewer to a hanging origin
                // on its own.
                let e = &cfg.edge;
                let lock_age = cfg.cache_lock_timeout.max(
                    e.origin_connect_timeout
                        + e.origin_read_timeout
                        + std::time::Duration::from_secs(1),
                );
                let store = SegmentStore::leak(cfg.cache.clone());
                (store, FillLock::leak(lock_age, store), None)
            }
        };
        let cloudfront_native = keyring.derive(crate::token::cloudfront::NATIVE_LABEL);
        let cfg_error_ttl = cfg.cache.error_ttl.max(std::time::Duration::from_millis(1));
        let refresh_ttl = cfg.edge.origin_connect_timeout
            + cfg.edge.origin_total_timeout
            + std::time::Duration::from_secs(1);
        let external = cfg
            .external
            .clone()
            .map(|e| Arc::new(external::External::new(e)));
        let viewers = kept_viewers.unwrap_or_else(|| {
            directory.as_ref().map(|d| {
                let v = Arc::new(viewers::Viewers::new(cfg.edge.listen.to_string()));
                v.clone()
                    .spawn(d.store().clone(), d.rt(), cfg.tokens.session_ttl);
                v
            })
        });
        if let Some(g) = &cfg.geoip {
            g.watch();
        }
        let jwt_keys = cfg.tokens.jwt.merged(&crate::token::jwt::native_public(
            &keyring.derive(crate::token::jwt::NATIVE_LABEL),
        ));
        EdgeState {
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cfg,
            keyring,
            streams,
            directory,
            ttl,
            store,
            cache_lock,
            verbatim: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            jwt_seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            cloudfront_native,
            jwt_keys,
            external,
            viewers,
            session_ips: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            failed_checks: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(10))
                .build(),
            screens_full: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(FULL_FOR)
                .build(),
            exchange_key: {
                let mut k = [0u8; 16];
                getrandom::getrandom(&mut k).expect("the OS has randomness");
                k
            },
            exchanges: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(ttl.max(2) as u64 / 2))
                .build(),
            failed: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(cfg_error_ttl)
                .build(),
            refreshes: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
            refreshing: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(refresh_ttl)
                .build(),
        }
    }
}

/// What a background refresh fetches (see `EdgeState::refreshes`).
pub struct Refresh {
    pub stream: Arc<crate::stream::Stream>,
    pub kind: crate::media::Kind,
    pub origin_path: String,
    pub upstream_uri: String,
}

impl EdgeState {
    /// The state for a reloaded config: its streams, keys, CORS, limits and handler, with
    /// what this process has learnt kept (the segment cache, viewer sessions, the
    /// addresses each token came from). Verified JWTs and exchanged credentials
    /// are forgotten: a key the new config no longer has must stop working at once.
    pub fn renewed(&self, cfg: Arc<Config>, keyring: Arc<Keyring>) -> EdgeState {
        let mut next = EdgeState::new_with(
            cfg.clone(),
            keyring,
            self.directory.clone(),
            Some((self.store, self.cache_lock, self.viewers.clone())),
        );
        next.verbatim = self.verbatim.clone();
        if self.cfg.cache.error_ttl == next.cfg.cache.error_ttl {
            next.failed = self.failed.clone();
        }
        next.refreshes = self.refreshes.clone();
        next.refreshing = self.refreshing.clone();
        next.session_ips = self.session_ips.clone();
        next.failed_checks = self.failed_checks.clone();
        next.exchange_key = self.exchange_key;
        if let (Some(old), Some(new)) = (&self.external, &cfg.external) {
            if old.config() == new {
                next.external = Some(old.clone());
            }
        }
        next
    }

    /// Note that `session` came from `ip`: whether it has now come from more than
    /// `edge.token_max_ips` addresses in the last 10 minutes (counted once, when it first
    /// does, in `hlsgate_token_sharing_total`).
    pub fn shared(&self, session: [u8; 16], ip: std::net::IpAddr) -> bool {
        let max = self.cfg.edge.token_max_ips;
        if max == 0 {
            return false;
        }
        let ips = self
            .session_ips
            .get_with(session, || Arc::new(parking_lot::Mutex::new(Vec::new())));
        let mut ips = ips.lock();
        if !ips.contains(&ip) {
            if ips.len() == max {
                crate::metrics::METRICS.token_sharing.inc();
            }
            if ips.len() <= max {
                ips.push(ip); // one past the limit is enough to know
            }
        }
        ips.len() > max && !ips[..max].contains(&ip)
    }

    /// Whether `ip` has used up this second's failed credential checks
    /// (`edge.max_failed_verifications`): it is then answered 429 without a check.
    pub fn checks_exhausted(&self, ip: std::net::IpAddr, now: u32) -> bool {
        let max = self.cfg.edge.max_failed_verifications;
        max > 0
            && self
                .failed_checks
                .get(&ip)
                .is_some_and(|c| matches!(*c.lock(), (s, n) if s == now && n >= max))
    }

    /// Count a credential from `ip` that failed its check at `now`.
    pub fn check_failed(&self, ip: std::net::IpAddr, now: u32) {
        if self.cfg.edge.max_failed_verifications == 0 {
            return;
        }
        let c = self
            .failed_checks
            .get_with(ip, || Arc::new(parking_lot::Mutex::new((now, 0))));
        let mut c = c.lock();
        if c.0 != now {
            *c = (now, 0);
        }
        c.1 = c.1.saturating_add(1);
    }

    /// Whether CloudFront key pair `id` is one this edge verifies with: a configured public
    /// key, or one of the edge's own cookie keys (`hlsgate-<kid>`).
    pub fn has_cloudfront_key(&self, id: &str) -> bool {
        match id.strip_prefix(crate::token::cloudfront::NATIVE_PREFIX) {
            Some(kid) => self
                .cloudfront_native
                .iter()
                .any(|(k, _)| kid.parse() == Ok(*k)),
            None => self.cfg.tokens.cloudfront.has_key(id),
        }
    }

    /// Whether a JWT viewer id was revoked for the stream. Without a store nothing can be
    /// revoked; a store that cannot answer counts as revoked (fail closed).
    pub async fn viewer_revoked(&self, stream: &str, viewer: &str) -> bool {
        match &self.directory {
            None => false,
            Some(d) => d.viewer_revoked(stream, viewer).await.unwrap_or(true),
        }
    }

    /// The stream a verified token asks for, once its session (if it names a stored one)
    /// is known to be live and to belong to the stream's owner.
    pub async fn lookup(&self, id: &str, v: &Verified) -> Result<Arc<Stream>, Denial> {
        let ended = Denial::token(TokenError::SessionEnded);
        let session = match (v.stored_session(), &self.directory) {
            (false, _) => None,
            // A token naming a stored session is only honoured where sessions can be checked.
            (true, None) => return Err(ended),
            (true, Some(d)) => match d.session(v.session).await {
                Ok(Some(s)) => Some(s),
                Ok(None) => return Err(ended),
                Err(_) => return Err(Denial::STORE_DOWN),
            },
        };
        let stream = if let Some(s) = self.streams.get(id) {
            s.clone()
        } else {
            let found = match (&self.directory, id.parse::<i64>()) {
                (Some(d), Ok(n)) if id.bytes().all(|b| b.is_ascii_digit()) => {
                    d.stream(n).await.map_err(|_| Denial::STORE_DOWN)?
                }
                _ => None,
            };
            found.ok_or(Denial::new(404, "unknown_stream", "unknown stream"))?
        };
        match (stream.owner, session) {
            (Some(owner), Some(s)) if owner != s.user_id => {
                Err(Denial::token(TokenError::WrongStream))
            }
            _ => Ok(stream),
        }
    }
}

/// The edge's state as of the last (re)load of the config: requests read it, `SIGHUP`
/// replaces it.
pub type Live = Arc<arc_swap::ArcSwap<EdgeState>>;

/// Set when the process starts to stop or hands over to a new one: responses then say
/// `Connection: close`, so keep-alive clients reconnect (to the new process) between
/// requests instead of finding their idle connection closed under a request they just sent.
pub static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`DRAINING`] is set.
pub fn draining() -> bool {
    DRAINING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Add the edge (on `edge.listen`, and on `edge.tls.listen` with `certs`) and the metrics
/// endpoint to `server`.
pub fn add_services(
    server: &mut Server,
    live: &Live,
    limits: &Arc<guard::Limits>,
    certs: Option<&Arc<crate::tls::Certs>>,
    access: Option<Arc<access::AccessLog>>,
) {
    let state = live.load_full();
    let cfg = &state.cfg;
    let mut proxy = pingora_proxy::HttpProxy::new(
        proxy::EdgeProxy {
            live: live.clone(),
            access: access.clone(),
        },
        server.configuration.clone(),
    );
    let mut opts = pingora_core::apps::HttpServerOptions::default();
    // h2 connections have no per-request header deadline: bound their idleness instead.
    opts.h2_idle_timeout = Some(cfg.edge.idle_timeout);
    proxy.server_options = Some(opts);
    proxy.handle_init_modules();
    let mut app = guard::Guarded::new(Arc::new(proxy), limits.clone(), access);
    // The TLS listener is a plain one for Pingora: the guard does the handshake (see
    // `guard`), counted against edge.max_connections and bounded by header_timeout.
    let tls = cfg.edge.tls.as_ref().zip(certs);
    if let Some((tls, certs)) = tls {
        app = app.with_tls(tls.listen.port(), certs.settings(true));
    }
    let mut svc = pingora_core::services::listening::Service::new("hlsgate edge".into(), app);
    // NOTE: Pingora does not flush a response header while a body is to follow; the
    // guard's stream flushes each header itself (see `guard::HeaderDeadline`).
    // No L4 read buffer: Pingora's default gives every connection a 64 KiB one for its
    // whole life, which is most of what an idle keep-alive connection costs (~110 KiB each,
    // 1.1 GB for 10,000: bench/soak.sh). The HTTP/1 parser reads into its own header
    // buffer, and rustls into its own, so the L4 one only copied bytes twice.
    let l4 = L4BufferSettings::default().read(0);
    svc.add_listener(ListenerConfig::tcp(cfg.edge.listen.to_string()).l4_buffer(l4));
    if let Some((tls, _)) = tls {
        svc.add_listener(ListenerConfig::tcp(tls.listen.to_string()).l4_buffer(l4));
    }
    server.add_service(svc);
    let mut metrics = pingora_core::services::listening::Service::new(
        "hlsgate metrics".into(),
        MetricsApp {
            store: Some(state.store),
        },
    );
    metrics.add_tcp(&cfg.metrics_listen.to_string());
    server.add_service(metrics);
}

/// The Pingora settings of a process: threads, shutdown grace, upgrade socket, origin CAs.
pub fn server_conf(cfg: &Config) -> ServerConf {
    ServerConf {
        threads: cfg.edge.threads,
        // The drain itself is watched by `hlsgate::server` (it exits as soon as no
        // connection is left); Pingora's grace is only the upper bound.
        grace_period_seconds: Some(cfg.edge.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        // Pingora's defaults put these in /tmp, shared by every instance on the machine.
        pid_file: "/dev/null".into(),
        upgrade_sock: cfg.edge.upgrade_socket.display().to_string(),
        ca_file: cfg
            .origins
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        // One runtime per thread by default: no cross-thread wake-ups per request (about
        // 10 % more cached playlists a second here: bench/README.md).
        work_stealing: cfg.edge.work_stealing,
        ..ServerConf::default()
    }
}
