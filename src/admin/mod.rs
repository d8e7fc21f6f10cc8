//! The admin sidecar: users, login sessions, their streams and playback URLs over HTTP
//! (axum). The seed's routes (`/api/register`, `/api/login`, `/api/streams`,
//! `/api/update-stream`, `/api/stream`, `/api/logout`) work unchanged; REST routes for
//! streams and sessions sit beside them; `/api/openapi.json` describes them all.
//!
//! ```text
//! curl -s -XPOST localhost:8081/api/register -d '{"username":"alice","password":"correct horse"}'
//! JWT=$(curl -s -XPOST localhost:8081/api/login -d '{"username":"alice","password":"correct horse"}' | jq -r .token)
//! curl -s -H "Authorization: Bearer $JWT" -XPOST localhost:8081/api/update-stream \
//!      -d '{"streamID":1,"newUrl":"http://127.0.0.1:8000/live/index.m3u8"}'
//! curl -s -H "Authorization: Bearer $JWT" 'localhost:8081/api/stream?streamID=1'
//! ```

pub mod api;
pub mod auth;
pub mod playback;
pub mod publish;
pub mod web;

use crate::config::Config;
use crate::store::{Changes, Store};
use crate::token::Keyring;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What every admin request shares.
pub struct AdminState {
    /// The config, the token keys and the login-JWT keys made from them: replaced by a
    /// reload (`SIGHUP`).
    live: arc_swap::ArcSwap<AdminLive>,
    pub store: Arc<dyn Store>,
    /// The edge's cache of the store: told at once when a session ends or a stream
    /// changes (in `hlsgate serve` the edge shares it).
    /// Caches of the store in this process (the edge's, in `serve`) to tell of changes.
    pub changes: Arc<dyn Changes>,
    pub per_ip: auth::RateLimiter,
    pub per_user: auth::RateLimiter,
    /// A hash checked when the user does not exist, so that answer takes as long as a
    /// wrong password.
    pub dummy_hash: String,
    /// argon2 runs (19 MiB each) at once: one per CPU; more callers wait their turn, so a
    /// burst of logins cannot take the machine's memory or starve the edge.
    pub hash_slots: tokio::sync::Semaphore,
    /// Publishers let in, by the media server's client id: their stream, so callbacks
    /// after a key rotation still find it.
    pub publishers: moka::sync::Cache<String, i64>,
}

impl AdminState {
    pub fn new(
        cfg: Arc<Config>,
        keyring: Arc<Keyring>,
        store: Arc<dyn Store>,
        changes: Arc<dyn Changes>,
    ) -> AdminState {
        let mut pw = [0u8; 24];
        getrandom::getrandom(&mut pw).expect("OS random source");
        AdminState {
            live: arc_swap::ArcSwap::from_pointee(AdminLive::new(cfg.clone(), keyring)),
            per_ip: auth::RateLimiter::new(cfg.admin.login_attempts_per_ip),
            per_user: auth::RateLimiter::new(cfg.admin.login_attempts_per_user),
            dummy_hash: auth::hash_password(&format!("{pw:?}")),
            hash_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            publishers: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(24 * 3600))
                .build(),
            store,
            changes,
        }
    }

    pub fn cfg(&self) -> Arc<Config> {
        self.live.load().cfg.clone()
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.live.load().keyring.clone()
    }

    pub fn jwt(&self) -> Arc<auth::JwtKeys> {
        self.live.load().jwt.clone()
    }

    /// Take a reloaded config and key file (the rate limits' sizes stay as they were).
    pub fn reload(&self, cfg: Arc<Config>, keyring: Arc<Keyring>) {
        self.live.store(Arc::new(AdminLive::new(cfg, keyring)));
    }
}

struct AdminLive {
    cfg: Arc<Config>,
    keyring: Arc<Keyring>,
    jwt: Arc<auth::JwtKeys>,
}

impl AdminLive {
    fn new(cfg: Arc<Config>, keyring: Arc<Keyring>) -> AdminLive {
        AdminLive {
            jwt: Arc::new(auth::JwtKeys::new(&keyring)),
            cfg,
            keyring,
        }
    }
}

/// An error answer: `{"error": message}` with its status (and `Retry-After` for 429).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %e, "store");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after {
            headers.insert("retry-after", HeaderValue::from(s));
        }
        (
            self.status,
            headers,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Longest a client may take to send a request's headers, and to wait idle between
/// requests on a keep-alive connection; then the connection is closed.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest one request may take, its body included (then 408).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The admin API as a Pingora app: Pingora listens (plain or TLS, handed over on
/// `--upgrade`) and hyper serves each connection on the admin's own runtime, with
/// [`HEADER_TIMEOUT`] so slow or idle clients cannot pile up.
pub struct AdminApp {
    router: axum::Router,
    rt: tokio::runtime::Handle,
    /// Connections open now (the drain at shutdown waits for them).
    pub open: Arc<std::sync::atomic::AtomicUsize>,
}

impl AdminApp {
    pub fn new(state: Arc<AdminState>, rt: tokio::runtime::Handle) -> AdminApp {
        AdminApp {
            router: api::router(state),
            rt,
            open: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl pingora_core::apps::ServerApp for AdminApp {
    async fn process_new(
        self: &Arc<Self>,
        io: pingora_core::protocols::Stream,
        shutdown: &pingora_core::server::ShutdownWatch,
    ) -> Option<pingora_core::protocols::Stream> {
        use std::sync::atomic::Ordering;
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()))
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let svc = self
            .router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let mut shutdown = shutdown.clone();
        let open = self.open.clone();
        open.fetch_add(1, Ordering::AcqRel);
        let task = self.rt.spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if *shutdown.borrow() {
                b.keep_alive(false);
            }
            let conn = b.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        let _ = task.await;
        open.fetch_sub(1, Ordering::AcqRel);
        None
    }
}
