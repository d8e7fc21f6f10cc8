//! External playback authorisation, as Nimble Streamer does it: for a viewer session that
//! brings no credentials, the edge POSTs the platform's handler (`auth.external.url`)
//!
//! ```json
//! {"host":"edge.example","url":"/hls/demo/index.m3u8","ip":"203.0.113.9",
//!  "user-agent":"...","referer":"...","session_id":"<32 hex>","session_type":"HLS"}
//! ```
//!
//! and obeys `{"return_code":200}` (play: the viewer gets a native token, so segments ask
//! nobody), `{"return_code":302,"redirect_location":URL}` (a 302 to the viewer) or
//! `{"return_code":403}`. Decisions are remembered per viewer session for `cache_ttl`: a
//! session is what the handler judged (stream, address, User-Agent, `Host`, the URL with
//! its query, `Referer`), never stream + address + User-Agent alone, so viewers behind one
//! NAT with one browser do not share a purchase; concurrent requests of one session share
//! one call. The native token an allow is exchanged for carries the decision's time, and
//! once `cache_ttl` has passed every edge asks the handler again for that session (see
//! `admission`). At most `concurrency` calls are in flight; a bounded number wait for a
//! slot; the rest, and every call the handler fails, times out or answers nonsense, get
//! `allow_by_default` (not remembered: the next request asks again; a fail-open allow
//! is a short grant that is never renewed).

use crate::config::External as Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The handler's answer for a viewer session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Redirect(String),
    Deny,
}

/// What the handler is told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message<'a> {
    pub host: &'a str,
    pub url: String,
    pub ip: String,
    #[serde(rename = "user-agent")]
    pub user_agent: &'a str,
    pub referer: &'a str,
    pub session_id: String,
    pub session_type: &'static str,
}

pub struct External {
    cfg: Config,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    decisions: moka::future::Cache<[u8; 16], Decision>,
}

/// Longest a call may keep its slot after its viewer stopped waiting (at least; 5 timeouts
/// when that is longer).
const HARD_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest handler answer read.
const MAX_ANSWER: usize = 16 * 1024;

impl External {
    /// The `auth.external` this handler was made for.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn new(cfg: Config) -> External {
        External {
            slots: Arc::new(Semaphore::new(cfg.concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
            decisions: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(cfg.cache_ttl)
                .build(),
            cfg,
        }
    }

    fn default(&self) -> Decision {
        if self.cfg.allow_by_default {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    /// The decision for `session`: remembered, or asked (once for concurrent requests) with
    /// the message `msg` makes (built only then). The flag: the handler did not answer and
    /// this is `allow_by_default`'s decision (fail-open or fail-closed).
    pub async fn decide<'m>(
        &self,
        session: [u8; 16],
        msg: impl FnOnce() -> Message<'m>,
    ) -> (Decision, bool) {
        if let Some(d) = self.decisions.get(&session).await {
            return (d, false);
        }
        let body = serde_json::to_vec(&msg()).unwrap_or_default();
        match self
            .decisions
            .try_get_with(session, async { self.ask(body).await })
            .await
        {
            Ok(d) => (d, false),
            Err(default) => ((*default).clone(), true),
        }
    }

    /// One call, within the concurrency bound and the timeout. `Err`: the default answer,
    /// not to be remembered.
    async fn ask(&self, body: Vec<u8>) -> Result<Decision, Decision> {
        // A bounded queue: past it, no waiting at all.
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.cfg.concurrency * 4 {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            crate::metrics::METRICS
                .external_calls
                .with_label_values(&["busy"])
                .inc();
            return Err(self.default());
        }
        // The call runs on a task of its own that waits for a slot only as long as the
        // viewer waits, then holds it until the handler has answered (or `hard` has
        // passed): a viewer who gives up at the timeout does not free the slot of a call
        // the handler is still working on, so the handler never has more than
        // `concurrency` of this edge's calls at once.
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let hard = self.cfg.timeout.saturating_mul(5).max(HARD_LIMIT);
        let (slots, waiting, url) = (
            self.slots.clone(),
            self.waiting.clone(),
            self.cfg.url.clone(),
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let permit = tokio::time::timeout_at(deadline, slots.acquire_owned()).await;
            waiting.fetch_sub(1, Ordering::SeqCst);
            let Ok(Ok(_permit)) = permit else { return };
            let _ = tx.send(tokio::time::timeout(hard, post(&url, body)).await);
        });
        let (result, decision) = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(Ok((200, answer))))) => match parse(&answer) {
                Some(d) => ("ok", Ok(d)),
                None => ("bad_answer", Err(self.default())),
            },
            Ok(Ok(Ok(Ok(_)))) => ("bad_status", Err(self.default())),
            Ok(Ok(Ok(Err(_)))) => ("error", Err(self.default())),
            // Timed out: waiting for a slot, or for the answer.
            _ => ("timeout", Err(self.default())),
        };
        crate::metrics::METRICS
            .external_calls
            .with_label_values(&[result])
            .inc();
        decision
    }
}

/// `{"return_code": 200 | 302 | 403, "redirect_location": URL}`.
fn parse(answer: &[u8]) -> Option<Decision> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    match v.get("return_code")?.as_u64()? {
        200 => Some(Decision::Allow),
        403 => Some(Decision::Deny),
        302 => {
            let to = v.get("redirect_location")?.as_str()?;
            let ok = (to.starts_with("http://") || to.starts_with("https://"))
                && to.len() <= 2048
                && !to.contains(char::is_control);
            ok.then(|| Decision::Redirect(to.to_owned()))
        }
        _ => None,
    }
}

/// POST `body` as JSON to `url` on a new connection: `(status, body)`.
async fn post(url: &http::Uri, body: Vec<u8>) -> Result<(u16, Bytes), &'static str> {
    let host = url.host().ok_or("no host")?;
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|_| "connect")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|_| "handshake")?;
    tokio::spawn(conn);
    let authority = url.authority().map_or(host, |a| a.as_str()).to_owned();
    let req = http::Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("hlsgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "request")?;
    let resp = sender.send_request(req).await.map_err(|_| "send")?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| "body")?
        .to_bytes();
    Ok((status, body))
}

/// The viewer session an external decision belongs to: everything the handler is told and
/// judges (stream, address, User-Agent, `Host`, the URL with its query, `Referer`).
pub fn session_of(stream: &str, m: &Message<'_>) -> [u8; 16] {
    crate::token::session_of(&[
        b"external",
        stream.as_bytes(),
        m.ip.as_bytes(),
        m.user_agent.as_bytes(),
        m.host.as_bytes(),
        m.url.as_bytes(),
        m.referer.as_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse(br#"{"return_code":200}"#), Some(Decision::Allow));
        assert_eq!(parse(br#"{"return_code":403}"#), Some(Decision::Deny));
        assert_eq!(
            parse(br#"{"return_code":302,"redirect_location":"http://x/y.m3u8"}"#),
            Some(Decision::Redirect("http://x/y.m3u8".into()))
        );
        assert_eq!(parse(br#"{"return_code":302}"#), None);
        assert_eq!(
            parse(br#"{"return_code":302,"redirect_location":"javascript:x"}"#),
            None
        );
        assert_eq!(parse(br#"{"return_code":500}"#), None);
        assert_eq!(parse(b"nonsense"), None);
    }
}
