//! Publishers: per-stream keys (shown once, stored as a keyed hash, rotated by asking for a
//! new one) and the media servers' callbacks on the admin listener.
//!
//! nginx-rtmp (`notify_method post`, form-encoded): `on_publish` with a good key answers
//! 302 `Location: <hooks.rtmp_relay><stream id>`, so nginx-rtmp relays the stream into its
//! packaging application under the public id (the key never names an HLS file); a bad or
//! rotated key 403. `on_update` refuses a rotated key (nginx-rtmp then drops the publisher);
//! the local relay's callbacks pass. The relay is recognised by what a publisher cannot
//! choose: nginx-rtmp reports a relay session's `addr` as its target (`hooks.rtmp_relay`
//! followed by the stream id), a client's as its network address; the `flashver` the relay sends
//! (`ngx-local-relay`) is no proof, since any RTMP client can send it
//! (`ffmpeg -rtmp_flashver`).
//! `on_publish_done` ends the live state; `on_play` admits only the local relay (viewers
//! watch through the edge); `on_done` is acknowledged.
//!
//! Callbacks are believed only from `hooks.allow_from` (default loopback), judged by the
//! real client: one a proxy forwarded counts only through `admin.trusted_proxies`.

use super::api::{bad, caller, path_id, user_stream, ApiResult, St};
use super::{AdminState, ApiError};
use crate::metrics::METRICS;
use crate::net::in_nets;
use crate::store::{hex, now_ms};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The label stream-key hashes are keyed under (`Keyring::derive`).
const KEY_LABEL: &str = "stream-key";

/// The keyed hash a key is stored as: HMAC-SHA256 with a key derived from the token key
/// file (`kid`'s), hex.
fn key_hash(secret: &[u8; 32], key: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    hex(ring::hmac::sign(&k, key.as_bytes()).as_ref())
}

/// `POST /api/streams/{id}/key`: a new stream key for one of the caller's streams (the
/// previous one stops working: its publisher is dropped at its next `on_update`). Shown
/// once: `{"key", "publishUrl", "streamID"}`.
pub async fn new_key(State(st): St, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let s = user_stream(&st, c.user_id, path_id(&id)?).await?;
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|_| bad("no randomness"))?;
    let key = format!("sk_{}", hex(&raw));
    let derived = st.keyring().derive(KEY_LABEL);
    st.store
        .set_stream_key(s.id, &key_hash(&derived[0].1, &key), now_ms())
        .await?;
    let mut resp = Json(json!({
        "streamID": s.id,
        "key": key,
        "publishUrl": format!("{}/{key}", st.cfg().hooks.rtmp_publish_url),
    }))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    Ok(resp)
}

/// The stream a key opens, trying the hash under every key of the key file (a rotated key
/// file keeps old stream keys working).
async fn stream_of(st: &AdminState, key: &str) -> Result<Option<i64>, ApiError> {
    if key.is_empty() || key.len() > 128 {
        return Ok(None);
    }
    for (_, secret) in st.keyring().derive(KEY_LABEL) {
        if let Some(id) = st.store.stream_by_key(&key_hash(&secret, key)).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

pub fn hooks() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/hooks/rtmp/{event}", post(rtmp))
        .route("/hooks/srs/on_publish", post(srs))
        .route("/hooks/srs/on_unpublish", post(srs))
        .route("/hooks/srs/on_play", post(srs))
        .route("/hooks/srs/on_stop", post(srs))
}

/// A form-encoded body (`application/x-www-form-urlencoded`), as nginx-rtmp sends it.
fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn status(code: StatusCode) -> Response {
    (code, "").into_response()
}

/// Whether a callback comes from a media server (`hooks.allow_from`), judged by the real
/// client: a callback a proxy forwarded (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`) is
/// judged by the address the proxy names when the proxy is one of `admin.trusted_proxies`,
/// and refused otherwise (behind a reverse proxy on the same host every caller would look
/// like loopback; media servers call directly and send none of these).
fn trusted(st: &AdminState, peer: SocketAddr, headers: &HeaderMap, server: &str) -> bool {
    let cfg = st.cfg();
    let proxies = &cfg.admin.trusted_proxies;
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    let peer = peer.ip().to_canonical();
    let client = match forwarded {
        false => Some(peer),
        true if in_nets(peer, proxies) && !headers.contains_key("forwarded") => {
            let xff = headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes());
            Some(crate::net::client_ip(peer, xff, proxies))
        }
        true => None,
    };
    let ok = client.is_some_and(|ip| in_nets(ip.to_canonical(), &cfg.hooks.allow_from));
    if !ok {
        tracing::warn!(%peer, ?client, server, "publishing callback from outside hooks.allow_from");
    }
    ok
}

fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map_or("", String::as_str)
}

