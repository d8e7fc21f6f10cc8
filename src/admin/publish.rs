//! Publishers: per-stream keys (shown once, stored as a keyed hash, rotated by asking for a
//! new one) and the media servers' callbacks on the admin listener.
//!
//! nginx-rtmp (`notify_method post`, form-encoded): `on_publish` with a good key answers
//! 302 `Location: <hooks.rtmp_relay><stream id>`, so nginx-rtmp relays the stream into its
//! packaging application under the public id (the key never names an HLS file); a bad or
//! rotated key 403. `on_update` refuses a rotated key (nginx-rtmp then drops the publisher);
//! updates of the local relay (`flashver=ngx-local-relay`) pass while the stream is live.
//! `on_publish_done` ends the live state; `on_play` admits only the local relay (viewers
//! watch through the edge); `on_done` is acknowledged.
//!
//! Callbacks are believed only from `hooks.allow_from` (default loopback).

use super::api::{bad, caller, path_id, stream_not_found, ApiResult, St};
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
    let s = st
        .store
        .user_stream(c.user_id, path_id(&id)?)
        .await?
        .ok_or_else(stream_not_found)?;
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|_| bad("no randomness"))?;
    let key = format!("sk_{}", hex(&raw));
    let derived = st.keyring.derive(KEY_LABEL);
    st.store
        .set_stream_key(s.id, &key_hash(&derived[0].1, &key), now_ms())
        .await?;
    let mut resp = Json(json!({
        "streamID": s.id,
        "key": key,
        "publishUrl": format!("{}/{key}", st.cfg.hooks.rtmp_publish_url),
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
    for (_, secret) in st.keyring.derive(KEY_LABEL) {
        if let Some(id) = st.store.stream_by_key(&key_hash(&secret, key)).await? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

pub fn hooks() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/hooks/rtmp/on_publish", post(on_publish))
        .route("/hooks/rtmp/on_publish_done", post(on_publish_done))
        .route("/hooks/rtmp/on_update", post(on_update))
        .route("/hooks/rtmp/on_play", post(on_play))
        .route("/hooks/rtmp/on_done", post(on_done))
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

/// The callback's fields; `None` (answer 403) when it does not come from a media server.
fn hook(st: &AdminState, peer: SocketAddr, body: &[u8]) -> Option<HashMap<String, String>> {
    if !in_nets(peer.ip().to_canonical(), &st.cfg.hooks.allow_from) {
        tracing::warn!(peer = %peer.ip(), "publishing callback from outside hooks.allow_from");
        return None;
    }
    Some(form(body))
}

fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map_or("", String::as_str)
}

fn is_local_relay(f: &HashMap<String, String>) -> bool {
    field(f, "flashver") == "ngx-local-relay" || field(f, "flashVer") == "ngx-local-relay"
}

async fn on_publish(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Some(f) = hook(&st, peer, &body) else {
        return status(StatusCode::FORBIDDEN);
    };
    let id = match admit(
        &st,
        field(&f, "name"),
        field(&f, "addr"),
        field(&f, "clientid"),
    )
    .await
    {
        Ok(Some(id)) => id,
        Ok(None) => return status(StatusCode::FORBIDDEN),
        Err(e) => return e.into_response(),
    };
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{}{id}", st.cfg.hooks.rtmp_relay))],
        "",
    )
        .into_response()
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

/// The stream a callback is about: by the publisher's client id (set at `on_publish`, so a
/// rotated key's publisher is still known), else by its key.
async fn stream_of_hook(
    st: &AdminState,
    f: &HashMap<String, String>,
) -> Result<Option<i64>, ApiError> {
    if let Some(id) = st.publishers.get(field(f, "clientid")) {
        return Ok(Some(id));
    }
    stream_of(st, field(f, "name")).await
}

async fn on_publish_done(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Some(f) = hook(&st, peer, &body) else {
        return status(StatusCode::FORBIDDEN);
    };
    if is_local_relay(&f) {
        return status(StatusCode::OK);
    }
    match stream_of_hook(&st, &f).await {
        Ok(Some(id)) => match ended(&st, id, field(&f, "clientid")).await {
            Ok(()) => status(StatusCode::OK),
            Err(e) => e.into_response(),
        },
        Ok(None) => status(StatusCode::OK),
        Err(e) => e.into_response(),
    }
}

async fn on_update(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Some(f) = hook(&st, peer, &body) else {
        return status(StatusCode::FORBIDDEN);
    };
    if is_local_relay(&f) || field(&f, "call") == "update_play" {
        return status(StatusCode::OK);
    }
    match stream_of(&st, field(&f, "name")).await {
        Ok(Some(_)) => status(StatusCode::OK),
        Ok(None) => {
            // The key was rotated (or never valid): nginx-rtmp drops this publisher.
            if let Some(id) = st.publishers.get(field(&f, "clientid")) {
                if let Err(e) = ended(&st, id, field(&f, "clientid")).await {
                    return e.into_response();
                }
            }
            METRICS
                .publish_events
                .with_label_values(&["update_denied"])
                .inc();
            tracing::info!(
                addr = field(&f, "addr"),
                "publisher dropped: stream key rotated"
            );
            status(StatusCode::FORBIDDEN)
        }
        Err(e) => e.into_response(),
    }
}

async fn on_play(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Some(f) = hook(&st, peer, &body) else {
        return status(StatusCode::FORBIDDEN);
    };
    // Viewers watch through the edge (tokens, CORS, the cache); RTMP playback is the
    // relay's only.
    if is_local_relay(&f) {
        status(StatusCode::OK)
    } else {
        status(StatusCode::FORBIDDEN)
    }
}

async fn on_done(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    match hook(&st, peer, &body) {
        Some(_) => status(StatusCode::OK),
        None => status(StatusCode::FORBIDDEN),
    }
}

/// SRS `http_hooks` (JSON: `action`, `client_id`, `ip`, `app`, `stream`, ...): `on_publish`
/// with a good key (`stream`) answers `{"code":0}`, anything else refuses (HTTP 403,
/// `{"code":403}`); `on_unpublish` ends the live state; `on_play` is refused (viewers watch
/// through the edge); `on_stop` is acknowledged. SRS cannot rename a stream from its
/// callback: point its HLS output (`hls_path`, `hls_m3u8_file`) at a name it does not
/// publish, or use nginx-rtmp's relay.
async fn srs(State(st): St, ConnectInfo(peer): ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    let ok = || Json(json!({"code": 0})).into_response();
    let no = || (StatusCode::FORBIDDEN, Json(json!({"code": 403}))).into_response();
    if !in_nets(peer.ip().to_canonical(), &st.cfg.hooks.allow_from) {
        tracing::warn!(peer = %peer.ip(), "SRS callback from outside hooks.allow_from");
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
        "on_unpublish" => {
            let id = match st.publishers.get(client) {
                Some(id) => Some(id),
                None => match stream_of(&st, text("stream")).await {
                    Ok(id) => id,
                    Err(e) => return e.into_response(),
                },
            };
            if let Some(id) = id {
                if let Err(e) = ended(&st, id, client).await {
                    return e.into_response();
                }
            }
            ok()
        }
        "on_stop" => ok(),
        _ => no(),
    }
}
