//! The edge's cache of the store: streams and sessions behind a moka cache. It belongs to
//! the edge (the store itself caches nothing); the admin tells it about changes through
//! [`crate::store::Changes`] without knowing it is there.
//!
//! Entries (found or not found) live `store.cache_ttl` (default 2 s), so a separate
//! `hlsgate edge` sees an ended session or a changed stream within that time while the
//! store sees at most one query per stream and session per period, however many viewers
//! ask (concurrent misses for one key share one query). In `hlsgate serve` the admin calls
//! [`StoreCache::forget_session`] / [`StoreCache::forget_stream`] on every change, so there
//! the change is seen at once.
//!
//! Store queries run on the store's own Tokio runtime (`rt`): its connection pools belong
//! to that runtime, and Pingora's worker runtimes only await the result.
//!
//! When the store fails (stopped, frozen, unreachable), the edge keeps admitting what it
//! has already seen: every answer is also kept as the last good one for
//! `store.cache_ttl + store.stale_if_error`, and a failed query is answered from it. A query
//! waits at most [`QUERY_TIMEOUT`]; once one has failed the store is taken as down, and
//! until a probe (a query of its own, once a second, in the background) succeeds, queries
//! fail at once instead of each waiting: what needs the store and was never seen is refused
//! 503 in well under 100 ms, and no viewer waits on a store known to be down.
//! `hlsgate_store_up` says which.

use crate::metrics::METRICS;
use crate::origin::Origin;
use crate::store::{session_hex, Changes, Store, StoreError, StreamRecord};
use crate::stream::Stream;
use moka::future::Cache;
use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// Longest a store query may take before it counts as failed (and the store as down).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a viewer with a last good answer waits for the store before getting it.
const STALE_AFTER: Duration = Duration::from_millis(50);

/// While the store is down, how often a probe query (of its own, in the background) asks
/// whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One cache of store answers: fresh ones (`store.cache_ttl`), and the last good one of
/// each key for `cache_ttl + stale_if_error`, answered while the store fails.
struct Layer<K, V> {
    fresh: Cache<K, V>,
    good: Option<moka::sync::Cache<K, V>>,
}

impl<K: Hash + Eq + Send + Sync + 'static, V: Clone + Send + Sync + 'static> Layer<K, V> {
    fn new(capacity: u64, ttl: Duration, stale: Duration) -> Layer<K, V> {
        Layer {
            fresh: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            good: (!stale.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl + stale)
                    .build()
            }),
        }
    }

    async fn insert(&self, k: K, v: V)
    where
        K: Clone,
    {
        if let Some(g) = &self.good {
            g.insert(k.clone(), v.clone());
        }
        self.fresh.insert(k, v).await;
    }

    async fn invalidate<Q>(&self, k: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(g) = &self.good {
            g.invalidate(k);
        }
        self.fresh.invalidate(k).await;
    }
}

/// Whether the store answers (see the module's notes).
#[derive(Default)]
struct Health {
    down: AtomicBool,
}

impl Health {
    /// The store answered: up again (logged once, `hlsgate_store_up` 1).
    fn up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            METRICS.store_up.set(1);
            tracing::warn!("store answers again: store-backed viewers are checked as before");
        }
    }
}

/// Record a query's outcome: the store is down after a failure, up after a success (each
/// change logged once, and `hlsgate_store_up` set). Going down starts the probe: one query
/// a second in the background until one answers. Runs on the store's runtime.
fn health_after(health: &Arc<Health>, store: &Arc<dyn Store>, ok: bool) {
    if ok {
        health.up();
        return;
    }
    if health.down.swap(true, Ordering::AcqRel) {
        return;
    }
    METRICS.store_up.set(0);
    tracing::error!(
        "store unreachable: viewers already seen are admitted from the last answers (store.stale_if_error), the rest answered 503"
    );
    let (store, health) = (store.clone(), health.clone());
    tokio::spawn(async move {
        while health.down.load(Ordering::Acquire) {
            tokio::time::sleep(PROBE_EVERY).await;
            // Any cheap query: a stream id that is never used.
            if let Ok(Ok(_)) = tokio::time::timeout(QUERY_TIMEOUT, store.stream(0)).await {
                health.up();
            }
        }
    });
}

