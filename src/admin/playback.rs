//! Admin routes for the token modes (SPEC "More ways in"): playback keys users register
//! for their own JWTs (IVS `ImportPlaybackKeyPair`), JWT-mode playback URLs signed with
//! the edge's own key, CloudFront-format cookies for cookie mode and their sign-out, and
//! the revocation of JWT viewer ids.

use super::api::{bad, caller, parse, stream_id_value, user_stream, ApiResult, Body, St};
use super::ApiError;
use crate::store::{hex, now_ms, PlaybackKey};
use crate::token::{cloudfront, jwt, unix_now};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// Keys one user may register.
const MAX_KEYS_PER_USER: usize = 20;

/// The cookies of cookie mode, in CloudFront's names.
const COOKIES: [&str; 3] = [
    "CloudFront-Policy",
    "CloudFront-Signature",
    "CloudFront-Key-Pair-Id",
];

fn key_json(k: &PlaybackKey) -> Value {
    json!({
        "kid": k.kid,
        "name": k.name,
        "fingerprint": k.fingerprint,
        "createdAt": k.created_at / 1000,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: String,
    /// IVS's field name for the public key PEM.
    #[serde(rename = "publicKeyMaterial")]
    public_key: String,
}

/// `POST /api/playback-keys {"publicKeyMaterial": PEM, "name"?}`: register a public key
/// (P-256, P-384 or RSA) whose JWTs may open the caller's streams. Answers its `kid` (to
/// put in the JWT header) and the SHA-256 fingerprint of its DER.
pub async fn create_key(State(st): St, headers: HeaderMap, body: Body) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let b: NewKey = parse(body)?;
    if b.name.len() > 128 || b.name.contains(char::is_control) {
        return Err(bad("name: at most 128 characters, no control characters"));
    }
    let pem = b.public_key.trim().to_owned() + "\n";
    if pem.len() > 16 * 1024 {
        return Err(bad("publicKeyMaterial is longer than 16 KiB"));
    }
    let mut kid = [0u8; 8];
    getrandom::getrandom(&mut kid).map_err(|_| bad("no randomness"))?;
    let kid = format!("pk_{}", hex(&kid));
    jwt::JwtKeys::from_pems(&[(kid.clone(), pem.clone())].into())
        .map_err(|(_, problem)| bad(format!("publicKeyMaterial: {problem}")))?;
    if st.store.playback_keys(c.user_id).await?.len() >= MAX_KEYS_PER_USER {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("at most {MAX_KEYS_PER_USER} playback keys per user"),
        ));
    }
    let der: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let fingerprint = hex(ring::digest::digest(&ring::digest::SHA256, der.as_bytes()).as_ref());
    let k = PlaybackKey {
        kid,
        user_id: c.user_id,
        name: b.name,
        pem,
        fingerprint,
        created_at: now_ms(),
    };
    st.store.create_playback_key(&k).await?;
    st.changes.playback_key_changed(&k.kid).await;
    Ok((StatusCode::CREATED, Json(key_json(&k))).into_response())
}

/// `GET /api/playback-keys`: the caller's keys.
pub async fn list_keys(State(st): St, headers: HeaderMap) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let keys: Vec<Value> = st
        .store
        .playback_keys(c.user_id)
        .await?
        .iter()
        .map(key_json)
        .collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

/// `DELETE /api/playback-keys/{kid}`: 204, or 404 when the caller has no such key.
pub async fn delete_key(State(st): St, headers: HeaderMap, Path(kid): Path<String>) -> ApiResult {
    let c = caller(&st, &headers).await?;
    if !st.store.delete_playback_key(c.user_id, &kid).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such playback key"));
    }
    st.changes.playback_key_changed(&kid).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(rename = "streamID")]
    stream_id: Option<Value>,
    #[serde(rename = "viewerId")]
    viewer_id: Option<String>,
    #[serde(rename = "allowOrigin")]
    allow_origin: Option<String>,
    #[serde(rename = "strictOrigin", default)]
    strict_origin: bool,
    #[serde(rename = "maxResolution")]
    max_resolution: Option<String>,
    /// Access rules ([`crate::rules`]) the token carries: they narrow the stream's.
    #[serde(rename = "accessRules")]
    access_rules: Option<Value>,
}

/// 16 random bytes, hex: what makes each credential issued a viewer session of its own.
fn nonce() -> Result<String, ApiError> {
    let mut n = [0u8; 16];
    getrandom::getrandom(&mut n).map_err(|_| bad("no randomness"))?;
    Ok(hex(&n))
}

