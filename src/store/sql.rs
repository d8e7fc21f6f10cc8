//! The two SQL stores. Both run the same statements (`$N` parameters work in SQLite and
//! PostgreSQL alike); they differ in how they connect, their migrations' DDL, and how
//! migrations are serialised between processes.

use super::{
    effective_screens, AccountSession, Live, PlaybackKey, Result, ScreenClaim, Screens, Session,
    Store, StoreError, StreamRecord, User, ViewerSession,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// Numbered migrations per backend, applied in order.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_playback.sql")),
    (3, include_str!("../../migrations/sqlite/0003_publish.sql")),
    (4, include_str!("../../migrations/sqlite/0004_viewers.sql")),
    (
        5,
        include_str!("../../migrations/sqlite/0005_rules_screens.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_playback.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_publish.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_viewers.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_rules_screens.sql"),
    ),
];

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS hlsgate_migrations \
     (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => unavailable(e),
    }
}

type UserRow = (i64, String, String, i64);
type SessionRow = (String, i64, i64, i64, String, String);
type StreamRow = (i64, i64, String, String, i64, i64, String, String);

fn user((id, username, password_hash, created_at): UserRow) -> User {
    User {
        id,
        username,
        password_hash,
        created_at,
    }
}

fn session((id, user_id, created_at, expires_at, ip, user_agent): SessionRow) -> Session {
    Session {
        id,
        user_id,
        created_at,
        expires_at,
        ip,
        user_agent,
    }
}

fn stream(
    (id, user_id, base_url, endpoint, created_at, updated_at, access_rules, referers): StreamRow,
) -> StreamRecord {
    StreamRecord {
        id,
        user_id,
        base_url,
        endpoint,
        created_at,
        updated_at,
        access_rules,
        referers,
    }
}

/// `users.max_screens` as stored (a BIGINT) as a limit.
fn screens_of(stored: Option<i64>) -> Option<u32> {
    stored.map(|n| n.clamp(0, u32::MAX as i64) as u32)
}

type ViewerRow = (String, String, String, String, String, i64, i64, i64);

fn viewer(
    (id, stream_id, ip, user_agent, edge, first_seen, last_seen, bytes): ViewerRow,
) -> ViewerSession {
    ViewerSession {
        id,
        stream_id,
        ip,
        user_agent,
        edge,
        first_seen,
        last_seen,
        bytes,
        account: None,
    }
}

const USER_COLS: &str = "id, username, password_hash, created_at";
const SESSION_COLS: &str = "id, user_id, created_at, expires_at, ip, user_agent";
const STREAM_COLS: &str =
    "id, user_id, base_url, endpoint, created_at, updated_at, access_rules, referers";

fn migration_error(version: i64, e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("migration {version:04}: {e}"))
}