/// A live session as the edge needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession {
    pub user_id: i64,
    /// Unix milliseconds.
    pub expires_at: i64,
}

pub struct StoreCache {
    store: Arc<dyn Store>,
    rt: Handle,
    health: Arc<Health>,
    streams: Layer<i64, Option<Arc<Stream>>>,
    sessions: Layer<[u8; 16], Option<LiveSession>>,
    /// Sessions this process ended (admin in `serve`), remembered longer than a cache
    /// entry lives: a store query that was already running when the session ended cannot
    /// put it back as live.
    ended: moka::sync::Cache<[u8; 16], ()>,
    /// JWT viewer ids revoked, by `(stream, viewer id)`.
    revoked: Layer<(String, String), bool>,
    /// Playback keys users registered, by `kid`.
    keys: Layer<String, Option<Arc<StoredKey>>>,
    /// Every registered `kid` (one store query per `store.cache_ttl`): a kid outside it is
    /// no registered key, with no query of its own.
    kids: Layer<(), Arc<std::collections::HashSet<String>>>,
    /// Viewer sessions of a stream seen in the last 30 s, across the edges.
    viewer_counts: Layer<String, i64>,
}

/// A playback key from the store: it may sign only for its owner's streams.
#[derive(Debug)]
pub struct StoredKey {
    pub user_id: i64,
    pub keys: crate::token::jwt::JwtKeys,
}

impl StoreCache {
    /// `ttl`: `store.cache_ttl`; `stale`: `store.stale_if_error` (0: nothing is answered
    /// from past answers while the store fails).
    pub fn new(store: Arc<dyn Store>, rt: Handle, ttl: Duration, stale: Duration) -> StoreCache {
        METRICS.store_up.set(1);
        StoreCache {
            store,
            rt,
            health: Arc::default(),
            streams: Layer::new(100_000, ttl, stale),
            sessions: Layer::new(1_000_000, ttl, stale),
            revoked: Layer::new(1_000_000, ttl, stale),
            keys: Layer::new(100_000, ttl, stale),
            kids: Layer::new(1, ttl, stale),
            viewer_counts: Layer::new(100_000, ttl, stale),
            ended: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live((ttl * 4).max(Duration::from_secs(10)))
                .build(),
        }
    }

