//! The store: users, their login sessions and their streams, behind one [`Store`] trait
//! with two implementations over the same SQL: embedded SQLite (the single-node default,
//! `sqlite://data/hlsgate.db`) and PostgreSQL (`postgres://…`, shared by several edges).
//!
//! Schema changes are numbered files in `migrations/{sqlite,postgres}/`, applied in order
//! at start-up and recorded in `hlsgate_migrations`; every statement is idempotent, so
//! several processes starting at once on one store are safe.
//!
//! The edge keeps its own short-lived cache of streams and sessions
//! ([`crate::edge::store_cache::StoreCache`]), so the store is asked at most once per
//! `store.cache_ttl` per stream or session; the admin reports changes to such caches
//! through [`Changes`].

mod sql;

use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at: i64,
}

/// A login session. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// 32 lowercase hex digits (the 16 random bytes playback tokens carry).
    pub id: String,
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    /// Where the login came from (shown when listing sessions).
    pub ip: String,
    pub user_agent: String,
}

/// A user's stream: the playlist URL split at its last `/`, as the seed splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub id: i64,
    pub user_id: i64,
    /// Origin folder, without a trailing `/`.
    pub base_url: String,
    /// Playlist name below `base_url`.
    pub endpoint: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Access rules, a JSON list in [`crate::rules`]' shape (empty: none).
    pub access_rules: String,
    /// Allowed referrers, a JSON list of strings (empty: any).
    pub referers: String,
}