/// Access rules a user asks to put in a credential, checked and normalised (`None`: none).
fn credential_rules(st: &super::AdminState, v: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let r = super::api::access_rules(st, v)?;
    // The rules travel in every native token the credential is exchanged for.
    let mut encoded = Vec::new();
    r.encode(&mut encoded);
    if encoded.len() > MAX_CREDENTIAL_RULES {
        return Err(bad(format!(
            "accessRules: {} bytes in a token, at most {MAX_CREDENTIAL_RULES} (fewer networks)",
            encoded.len()
        )));
    }
    Ok((!r.is_empty()).then(|| r.to_json()))
}

/// Most bytes a credential's access rules take in a native token (`token::MAX_SCOPE` holds
/// them with the login session and the key).
const MAX_CREDENTIAL_RULES: usize = 512;

/// The caller's stream named by `streamID`, when what is issued for it ends (unix
/// seconds: the caller's login session's end or `tokens.session_ttl`), and the login
/// session's id (hex), which what is issued names so that logging out ends it.
async fn own_stream_in_session(
    st: &super::AdminState,
    headers: &HeaderMap,
    id: &Option<Value>,
) -> Result<(crate::store::StreamRecord, u32, String), ApiError> {
    let c = caller(st, headers).await?;
    let id = stream_id_value(id)?;
    let s = user_stream(st, c.user_id, id).await?;
    let session_end = (c.session.expires_at / 1000).clamp(0, u32::MAX as i64) as u32;
    let end = unix_now()
        .saturating_add(st.cfg().tokens.session_ttl.as_secs().min(u32::MAX as u64) as u32)
        .min(session_end);
    Ok((s, end, c.session.id))
}

/// [`own_stream_in_session`] without the session.
async fn own_stream(
    st: &super::AdminState,
    headers: &HeaderMap,
    id: &Option<Value>,
) -> Result<(crate::store::StreamRecord, u32), ApiError> {
    own_stream_in_session(st, headers, id)
        .await
        .map(|(s, end, _)| (s, end))
}

/// `POST /api/playback-token {"streamID", "viewerId"?, "allowOrigin"?, "strictOrigin"?,
/// "maxResolution"?}`: a JWT-mode playback URL (ES256, signed with the edge's own key,
/// IVS's claims), valid until the caller's login session ends or `tokens.session_ttl`.
pub async fn playback_token(State(st): St, headers: HeaderMap, body: Body) -> ApiResult {
    let b: TokenRequest = parse(body)?;
    let (s, exp, login) = own_stream_in_session(&st, &headers, &b.stream_id).await?;
    let mut claims = json!({
        "aws:channel-arn": format!("arn:hlsgate:edge::stream/{}", s.id),
        "exp": exp,
        "iat": unix_now(),
        // Each token a viewer session (and a screen) of its own, even two asked for in
        // the same second: the session is derived from what is signed.
        "jti": nonce()?,
        // Logging out (or the session ending) ends this token on every edge.
        (jwt::LOGIN_CLAIM): login,
    });
    if let Some(v) = &b.viewer_id {
        if v.is_empty() || v.len() > 40 {
            return Err(bad("viewerId: 1-40 characters"));
        }
        claims["aws:viewer-id"] = json!(v);
    }
    if let Some(o) = &b.allow_origin {
        claims["aws:access-control-allow-origin"] = json!(o);
        claims["aws:strict-origin-enforcement"] = json!(b.strict_origin);
    }
    if let Some(r) = &b.max_resolution {
        if !matches!(r.as_str(), "SD" | "HD" | "FULL_HD") {
            return Err(bad("maxResolution: SD, HD or FULL_HD"));
        }
        claims["aws:maximum-resolution"] = json!(r);
    }
    if let Some(r) = credential_rules(&st, b.access_rules.as_ref())? {
        claims["accessRules"] = r;
    }
    let (kid, private, _) = jwt::native_keys(&st.keyring().derive(jwt::NATIVE_LABEL))
        .into_iter()
        .next()
        .ok_or_else(|| bad("no playback key"))?;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes())
        .map_err(|_| bad("no playback key"))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|_| bad("cannot sign"))?;
    let url = format!(
        "{}/hls/{}/{}?token={token}",
        st.cfg().admin.public_edge_url,
        s.id,
        s.endpoint
    );
    Ok(Json(json!({ "url": url, "token": token, "expiresAt": exp })).into_response())
}