/// In transaction `$tx`: record migration `$version` and run its `$sql`, unless another
/// process recorded it first (then nothing). Returns early with the error on failure.
macro_rules! apply_migration {
    ($tx:ident, $version:expr, $sql:expr) => {
        let version: i64 = $version;
        let fresh = sqlx::query(
            "INSERT INTO hlsgate_migrations (version, applied_at) VALUES ($1, $2) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(super::now_ms())
        .execute(&mut *$tx)
        .await
        .map_err(unavailable)?
        .rows_affected()
            > 0;
        if fresh {
            sqlx::raw_sql($sql)
                .execute(&mut *$tx)
                .await
                .map_err(|e| migration_error(version, e))?;
        }
    };
}

/// In transaction `$tx`: add what an edge saw of viewer session `$r` (a `&ViewerSession`):
/// its `bytes` are added, its account kept when the report names none.
macro_rules! upsert_viewer {
    ($tx:ident, $r:expr) => {
        let r: &ViewerSession = $r;
        sqlx::query(
            "INSERT INTO viewer_sessions (id, stream_id, ip, user_agent, edge, \
             first_seen, last_seen, bytes, account) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET ip = $3, user_agent = $4, edge = $5, \
             last_seen = $7, bytes = viewer_sessions.bytes + $8, \
             account = COALESCE($9, viewer_sessions.account)",
        )
        .bind(&r.id)
        .bind(&r.stream_id)
        .bind(&r.ip)
        .bind(&r.user_agent)
        .bind(&r.edge)
        .bind(r.first_seen)
        .bind(r.last_seen)
        .bind(r.bytes)
        .bind(r.account)
        .execute(&mut *$tx)
        .await
        .map_err(write_error)?;
    };
}

/// The `Store` methods, written once for both pools.
macro_rules! sql_store {
    ($store:ident, $backend:literal) => {
        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn create_user(&self, username: &str, hash: &str, now: i64) -> Result<User> {
                let q = format!(
                    "INSERT INTO users (username, password_hash, created_at) \
                     VALUES ($1, $2, $3) RETURNING {USER_COLS}"
                );
                sqlx::query_as::<_, UserRow>(&q)
                    .bind(username)
                    .bind(hash)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .map(user)
                    .map_err(write_error)
            }

            async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
                let q = format!("SELECT {USER_COLS} FROM users WHERE username = $1");
                sqlx::query_as::<_, UserRow>(&q)
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| r.map(user))
                    .map_err(unavailable)
            }

            async fn create_session(&self, s: &Session, max_per_user: u32) -> Result<Vec<String>> {
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                // The write comes first so SQLite takes its write lock at once.
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, created_at, expires_at, ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&s.id)
                .bind(s.user_id)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(&s.ip)
                .bind(&s.user_agent)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
                sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                    .bind(s.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let mut evicted = Vec::new();
                if max_per_user > 0 {
                    let ids: Vec<(String,)> = sqlx::query_as(
                        "SELECT id FROM sessions WHERE user_id = $1 \
                         ORDER BY created_at DESC, id DESC",
                    )
                    .bind(s.user_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    for (id,) in ids.into_iter().skip(max_per_user as usize) {
                        sqlx::query("DELETE FROM sessions WHERE id = $1")
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                        evicted.push(id);
                    }
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(evicted)
            }

            async fn session(&self, id: &str, now: i64) -> Result<Option<Session>> {
                let q = format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE id = $1 AND expires_at > $2"
                );
                sqlx::query_as::<_, SessionRow>(&q)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| r.map(session))
                    .map_err(unavailable)
            }

            async fn sessions(&self, user_id: i64, now: i64) -> Result<Vec<Session>> {
                let q = format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE user_id = $1 AND expires_at > $2 \
                     ORDER BY created_at DESC, id DESC"
                );
                sqlx::query_as::<_, SessionRow>(&q)
                    .bind(user_id)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map(|v| v.into_iter().map(session).collect())
                    .map_err(unavailable)
            }

            async fn delete_session(&self, user_id: i64, id: &str) -> Result<bool> {
                sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(unavailable)
            }

            async fn create_stream(
                &self,
                user_id: i64,
                base_url: &str,
                endpoint: &str,
                now: i64,
            ) -> Result<StreamRecord> {
                let q = format!(
                    "INSERT INTO streams (user_id, base_url, endpoint, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) RETURNING {STREAM_COLS}"
                );
                sqlx::query_as::<_, StreamRow>(&q)
                    .bind(user_id)
                    .bind(base_url)
                    .bind(endpoint)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .map(stream)
                    .map_err(write_error)
            }

            async fn update_stream(
                &self,
                user_id: i64,
                id: i64,
                base_url: &str,
                endpoint: &str,
                now: i64,
            ) -> Result<Option<StreamRecord>> {
                let q = format!(
                    "UPDATE streams SET base_url = $1, endpoint = $2, updated_at = $3 \
                     WHERE id = $4 AND user_id = $5 RETURNING {STREAM_COLS}"
                );
                sqlx::query_as::<_, StreamRow>(&q)
                    .bind(base_url)
                    .bind(endpoint)
                    .bind(now)
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| r.map(stream))
                    .map_err(write_error)
            }

            async fn stream(&self, id: i64) -> Result<Option<StreamRecord>> {
                let q = format!("SELECT {STREAM_COLS} FROM streams WHERE id = $1");
                sqlx::query_as::<_, StreamRow>(&q)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| r.map(stream))
                    .map_err(unavailable)
            }

            async fn user_stream(&self, user_id: i64, id: i64) -> Result<Option<StreamRecord>> {
                let q =
                    format!("SELECT {STREAM_COLS} FROM streams WHERE id = $1 AND user_id = $2");
                sqlx::query_as::<_, StreamRow>(&q)
                    .bind(id)
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| r.map(stream))
                    .map_err(unavailable)
            }

            async fn streams(&self, user_id: i64) -> Result<Vec<StreamRecord>> {
                let q = format!("SELECT {STREAM_COLS} FROM streams WHERE user_id = $1 ORDER BY id");
                sqlx::query_as::<_, StreamRow>(&q)
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await
                    .map(|v| v.into_iter().map(stream).collect())
                    .map_err(unavailable)
            }

            async fn delete_stream(&self, user_id: i64, id: i64) -> Result<bool> {
                sqlx::query("DELETE FROM streams WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(unavailable)
            }

            async fn create_playback_key(&self, k: &PlaybackKey) -> Result<()> {
                sqlx::query(
                    "INSERT INTO playback_keys (kid, user_id, name, pem, fingerprint, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&k.kid)
                .bind(k.user_id)
                .bind(&k.name)
                .bind(&k.pem)
                .bind(&k.fingerprint)
                .bind(k.created_at)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(write_error)
            }

            async fn playback_keys(&self, user_id: i64) -> Result<Vec<PlaybackKey>> {
                sqlx::query_as::<_, PlaybackKeyRow>(
                    "SELECT kid, user_id, name, pem, fingerprint, created_at FROM playback_keys \
                     WHERE user_id = $1 ORDER BY created_at, kid",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map(|rows| rows.into_iter().map(playback_key).collect())
                .map_err(unavailable)
            }

            async fn playback_key(&self, kid: &str) -> Result<Option<PlaybackKey>> {
                sqlx::query_as::<_, PlaybackKeyRow>(
                    "SELECT kid, user_id, name, pem, fingerprint, created_at FROM playback_keys \
                     WHERE kid = $1",
                )
                .bind(kid)
                .fetch_optional(&self.pool)
                .await
                .map(|r| r.map(playback_key))
                .map_err(unavailable)
            }

            async fn playback_kids(&self) -> Result<Vec<String>> {
                sqlx::query_scalar::<_, String>("SELECT kid FROM playback_keys")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn delete_playback_key(&self, user_id: i64, kid: &str) -> Result<bool> {
                sqlx::query("DELETE FROM playback_keys WHERE kid = $1 AND user_id = $2")
                    .bind(kid)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(unavailable)
            }

            async fn revoke_viewer(&self, stream: &str, viewer_id: &str, now: i64) -> Result<()> {
                sqlx::query(
                    "INSERT INTO revoked_viewers (stream_id, viewer_id, revoked_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (stream_id, viewer_id) DO NOTHING",
                )
                .bind(stream)
                .bind(viewer_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(write_error)
            }

            async fn set_stream_key(&self, stream_id: i64, key_hash: &str, now: i64) -> Result<()> {
                sqlx::query(
                    "INSERT INTO stream_keys (stream_id, key_hash, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (stream_id) DO UPDATE SET key_hash = $2, created_at = $3",
                )
                .bind(stream_id)
                .bind(key_hash)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(write_error)
            }

            async fn stream_by_key(&self, key_hash: &str) -> Result<Option<i64>> {
                sqlx::query_scalar::<_, i64>("SELECT stream_id FROM stream_keys WHERE key_hash = $1")
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn set_live(&self, stream_id: i64, ip: &str, client_id: &str, now: i64) -> Result<()> {
                sqlx::query(
                    "INSERT INTO stream_live (stream_id, publisher_ip, client_id, live_since) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (stream_id) DO UPDATE \
                     SET publisher_ip = $2, client_id = $3, live_since = $4",
                )
                .bind(stream_id)
                .bind(ip)
                .bind(client_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(write_error)
            }

            async fn clear_live(&self, stream_id: i64) -> Result<bool> {
                sqlx::query("DELETE FROM stream_live WHERE stream_id = $1")
                    .bind(stream_id)
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected() > 0)
                    .map_err(unavailable)
            }

            async fn live(&self, stream_id: i64) -> Result<Option<Live>> {
                sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT publisher_ip, client_id, live_since FROM stream_live WHERE stream_id = $1",
                )
                .bind(stream_id)
                .fetch_optional(&self.pool)
                .await
                .map(|r| {
                    r.map(|(publisher_ip, client_id, since)| Live {
                        publisher_ip,
                        client_id,
                        since,
                    })
                })
                .map_err(unavailable)
            }

            async fn record_viewers(&self, rows: &[ViewerSession]) -> Result<()> {
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                for r in rows {
                    upsert_viewer!(tx, r);
                }
                tx.commit().await.map_err(unavailable)
            }

            async fn viewers(&self, stream_id: &str, since: i64) -> Result<Vec<ViewerSession>> {
                sqlx::query_as::<_, ViewerRow>(
                    "SELECT id, stream_id, ip, user_agent, edge, first_seen, last_seen, bytes \
                     FROM viewer_sessions WHERE stream_id = $1 AND last_seen >= $2 \
                     AND revoked_at IS NULL ORDER BY first_seen, id",
                )
                .bind(stream_id)
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map(|rows| rows.into_iter().map(viewer).collect())
                .map_err(unavailable)
            }

            async fn count_viewers(&self, stream_id: &str, since: i64) -> Result<i64> {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM viewer_sessions WHERE stream_id = $1 AND last_seen >= $2 \
                     AND revoked_at IS NULL",
                )
                .bind(stream_id)
                .bind(since)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)
            }

            async fn viewer_stream(&self, id: &str) -> Result<Option<String>> {
                sqlx::query_scalar::<_, String>("SELECT stream_id FROM viewer_sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn revoke_viewer_session(&self, id: &str, now: i64) -> Result<bool> {
                sqlx::query(
                    "UPDATE viewer_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(unavailable)
            }

            async fn revoked_viewer_sessions(
                &self,
                since: i64,
            ) -> Result<Vec<(String, i64, Option<String>)>> {
                sqlx::query_as::<_, (String, i64, Option<String>)>(
                    "SELECT id, revoked_at, ended_reason FROM viewer_sessions WHERE revoked_at >= $1",
                )
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)
            }

            async fn set_stream_rules(
                &self,
                user_id: i64,
                id: i64,
                access_rules: &str,
                referers: &str,
                now: i64,
            ) -> Result<bool> {
                sqlx::query(
                    "UPDATE streams SET access_rules = $1, referers = $2, updated_at = $3 \
                     WHERE id = $4 AND user_id = $5",
                )
                .bind(access_rules)
                .bind(referers)
                .bind(now)
                .bind(id)
                .bind(user_id)
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(unavailable)
            }

            async fn user_max_screens(&self, user_id: i64) -> Result<Option<u32>> {
                sqlx::query_scalar::<_, Option<i64>>("SELECT max_screens FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| screens_of(r.flatten()))
                    .map_err(unavailable)
            }

            async fn set_user_max_screens(&self, user_id: i64, max: Option<u32>) -> Result<()> {
                sqlx::query("UPDATE users SET max_screens = $1 WHERE id = $2")
                    .bind(max.map(i64::from))
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(unavailable)
            }

            async fn claim_screen(&self, row: &ViewerSession, claim: &ScreenClaim) -> Result<Screens> {
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                // A write first: it locks the account's row (PostgreSQL) or the database
                // (SQLite), so two edges claiming screens of one account take turns.
                let own: Option<Option<i64>> = sqlx::query_scalar(
                    "UPDATE users SET max_screens = max_screens WHERE id = $1 RETURNING max_screens",
                )
                .bind(claim.account)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
                let Some(own) = own else {
                    return Ok(Screens::Taken { ended: Vec::new() });
                };
                let max = effective_screens(claim.default_max, screens_of(own));
                let mut ended = Vec::new();
                if max > 0 {
                    let others: Vec<(String,)> = sqlx::query_as(
                        "SELECT id FROM viewer_sessions WHERE account = $1 AND id <> $2 \
                         AND last_seen >= $3 AND revoked_at IS NULL ORDER BY first_seen, id",
                    )
                    .bind(claim.account)
                    .bind(&row.id)
                    .bind(claim.since)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    if others.len() >= max as usize {
                        if !claim.end_oldest {
                            let holders = others.into_iter().map(|(id,)| id).collect();
                            return Ok(Screens::Full { holders });
                        }
                        let excess = others.len() + 1 - max as usize;
                        for (id,) in others.into_iter().take(excess) {
                            sqlx::query(
                                "UPDATE viewer_sessions SET revoked_at = $2, \
                                 ended_reason = 'screens' WHERE id = $1 AND revoked_at IS NULL",
                            )
                            .bind(&id)
                            .bind(claim.now)
                            .execute(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                            ended.push(id);
                        }
                    }
                }
                let row = ViewerSession {
                    account: Some(claim.account),
                    ..row.clone()
                };
                upsert_viewer!(tx, &row);
                tx.commit().await.map_err(unavailable)?;
                Ok(Screens::Taken { ended })
            }

            async fn account_sessions(&self, account: i64, since: i64) -> Result<Vec<AccountSession>> {
                sqlx::query_as::<_, (String, String, String, String, String, i64, i64, i64, Option<i64>, Option<String>)>(
                    "SELECT id, stream_id, ip, user_agent, edge, first_seen, last_seen, bytes, \
                     revoked_at, ended_reason FROM viewer_sessions WHERE account = $1 \
                     AND (last_seen >= $2 OR revoked_at >= $2) ORDER BY first_seen, id",
                )
                .bind(account)
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map(|rows| {
                    rows.into_iter()
                        .map(|(a, b, c, d, e, f, g, h, ended_at, ended_reason)| AccountSession {
                            session: ViewerSession {
                                account: Some(account),
                                ..viewer((a, b, c, d, e, f, g, h))
                            },
                            ended_at,
                            ended_reason,
                        })
                        .collect()
                })
                .map_err(unavailable)
            }

            async fn viewer_revoked(&self, stream: &str, viewer_id: &str) -> Result<bool> {
                sqlx::query_scalar::<_, i64>(
                    "SELECT revoked_at FROM revoked_viewers WHERE stream_id = $1 AND viewer_id = $2",
                )
                .bind(stream)
                .bind(viewer_id)
                .fetch_optional(&self.pool)
                .await
                .map(|r| r.is_some())
                .map_err(unavailable)
            }
        }
    };
}

type PlaybackKeyRow = (String, i64, String, String, String, i64);

fn playback_key(r: PlaybackKeyRow) -> PlaybackKey {
    PlaybackKey {
        kid: r.0,
        user_id: r.1,
        name: r.2,
        pem: r.3,
        fingerprint: r.4,
        created_at: r.5,
    }
}

/// Embedded SQLite: one file, WAL journal (readers never wait for the writer), every
/// commit on disk before it returns to the caller's process (synchronous=NORMAL in WAL
/// mode survives a killed process; FULL would add power-loss safety at a cost per write).
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &str) -> Result<SqliteStore> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("sqlite://{path}: {what}: {e}"))
        };
        if path.is_empty() {
            return Err(StoreError::Unavailable(
                "sqlite://: no file path (sqlite://data/hlsgate.db)".into(),
            ));
        }
        let file = std::path::Path::new(path);
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::create_dir(dir).map_err(|e| fail("cannot create its folder", &e))?;
        }
        create_private(file).map_err(|e| fail("cannot create the file", &e))?;
        let opts = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| fail("cannot open", &e))?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query(CREATE_MIGRATIONS_TABLE)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        for (version, sql) in SQLITE_MIGRATIONS {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            // The insert takes the write lock first: a second process waits, then skips.
            apply_migration!(tx, *version, sql);
            tx.commit().await.map_err(unavailable)?;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

sql_store!(SqliteStore, "sqlite");

/// PostgreSQL, shared by several edge nodes.
pub struct PgStore {
    pool: sqlx::PgPool,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore> {
        let shown = super::redact_url(url);
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("{shown}: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{shown}: cannot connect: {e}")))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // One migrating process at a time, across every node sharing the database.
        sqlx::query("SELECT pg_advisory_xact_lock(7386274101)")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(CREATE_MIGRATIONS_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        for (version, sql) in POSTGRES_MIGRATIONS {
            apply_migration!(tx, *version, sql);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }
}

sql_store!(PgStore, "postgres");