/// Whether a callback is nginx-rtmp's own relay of an accepted publisher into the
/// packaging application. nginx-rtmp fills a relay session's `addr` with the relay's target
/// (`127.0.0.1:1935/hls/<id>`: `hooks.rtmp_relay` without its scheme, and a stream id), where
/// any client's `addr` is its network address: that is what a publisher cannot choose. The
/// `flashver` the relay sends (`ngx-local-relay`) is no proof (`ffmpeg -rtmp_flashver`).
fn is_local_relay(st: &AdminState, f: &HashMap<String, String>) -> bool {
    let cfg = st.cfg();
    let target = cfg.hooks.rtmp_relay.as_str();
    let target = target.split_once("://").map_or(target, |(_, t)| t);
    field(f, "addr")
        .strip_prefix(target)
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// A publisher with `key`: its stream, now live; `None` for a bad or rotated key.
async fn admit(
    st: &AdminState,
    key: &str,
    addr: &str,
    client: &str,
) -> Result<Option<i64>, ApiError> {
    let Some(id) = stream_of(st, key).await? else {
        METRICS
            .publish_events
            .with_label_values(&["publish_denied"])
            .inc();
        tracing::info!(addr, "publish refused: unknown stream key");
        return Ok(None);
    };
    st.store.set_live(id, addr, client, now_ms()).await?;
    st.publishers.insert(client.to_owned(), id);
    METRICS.publish_events.with_label_values(&["publish"]).inc();
    METRICS.streams_live.set(st.publishers.entry_count() as i64);
    tracing::info!(stream = id, addr, "publishing");
    Ok(Some(id))
}

/// A publisher left (or was dropped): its stream is no longer live.
async fn ended(st: &AdminState, id: i64, client: &str) -> Result<(), ApiError> {
    st.store.clear_live(id).await?;
    st.publishers.invalidate(client);
    st.publishers.run_pending_tasks();
    METRICS
        .publish_events
        .with_label_values(&["publish_done"])
        .inc();
    METRICS.streams_live.set(st.publishers.entry_count() as i64);
    Ok(())
}

/// nginx-rtmp's callbacks (`/hooks/rtmp/on_publish`, `on_publish_done`, `on_update`,
/// `on_play`, `on_done`), form-encoded.
async fn rtmp(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(event): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !trusted(&st, peer, &headers, "nginx-rtmp") {
        return status(StatusCode::FORBIDDEN);
    }
    let f = form(&body);
    let relay = is_local_relay(&st, &f);
    let (key, client) = (field(&f, "name"), field(&f, "clientid"));
    let answer = match event.as_str() {
        "on_publish" => match admit(&st, key, field(&f, "addr"), client).await {
            Ok(Some(id)) => Ok((
                StatusCode::FOUND,
                [(
                    header::LOCATION,
                    format!("{}{id}", st.cfg().hooks.rtmp_relay),
                )],
                "",
            )
                .into_response()),
            Ok(None) => Ok(status(StatusCode::FORBIDDEN)),
            Err(e) => Err(e),
        },
        "on_publish_done" if relay => Ok(status(StatusCode::OK)),
        "on_publish_done" => publish_done(&st, client, key)
            .await
            .map(|()| status(StatusCode::OK)),
        "on_update" if relay || field(&f, "call") == "update_play" => Ok(status(StatusCode::OK)),
        "on_update" => on_update(&st, key, client, field(&f, "addr")).await,
        // Viewers watch through the edge (tokens, CORS, the cache); RTMP playback is the
        // relay's only.
        "on_play" if relay => Ok(status(StatusCode::OK)),
        "on_play" => Ok(status(StatusCode::FORBIDDEN)),
        "on_done" => Ok(status(StatusCode::OK)),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such route")),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// A publisher left: its stream (found by the publisher's client id, set at publish, so a
/// rotated key's publisher is still known; else by its key) is no longer live.
async fn publish_done(st: &AdminState, client: &str, key: &str) -> Result<(), ApiError> {
    let id = match st.publishers.get(client) {
        Some(id) => Some(id),
        None => stream_of(st, key).await?,
    };
    match id {
        Some(id) => ended(st, id, client).await,
        None => Ok(()),
    }
}

/// `on_update` of a publisher: 403 once its key was rotated (nginx-rtmp then drops it).
async fn on_update(
    st: &AdminState,
    key: &str,
    client: &str,
    addr: &str,
) -> Result<Response, ApiError> {
    if stream_of(st, key).await?.is_some() {
        return Ok(status(StatusCode::OK));
    }
    if let Some(id) = st.publishers.get(client) {
        ended(st, id, client).await?;
    }
    METRICS
        .publish_events
        .with_label_values(&["update_denied"])
        .inc();
    tracing::info!(addr, "publisher dropped: stream key rotated");
    Ok(status(StatusCode::FORBIDDEN))
}

/// SRS `http_hooks` (JSON: `action`, `client_id`, `ip`, `app`, `stream`, ...): `on_publish`
/// with a good key (`stream`) answers `{"code":0}`, anything else refuses (HTTP 403,
/// `{"code":403}`); `on_unpublish` ends the live state; `on_play` is refused (viewers watch
/// through the edge); `on_stop` is acknowledged. SRS cannot rename a stream from its
/// callback: point its HLS output (`hls_path`, `hls_m3u8_file`) at a name it does not
/// publish, or use nginx-rtmp's relay.
async fn srs(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ok = || Json(json!({"code": 0})).into_response();
    let no = || (StatusCode::FORBIDDEN, Json(json!({"code": 403}))).into_response();
    if !trusted(&st, peer, &headers, "SRS") {
        return no();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": 400}))).into_response();
    };
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let client = text("client_id");
    match text("action") {
        "on_publish" => match admit(&st, text("stream"), text("ip"), client).await {
            Ok(Some(_)) => ok(),
            Ok(None) => no(),
            Err(e) => e.into_response(),
        },
        "on_unpublish" => match publish_done(&st, client, text("stream")).await {
            Ok(()) => ok(),
            Err(e) => e.into_response(),
        },
        "on_stop" => ok(),
        _ => no(),
    }
}