    /// The store's runtime (its pools belong to it).
    pub fn rt(&self) -> &Handle {
        &self.rt
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Run a store query on the store's runtime, counted in `hlsgate_store_queries_total`:
    /// at most [`QUERY_TIMEOUT`], and not at all while the store is down (a probe of its
    /// own finds it back: no viewer's request waits on a store known to be down). The
    /// query, its timeout and what it says of the store's health run in a task of their
    /// own: a caller that stops waiting (see `cached`) does not stop them.
    async fn run<T, F>(&self, what: &'static str, f: F) -> Result<Option<T>, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<Option<T>, StoreError>> + Send + 'static,
    {
        if self.health.down.load(Ordering::Acquire) {
            METRICS
                .store_queries
                .with_label_values(&[what, "skipped"])
                .inc();
            return Err(StoreError::Unavailable("store down".into()));
        }
        let (health, store) = (self.health.clone(), self.store.clone());
        self.rt
            .spawn(async move {
                let r = tokio::time::timeout(QUERY_TIMEOUT, f)
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(format!(
                            "no answer within {QUERY_TIMEOUT:?}"
                        )))
                    });
                let result = match &r {
                    Ok(Some(_)) => "found",
                    Ok(None) => "not_found",
                    Err(e) => {
                        tracing::warn!(error = %e, what, "store query failed");
                        "error"
                    }
                };
                health_after(&health, &store, r.is_ok());
                METRICS
                    .store_queries
                    .with_label_values(&[what, result])
                    .inc();
                r
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))
            .and_then(|r| r)
    }

    /// One store query behind `layer`: a hit costs the lookup alone (no allocation, none
    /// of `try_get_with`'s loader bookkeeping); concurrent misses for one key share one
    /// query, run on the store's runtime by `query(store, owned key)` and kept as `make`
    /// makes it of the answer. When the query fails, the key's last good answer (within
    /// `store.stale_if_error`) is used.
    async fn cached<Q, K, V, T, F>(
        &self,
        layer: &Layer<K, V>,
        key: &Q,
        what: &'static str,
        query: impl FnOnce(Arc<dyn Store>, K) -> F,
        make: impl FnOnce(Option<T>) -> V,
    ) -> Result<V, Arc<StoreError>>
    where
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        K: Borrow<Q> + Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        T: Send + 'static,
        F: std::future::Future<Output = Result<Option<T>, StoreError>> + Send + 'static,
    {
        if let Some(hit) = layer.fresh.get(key).await {
            return Ok(hit);
        }
        let owned = key.to_owned();
        let fetch = layer.fresh.try_get_with(owned.clone(), async {
            let answer = self
                .run(what, query(self.store.clone(), owned.clone()))
                .await?;
            let v = make(answer);
            if let Some(g) = &layer.good {
                g.insert(owned, v.clone());
            }
            Ok(v)
        });
        let Some(good) = layer.good.as_ref().and_then(|g| g.get(key)) else {
            return fetch.await;
        };
        // With a last good answer at hand, a store that fails, or is slow to answer
        // (frozen, before its query's timeout says so), does not hold the viewer: the good
        // answer goes out, after STALE_AFTER at most, while the query runs on (in its own
        // task, see `run`).
        match tokio::time::timeout(STALE_AFTER, fetch).await {
            Ok(Ok(v)) => Ok(v),
            _ => {
                METRICS.store_stale_answers.inc();
                Ok(good)
            }
        }
    }

    /// Take a screen of an account for a viewer session ([`Store::claim_screen`]): never
    /// cached, and refused (an error) while the store is down.
    pub async fn claim_screen(
        &self,
        row: crate::store::ViewerSession,
        claim: crate::store::ScreenClaim,
    ) -> Result<crate::store::Screens, StoreError> {
        let store = self.store.clone();
        self.run("claim_screen", async move {
            store.claim_screen(&row, &claim).await.map(Some)
        })
        .await?
        .ok_or_else(|| StoreError::Unavailable("no answer".into()))
    }

    /// A stream of the store by its numeric id.
    pub async fn stream(&self, id: i64) -> Result<Option<Arc<Stream>>, Arc<StoreError>> {
        self.cached(
            &self.streams,
            &id,
            "stream",
            |store, id| async move { store.stream(id).await },
            |rec| rec.and_then(|r| to_stream(&r).map(Arc::new)),
        )
        .await
    }

    /// The session if it is live now.
    pub async fn session(&self, id: [u8; 16]) -> Result<Option<LiveSession>, Arc<StoreError>> {
        if self.ended.contains_key(&id) {
            return Ok(None);
        }
        let now = crate::store::now_ms();
        let found = self
            .cached(
                &self.sessions,
                &id,
                "session",
                move |store, id| async move { store.session(&session_hex(&id), now).await },
                |s| {
                    s.map(|s| LiveSession {
                        user_id: s.user_id,
                        expires_at: s.expires_at,
                    })
                },
            )
            .await?;
        Ok(found.filter(|s| s.expires_at > now))
    }

    pub async fn forget_session(&self, id: [u8; 16]) {
        self.ended.insert(id, ());
        self.sessions.invalidate(&id).await;
    }

    pub async fn forget_stream(&self, id: i64) {
        self.streams.invalidate(&id).await;
    }

    /// Viewer sessions of `stream` seen in the last 30 s by any edge sharing the store.
    pub async fn viewer_count(&self, stream: &str) -> Result<i64, Arc<StoreError>> {
        self.cached(
            &self.viewer_counts,
            stream,
            "viewer_count",
            |store, s| async move {
                let since = crate::store::now_ms() - super::viewers::LIVE_FOR.as_millis() as i64;
                store.count_viewers(&s, since).await.map(Some)
            },
            |n| n.unwrap_or(0),
        )
        .await
    }

    /// Whether a JWT viewer id is revoked for a stream.
    pub async fn viewer_revoked(
        &self,
        stream: &str,
        viewer: &str,
    ) -> Result<bool, Arc<StoreError>> {
        self.cached(
            &self.revoked,
            &(stream.to_owned(), viewer.to_owned()),
            "revoked_viewer",
            |store, (s, v)| async move { store.viewer_revoked(&s, &v).await.map(|r| r.then_some(())) },
            |r| r.is_some(),
        )
        .await
    }

    /// A playback key a user registered, by `kid`. A kid that is not among the registered
    /// ones (as of `store.cache_ttl` ago at most) is answered without a query.
    pub async fn playback_key(&self, kid: &str) -> Result<Option<Arc<StoredKey>>, Arc<StoreError>> {
        let kids = self
            .cached(
                &self.kids,
                &(),
                "playback_kids",
                |store, ()| async move { store.playback_kids().await.map(Some) },
                |kids| Arc::new(kids.unwrap_or_default().into_iter().collect()),
            )
            .await?;
        if !kids.contains(kid) {
            return Ok(None);
        }
        self.cached(
            &self.keys,
            kid,
            "playback_key",
            |store, k| async move { store.playback_key(&k).await },
            |rec| {
                rec.and_then(|r| {
                    let pems = [(r.kid.clone(), r.pem.clone())].into();
                    let keys = crate::token::jwt::JwtKeys::from_pems(&pems).ok()?;
                    Some(Arc::new(StoredKey {
                        user_id: r.user_id,
                        keys,
                    }))
                })
            },
        )
        .await
    }
}