impl StreamRecord {
    /// The playlist URL the user gave.
    pub fn url(&self) -> String {
        format!("{}/{}", self.base_url, self.endpoint)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (a username).
    #[error("already exists")]
    Conflict,
    /// The store failed or cannot be reached. The text names no secret.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Every read and write hlsgate makes. Methods taking a `user_id` only ever see or touch
/// that user's rows: ownership is enforced here, in the SQL, not left to callers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// [`StoreError::Conflict`] when the name is taken.
    async fn create_user(&self, username: &str, password_hash: &str, now: i64) -> Result<User>;
    async fn user_by_name(&self, username: &str) -> Result<Option<User>>;

    /// Store a new session. With `max_per_user > 0`, the user's oldest sessions beyond that
    /// many are deleted; their ids are returned. Expired sessions of anyone are purged too.
    async fn create_session(&self, s: &Session, max_per_user: u32) -> Result<Vec<String>>;
    /// A session that has not expired at `now`.
    async fn session(&self, id: &str, now: i64) -> Result<Option<Session>>;
    /// The user's unexpired sessions, newest first.
    async fn sessions(&self, user_id: i64, now: i64) -> Result<Vec<Session>>;
    /// End one of the user's sessions; false when the user has no such session.
    async fn delete_session(&self, user_id: i64, id: &str) -> Result<bool>;

    async fn create_stream(
        &self,
        user_id: i64,
        base_url: &str,
        endpoint: &str,
        now: i64,
    ) -> Result<StreamRecord>;
    /// Change one of the user's streams; `None` when the user has no stream `id`.
    async fn update_stream(
        &self,
        user_id: i64,
        id: i64,
        base_url: &str,
        endpoint: &str,
        now: i64,
    ) -> Result<Option<StreamRecord>>;
    /// Any user's stream, for the edge (which checks the owner against the session).
    async fn stream(&self, id: i64) -> Result<Option<StreamRecord>>;
    /// One of the user's streams.
    async fn user_stream(&self, user_id: i64, id: i64) -> Result<Option<StreamRecord>>;
    /// The user's streams, by id.
    async fn streams(&self, user_id: i64) -> Result<Vec<StreamRecord>>;
    /// Delete one of the user's streams; false when the user has no stream `id`.
    async fn delete_stream(&self, user_id: i64, id: i64) -> Result<bool>;

    /// Register a JWT playback key. [`StoreError::Conflict`] when the `kid` is taken.
    async fn create_playback_key(&self, k: &PlaybackKey) -> Result<()>;
    /// The user's playback keys, oldest first.
    async fn playback_keys(&self, user_id: i64) -> Result<Vec<PlaybackKey>>;
    /// Any user's key by `kid`, for the edge (which checks the owner against the stream).
    async fn playback_key(&self, kid: &str) -> Result<Option<PlaybackKey>>;
    /// Every registered key's `kid`: the edge asks for a key only when it is one of them,
    /// so a flood of JWTs naming made-up kids costs no store query each.
    async fn playback_kids(&self) -> Result<Vec<String>>;
    /// Delete one of the user's keys; false when the user has no key `kid`.
    async fn delete_playback_key(&self, user_id: i64, kid: &str) -> Result<bool>;
    /// Revoke a JWT `aws:viewer-id` for a stream (idempotent).
    async fn revoke_viewer(&self, stream: &str, viewer_id: &str, now: i64) -> Result<()>;
    async fn viewer_revoked(&self, stream: &str, viewer_id: &str) -> Result<bool>;

    /// Set (or replace: rotation) a stream's key hash.
    async fn set_stream_key(&self, stream_id: i64, key_hash: &str, now: i64) -> Result<()>;
    /// The stream a key hash belongs to.
    async fn stream_by_key(&self, key_hash: &str) -> Result<Option<i64>>;
    /// Mark a stream live (a publisher was let in).
    async fn set_live(&self, stream_id: i64, ip: &str, client_id: &str, now: i64) -> Result<()>;
    /// Mark a stream not live; false when it was not.
    async fn clear_live(&self, stream_id: i64) -> Result<bool>;
    /// Who publishes a stream now.
    async fn live(&self, stream_id: i64) -> Result<Option<Live>>;

    /// Add what edges saw of viewer sessions (one transaction; `bytes` are added).
    async fn record_viewers(&self, rows: &[ViewerSession]) -> Result<()>;
    /// A stream's viewer sessions seen since `since`, not revoked.
    async fn viewers(&self, stream_id: &str, since: i64) -> Result<Vec<ViewerSession>>;
    /// How many viewer sessions of a stream were seen since `since`, not revoked.
    async fn count_viewers(&self, stream_id: &str, since: i64) -> Result<i64>;
    /// The stream a viewer session watches.
    async fn viewer_stream(&self, id: &str) -> Result<Option<String>>;
    /// Revoke a viewer session; false when it is unknown or already revoked.
    async fn revoke_viewer_session(&self, id: &str, now: i64) -> Result<bool>;
    /// Viewer sessions revoked at or after `since`: `(id, revoked_at, why)` (`screens`: ended
    /// for a newer screen of the account; `None`: by the admin).
    async fn revoked_viewer_sessions(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64, Option<String>)>>;

    /// Set one of the user's streams' access rules and referrers (JSON lists, `""` for
    /// none); false when the user has no stream `id`.
    async fn set_stream_rules(
        &self,
        user_id: i64,
        id: i64,
        access_rules: &str,
        referers: &str,
        now: i64,
    ) -> Result<bool>;
    /// The user's own screen limit, set by the platform (`None`: the configured default).
    async fn user_max_screens(&self, user_id: i64) -> Result<Option<u32>>;
    async fn set_user_max_screens(&self, user_id: i64, max: Option<u32>) -> Result<()>;
    /// Take one of `claim.account`'s screens for the viewer session `row`, in one
    /// transaction that claims of the same account on other edges wait for.
    async fn claim_screen(&self, row: &ViewerSession, claim: &ScreenClaim) -> Result<Screens>;
    /// The account's viewer sessions seen, or ended, since `since`, oldest first.
    async fn account_sessions(&self, account: i64, since: i64) -> Result<Vec<AccountSession>>;
}

/// What [`Store::claim_screen`] is asked.
#[derive(Debug, Clone)]
pub struct ScreenClaim {
    /// The user the viewer session's credential was issued to.
    pub account: i64,
    /// `admin.max_screens_per_user` (0: no limit).
    pub default_max: u32,
    /// When the account is full, end its oldest sessions instead of refusing this one.
    pub end_oldest: bool,
    /// Sessions seen before this (unix ms) no longer hold a screen.
    pub since: i64,
    pub now: i64,
}

/// The answer of [`Store::claim_screen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screens {
    /// The session holds a screen; `ended` are the sessions ended to make room.
    Taken { ended: Vec<String> },
    /// Every screen is taken (the account's limit): by these sessions (ids, hex).
    Full { holders: Vec<String> },
}

