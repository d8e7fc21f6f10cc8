//! Viewer sessions seen by this edge, reported to the store in batches (one transaction a
//! second, not a write per request) so the admin can list every edge's viewers
//! (`GET /api/viewers?streamID=N`), and the sessions the admin deleted
//! (`DELETE /api/viewers/{id}`), read back from the store every second, refused here.

use crate::recent::{Mark, Recent};
use crate::store::{session_bytes, session_hex, Store, ViewerSession};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long after its last request a viewer session still counts as watching (the viewer
/// list, stream caps, screens).
pub const LIVE_FOR: Duration = Duration::from_secs(30);

/// How often reports are written and revocations read.
const PERIOD: Duration = Duration::from_secs(1);

/// Why a viewer session was ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `DELETE /api/viewers/{id}`.
    Deleted,
    /// A newer screen of its account took its place (`admin.screens_full: end_oldest`).
    Screens,
}

struct Seen {
    stream: String,
    ip: IpAddr,
    ua: String,
    first: i64,
    last: i64,
    bytes: u64,
}

pub struct Viewers {
    /// This edge's name in the reports (`edge.listen`).
    edge: String,
    pending: Mutex<HashMap<[u8; 16], Seen>>,
    /// Ended sessions, and whether for a newer screen of their account.
    revoked: moka::sync::Cache<[u8; 16], Ended>,
    /// Sessions this edge served in the last 30 s (a viewer cap admits them again).
    known: Recent<Mark>,
}

impl Viewers {
    pub fn new(edge: String) -> Viewers {
        Viewers {
            edge,
            pending: Mutex::new(HashMap::new()),
            known: Recent::new(LIVE_FOR, 1_000_000),
            revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(366 * 86400))
                .build(),
        }
    }

    /// One request of a viewer session: `bytes` of body sent.
    pub fn saw(&self, session: [u8; 16], stream: &str, ip: IpAddr, ua: &str, bytes: u64) {
        let now = crate::store::now_ms();
        self.known.touch(session, &Mark, now);
        let mut p = self.pending.lock();
        match p.get_mut(&session) {
            Some(s) => {
                s.last = now;
                s.bytes += bytes;
                s.ip = ip;
            }
            None => {
                if p.len() >= 1_000_000 {
                    return; // bounded: a flood of sessions is not held in memory
                }
                p.insert(
                    session,
                    Seen {
                        stream: stream.to_owned(),
                        ip,
                        ua: ua.chars().take(512).collect(),
                        first: now,
                        last: now,
                        bytes,
                    },
                );
            }
        }
    }

    /// This edge's name in the reports.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    /// Whether this edge served the session in the last 30 s.
    pub fn is_known(&self, session: &[u8; 16]) -> bool {
        self.known.contains(session, crate::store::now_ms())
    }

    /// Whether (and why) the viewer session was ended.
    pub fn ended(&self, session: &[u8; 16]) -> Option<Ended> {
        self.revoked.get(session)
    }

    /// Sessions this edge ended itself (a claimed screen's oldest ones): refused here at
    /// once, on other edges once they read the store.
    pub fn end(&self, sessions: &[String], why: Ended) {
        for id in sessions {
            if let Some(b) = session_bytes(id) {
                self.revoked.insert(b, why);
            }
        }
    }

    /// Report and poll every [`PERIOD`] on `rt` (the store's runtime), for good.
    pub fn spawn(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        rt: &tokio::runtime::Handle,
        lookback: Duration,
    ) {
        rt.spawn(async move {
            let mut since = crate::store::now_ms() - lookback.as_millis() as i64;
            let mut tick = tokio::time::interval(PERIOD);
            loop {
                tick.tick().await;
                self.known.sweep(crate::store::now_ms(), |_| ());
                let batch: Vec<ViewerSession> = std::mem::take(&mut *self.pending.lock())
                    .into_iter()
                    .map(|(id, s)| ViewerSession {
                        id: session_hex(&id),
                        stream_id: s.stream,
                        ip: s.ip.to_string(),
                        user_agent: s.ua,
                        edge: self.edge.clone(),
                        first_seen: s.first,
                        last_seen: s.last,
                        bytes: s.bytes.min(i64::MAX as u64) as i64,
                        account: None,
                    })
                    .collect();
                if !batch.is_empty() {
                    if let Err(e) = store.record_viewers(&batch).await {
                        tracing::warn!(error = %e, sessions = batch.len(), "viewer report failed");
                    }
                }
                // Read a little back in time: a revocation committed just before the last
                // poll's snapshot must not be missed.
                let poll_from = since - 5_000;
                match store.revoked_viewer_sessions(poll_from).await {
                    Ok(rows) => {
                        for (id, at, why) in rows {
                            if let Some(b) = session_bytes(&id) {
                                let why = match why.as_deref() {
                                    Some("screens") => Ended::Screens,
                                    _ => Ended::Deleted,
                                };
                                self.revoked.insert(b, why);
                            }
                            since = since.max(at);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revoked viewer sessions: store query failed")
                    }
                }
            }
        });
    }
}