/// `Set-Cookie` values: `Path=/hls/`, `Secure; HttpOnly; SameSite=None`, the configured
/// `Domain`, and `Max-Age` (0 clears).
fn cookie(st: &super::AdminState, name: &str, value: &str, max_age: u32) -> String {
    let mut c = format!("{name}={value}; Path=/hls/; Max-Age={max_age}");
    if max_age == 0 {
        c.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    }
    if let Some(d) = &st.cfg().admin.cookie_domain {
        c.push_str("; Domain=");
        c.push_str(d);
    }
    c.push_str("; Secure; HttpOnly; SameSite=None");
    c
}

/// `GET /api/stream-cookies?streamID=N[&kind=live|recording][&accessRules=JSON]`: the three
/// CloudFront-format cookies (custom policy `http*://EDGE/hls/N/*`, signed with the edge's
/// own key) for one of the caller's streams, and the cookie-mode playlist URL. `live` and
/// `recording` (the seed's two endpoints) open the same stream path. `accessRules`
/// (percent-encoded JSON) go into the policy and narrow the stream's.
pub async fn stream_cookies(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let q = q.unwrap_or_default();
    let param = |name: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let id = param("streamID").map(|v| Value::String(v.to_owned()));
    let kind = param("kind").unwrap_or("live");
    if kind != "live" && kind != "recording" {
        return Err(bad("kind: live or recording"));
    }
    if id.is_none() {
        return Err(bad("streamID must be a positive integer"));
    }
    let access = match param("accessRules") {
        Some(text) => {
            let text = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
            let v: Value = serde_json::from_str(&text)
                .map_err(|_| bad("accessRules: a JSON list of rules"))?;
            credential_rules(&st, Some(&v))?
        }
        None => None,
    };
    let (s, exp, login) = own_stream_in_session(&st, &headers, &id).await?;
    let edge = &st.cfg().admin.public_edge_url;
    let authority = edge.split_once("://").map_or(edge.as_str(), |(_, a)| a);
    let policy = cloudfront::custom_policy(&format!("http*://{authority}/hls/{}/*", s.id), exp);
    // Logging out (or the session ending) ends these cookies on every edge.
    let policy = cloudfront::with_field(&policy, "hlsgate:Session", json!(login));
    // Two sets asked for in the same second are two viewer sessions (two screens): the
    // session is derived from what is signed.
    let policy = cloudfront::with_field(&policy, "hlsgate:Nonce", json!(nonce()?));
    let policy = match access {
        Some(r) => cloudfront::with_field(&policy, "hlsgate:AccessRules", r),
        None => policy,
    };
    let derived = st.keyring().derive(cloudfront::NATIVE_LABEL);
    let (kid, secret) = derived.first().ok_or_else(|| bad("no cookie key"))?;
    let (p, sig, kp) = cloudfront::sign_native(&policy, *kid, secret);
    let max_age = exp.saturating_sub(unix_now());
    let mut resp = Json(json!({
        "url": format!("{edge}/hls/{}/{}", s.id, s.endpoint),
        "kind": kind,
        "expiresAt": exp,
    }))
    .into_response();
    for (name, value) in COOKIES.iter().zip([p, sig, kp]) {
        let v = HeaderValue::from_str(&cookie(&st, name, &value, max_age))
            .map_err(|_| bad("cookie"))?;
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /api/signout`: clear the cookie-mode cookies (same `Domain` and `Path`, expired),
/// as the seed's `signout-stream` does. Needs no login: it only clears.
pub async fn signout(State(st): St) -> ApiResult {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    for name in COOKIES.iter().chain(&["CloudFront-Expires"]) {
        let v = HeaderValue::from_str(&cookie(&st, name, "", 0)).map_err(|_| bad("cookie"))?;
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(rename = "streamID")]
    stream_id: Option<Value>,
    #[serde(rename = "viewerId")]
    viewer_id: String,
}

/// `POST /api/viewers/revoke {"streamID", "viewerId"}`: JWTs carrying this
/// `aws:viewer-id` no longer open the caller's stream (the viewer's exchanged tokens
/// neither), on every edge sharing the store within `store.cache_ttl`.
pub async fn revoke_viewer(State(st): St, headers: HeaderMap, body: Body) -> ApiResult {
    let b: Revoke = parse(body)?;
    if b.viewer_id.is_empty() || b.viewer_id.len() > 40 {
        return Err(bad("viewerId: 1-40 characters"));
    }
    let (s, _) = own_stream(&st, &headers, &b.stream_id).await?;
    let id = s.id.to_string();
    st.store.revoke_viewer(&id, &b.viewer_id, now_ms()).await?;
    st.changes.viewer_revoked(&id, &b.viewer_id).await;
    Ok(Json(json!({ "streamID": s.id, "viewerId": b.viewer_id, "revoked": true })).into_response())
}

/// `GET /api/viewers?streamID=N`: the live viewer sessions of one of the caller's streams,
/// as every edge sharing the store reported them (seen in the last 30 s).
pub async fn list_viewers(State(st): St, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let q = q.unwrap_or_default();
    let id = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("streamID="))
        .map(|v| Value::String(v.to_owned()));
    if id.is_none() {
        return Err(bad("streamID must be a positive integer"));
    }
    let (s, _) = own_stream(&st, &headers, &id).await?;
    let viewers: Vec<Value> = st
        .store
        .viewers(
            &s.id.to_string(),
            now_ms() - crate::edge::viewers::LIVE_FOR.as_millis() as i64,
        )
        .await?
        .iter()
        .map(viewer_json)
        .collect();
    Ok(Json(json!({ "streamID": s.id, "viewers": viewers })).into_response())
}

/// A viewer session as the API shows it (times in unix seconds).
fn viewer_json(v: &crate::store::ViewerSession) -> Value {
    json!({
        "id": v.id,
        "streamID": v.stream_id,
        "ip": v.ip,
        "userAgent": v.user_agent,
        "firstSeen": v.first_seen / 1000,
        "lastSeen": v.last_seen / 1000,
        "edge": v.edge,
        "bytes": v.bytes,
    })
}

/// `DELETE /api/viewers/{id}`: end a viewer session of one of the caller's streams; every
/// edge sharing the store refuses it within a couple of seconds. 204, or 404.
pub async fn delete_viewer(State(st): St, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such viewer session");
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let stream = st.store.viewer_stream(&id).await?.ok_or_else(not_found)?;
    let owned = match stream.parse::<i64>() {
        Ok(n) => st.store.user_stream(c.user_id, n).await?.is_some(),
        Err(_) => false,
    };
    if !owned || !st.store.revoke_viewer_session(&id, now_ms()).await? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/screens`: the caller's screens — the viewer sessions playing with credentials
/// issued to their account (on every edge sharing the store), and those ended lately to
/// make room for a newer one (`endedReason: "screens"`) — with the limit that applies:
/// `max` (0: none), the account's own (`own`, set by the platform) or
/// `admin.max_screens_per_user`.
pub async fn list_screens(State(st): St, headers: HeaderMap) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let cfg = st.cfg();
    let own = st.store.user_max_screens(c.user_id).await?;
    let since = now_ms() - crate::edge::viewers::LIVE_FOR.as_millis() as i64;
    let (mut live, mut ended) = (Vec::new(), Vec::new());
    for a in st.store.account_sessions(c.user_id, since).await? {
        let mut j = viewer_json(&a.session);
        match a.ended_at {
            None => live.push(j),
            Some(at) => {
                j["endedAt"] = json!(at / 1000);
                j["endedReason"] = json!(a.ended_reason.as_deref().unwrap_or("deleted"));
                ended.push(j);
            }
        }
    }
    Ok(Json(json!({
        "max": crate::store::effective_screens(cfg.admin.max_screens_per_user, own),
        "configured": cfg.admin.max_screens_per_user,
        "own": own,
        "whenFull": cfg.admin.screens_full,
        "screens": live,
        "ended": ended,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScreensBody {
    /// The account's limit: `null` for `admin.max_screens_per_user`, 0 for none.
    max: Option<u32>,
}

/// `PUT /api/screens {"max": N}` with the user's JWT, from one of `admin.trusted_backends`
/// (the platform's app server, as for `X-Viewer-IP`): set the account's own screen limit,
/// higher or lower than `admin.max_screens_per_user` (a subscription plan); `null` goes back
/// to it, 0 is no limit. Anyone else is 403: a viewer does not choose their own plan.
/// Answers as `GET /api/screens`. (Screens are counted only while
/// `admin.max_screens_per_user` is above 0.)
pub async fn set_screens(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let c = caller(&st, &headers).await?;
    if !crate::net::in_nets(peer.ip(), &st.cfg().admin.trusted_backends) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "screen limits are set by the platform (admin.trusted_backends)",
        ));
    }
    let b: ScreensBody = parse(body)?;
    if b.max.is_some_and(|n| n > 1000) {
        return Err(bad("max: 0 (no limit) to 1000 screens, or null"));
    }
    st.store.set_user_max_screens(c.user_id, b.max).await?;
    list_screens(State(st), headers).await
}