/// A user's screen limit: their own (`users.max_screens`, which the platform sets, higher or
/// lower), else the configured one; 0 is no limit.
pub fn effective_screens(configured: u32, own: Option<u32>) -> u32 {
    own.unwrap_or(configured)
}

/// One of an account's viewer sessions ([`Store::account_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSession {
    pub session: ViewerSession,
    /// When it was ended (unix ms), and why (`screens`, or `None`: by the admin).
    pub ended_at: Option<i64>,
    pub ended_reason: Option<String>,
}

/// A viewer session as the edges report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerSession {
    /// The token's session id, hex.
    pub id: String,
    pub stream_id: String,
    pub ip: String,
    pub user_agent: String,
    /// The edge that saw it last (`edge.listen`).
    pub edge: String,
    /// Unix milliseconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Body bytes sent in this report (added to the stored total).
    pub bytes: i64,
    /// The user whose credential it plays with, when known (screens per account).
    pub account: Option<i64>,
}

/// A stream being published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub publisher_ip: String,
    /// nginx-rtmp's `clientid` (or SRS's `client_id`).
    pub client_id: String,
    /// Unix milliseconds.
    pub since: i64,
}

/// A public key a user registered for JWT playback tokens (`/api/playback-keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackKey {
    pub kid: String,
    pub user_id: i64,
    pub name: String,
    /// SPKI PEM.
    pub pem: String,
    /// SHA-256 of the key's DER, hex.
    pub fingerprint: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Connect to `url` (`sqlite://PATH` or `postgres://…`) and apply pending migrations.
/// SQLite files (and their folder) are created, the file mode 0600: it holds password hashes.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sql::SqliteStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(sql::PgStore::open(url).await?))
    } else {
        Err(StoreError::Unavailable(format!(
            "{}: unsupported store URL (sqlite://PATH or postgres://…)",
            redact_url(url)
        )))
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Session ids as stored: lowercase hex of the 16 bytes tokens carry.
pub fn session_hex(id: &[u8; 16]) -> String {
    hex(id)
}

/// Lower-case hex of `b` (session ids, key fingerprints, stream-key hashes).
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// The 16 bytes of a stored session id; `None` unless exactly 32 hex digits.
pub fn session_bytes(hex: &str) -> Option<[u8; 16]> {
    let h = hex.as_bytes();
    if h.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in h.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// What the admin tells caches of the store when it changes something, so that a process
/// holding one (`hlsgate serve`) sees the change at once rather than when its entries
/// expire.
#[async_trait]
pub trait Changes: Send + Sync {
    /// A login session ended (logout, revocation, eviction).
    async fn session_ended(&self, id: [u8; 16]);
    /// A stream was created, changed or deleted.
    async fn stream_changed(&self, id: i64);
    /// A JWT viewer id was revoked for a stream.
    async fn viewer_revoked(&self, _stream: &str, _viewer: &str) {}
    /// A playback key was registered or deleted.
    async fn playback_key_changed(&self, _kid: &str) {}
}

/// No cache to tell: `hlsgate admin` alone, and tests of the admin.
pub struct NoCaches;

#[async_trait]
impl Changes for NoCaches {
    async fn session_ended(&self, _id: [u8; 16]) {}
    async fn stream_changed(&self, _id: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://hlsgate:s3cret@db.example:5432/hlsgate"),
            "postgres://hlsgate:***@db.example:5432/hlsgate"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn session_ids_round_trip_as_hex() {
        let id = [0xab; 16];
        assert_eq!(session_bytes(&session_hex(&id)), Some(id));
        assert_eq!(session_bytes("ab"), None);
        assert_eq!(session_bytes(&"zz".repeat(16)), None);
    }
}