/// The edge's stream for a stored record; `None` (not found) if its URL or its rules no
/// longer parse (rules this edge cannot read are rules it cannot apply: fail closed).
pub fn to_stream(r: &StreamRecord) -> Option<Stream> {
    let (origin, playlist) = Origin::from_playlist_url(&r.url()).ok()?;
    if matches!(origin, Origin::File { .. }) {
        return None; // only http(s) origins are accepted from users
    }
    let access = match r.access_rules.as_str() {
        "" => None,
        text => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            Some(Arc::new(crate::rules::AccessRules::from_json(&v).ok()?))
        }
    };
    let referers = match r.referers.as_str() {
        "" => None,
        text => {
            let list: Vec<String> = serde_json::from_str(text).ok()?;
            crate::rules::Referers::parse(&list).ok()?.map(Arc::new)
        }
    };
    Some(Stream {
        id: r.id.to_string(),
        origin,
        playlist,
        owner: Some(r.user_id),
        auth: None,
        max_viewers: 0,
        access,
        referers,
    })
}

#[async_trait::async_trait]
impl Changes for StoreCache {
    async fn viewer_revoked(&self, stream: &str, viewer: &str) {
        self.revoked
            .insert((stream.to_owned(), viewer.to_owned()), true)
            .await;
    }

    async fn playback_key_changed(&self, kid: &str) {
        self.keys.invalidate(kid).await;
        self.kids.invalidate(&()).await;
    }

    async fn session_ended(&self, id: [u8; 16]) {
        self.forget_session(id).await
    }

    async fn stream_changed(&self, id: i64) {
        self.forget_stream(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{now_ms, Session};

    #[tokio::test]
    async fn the_cache_serves_the_store_and_forgetting_ends_a_session_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        let user = store.create_user("u", "h", 0).await.unwrap();
        let id = [3u8; 16];
        let now = now_ms();
        let s = Session {
            id: session_hex(&id),
            user_id: user.id,
            created_at: now,
            expires_at: now + 60_000,
            ip: String::new(),
            user_agent: String::new(),
        };
        store.create_session(&s, 0).await.unwrap();
        let d = StoreCache::new(
            store.clone(),
            Handle::current(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let live = d.session(id).await.unwrap().unwrap();
        assert_eq!(live.user_id, user.id);
        // Ended behind the cache's back (another process): still cached as live.
        assert!(store.delete_session(user.id, &s.id).await.unwrap());
        assert!(d.session(id).await.unwrap().is_some());
        // Ended through this process: gone at once, and a late store answer (a query that
        // was running when it ended) cannot bring it back.
        d.forget_session(id).await;
        assert_eq!(d.session(id).await.unwrap(), None);
        d.sessions.fresh.insert(id, Some(live)).await;
        assert_eq!(d.session(id).await.unwrap(), None);
        // Unknown streams are cached as not found too.
        assert!(d.stream(42).await.unwrap().is_none());
    }
}
