//! The admin routes. Every route that names a stream or a session looks it up with the
//! caller's user id (the store's queries carry `user_id = $N`), so another user's rows are
//! simply not found: 404, never a hint that they exist.

use super::auth::{self, Claims};
use super::{AdminState, ApiError};
use crate::net::{client_ip, in_nets};
use crate::origin::Origin;
use crate::store::{self, now_ms, session_bytes, session_hex, Session, StreamRecord};
use crate::token::{self, Binding, Grant};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub(super) type St = State<Arc<AdminState>>;
pub(super) type ApiResult = Result<Response, ApiError>;

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/openapi.json", get(openapi))
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/streams", get(list_streams).post(create_stream))
        .route(
            "/api/streams/{id}",
            get(read_stream).put(update_stream).delete(delete_stream),
        )
        .route("/api/update-stream", post(seed_update_stream))
        .route("/api/stream", get(playback_url))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", delete(revoke_session))
        .route(
            "/api/playback-keys",
            get(super::playback::list_keys).post(super::playback::create_key),
        )
        .route(
            "/api/playback-keys/{kid}",
            delete(super::playback::delete_key),
        )
        .route("/api/playback-token", post(super::playback::playback_token))
        .route("/api/stream-cookies", get(super::playback::stream_cookies))
        .route("/api/signout", post(super::playback::signout))
        .route("/api/viewers/revoke", post(super::playback::revoke_viewer))
        .route("/api/viewers", get(super::playback::list_viewers))
        .route("/api/viewers/{id}", delete(super::playback::delete_viewer))
        .route(
            "/api/screens",
            get(super::playback::list_screens).put(super::playback::set_screens),
        )
        .route("/api/streams/{id}/key", post(super::publish::new_key))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(require_json))
        // The media servers' callbacks are form-encoded (nginx-rtmp) or JSON (SRS).
        .merge(super::publish::hooks())
        .merge(super::web::routes())
        .layer(axum::middleware::from_fn(
            |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(super::REQUEST_TIMEOUT, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, "request took too long")
                        .into_response(),
                }
            },
        ))
        .with_state(state)
}

/// A request with a body must say it is JSON. A browser sends `text/plain`, form or
/// multipart bodies cross-site without asking (no CORS preflight): refusing them is what
/// keeps another site from registering or logging in through a visitor's browser.
async fn require_json(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let h = req.headers();
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if has_body && !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "request bodies must be Content-Type: application/json",
        )
        .into_response();
    }
    next.run(req).await
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

// ---- request plumbing ---------------------------------------------------------------------

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A request body, or why it could not be read (too large: 413).
pub(super) type Body = Result<Bytes, BytesRejection>;

/// Parse a JSON body; any problem is a 400 naming it (the seed's "Cannot parse JSON"), a
/// body over the 64 KiB limit a 413, both as JSON.
pub(super) fn parse<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| bad(format!("Cannot parse JSON: {e}")))
}

/// The client as the admin sees it: TCP peer, or X-Forwarded-For from a trusted proxy.
pub(super) fn client(st: &AdminState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let xff = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes());
    client_ip(peer.ip(), xff, &st.cfg().admin.trusted_proxies).to_canonical()
}

fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn too_many(seconds: u64) -> ApiError {
    ApiError {
        retry_after: Some(seconds),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts; retry later",
        )
    }
}

/// Run blocking work (DNS resolution) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// Run argon2 off the async workers, at most `hash_slots` at a time.
async fn hashing<T: Send + 'static>(
    st: &AdminState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = st
        .hash_slots
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    blocking(f).await
}

/// The logged-in caller: a valid JWT naming a live session of its user.
pub(super) struct Caller {
    pub user_id: i64,
    pub session: Session,
}

pub(super) async fn caller(st: &AdminState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    let claims = st
        .jwt()
        .verify(jwt)
        .ok_or_else(|| unauthorized("invalid or expired token"))?;
    let user_id: i64 = claims
        .sub
        .parse()
        .map_err(|_| unauthorized("invalid or expired token"))?;
    match st.store.session(&claims.session_id, now_ms()).await? {
        Some(s) if s.user_id == user_id => Ok(Caller {
            user_id,
            session: s,
        }),
        _ => Err(unauthorized("session has ended")),
    }
}

// ---- users and sessions -------------------------------------------------------------------

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// A name a user could have: 3-64 of `A-Z a-z 0-9 . _ @ -`.
fn valid_username(u: &str) -> bool {
    (3..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Usernames: 3-64 of `A-Z a-z 0-9 . _ @ -`. Passwords: at least 8 characters, at most
/// 1024 bytes, not the username.
fn check_new_user(c: &Credentials) -> Result<(), ApiError> {
    let u = &c.username;
    if !valid_username(u) {
        return Err(bad(
            "username must be 3-64 characters of A-Z a-z 0-9 . _ @ -",
        ));
    }
    let p = &c.password;
    if p.chars().count() < 8 {
        return Err(bad("password must be at least 8 characters"));
    }
    if p.len() > 1024 {
        return Err(bad("password must be at most 1024 bytes"));
    }
    if p.eq_ignore_ascii_case(u) {
        return Err(bad("password must not be the username"));
    }
    Ok(())
}

async fn register(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let ip = client(&st, peer, &headers);
    // Hashing is deliberately expensive: unauthenticated callers share the login budget.
    st.per_ip.attempt(&auth::client_key(ip)).map_err(too_many)?;
    let c: Credentials = parse(body)?;
    check_new_user(&c)?;
    let password = c.password;
    let hash = hashing(&st, move || auth::hash_password(&password)).await?;
    match st.store.create_user(&c.username, &hash, now_ms()).await {
        Ok(user) => {
            tracing::info!(user = user.id, "user registered");
            Ok((
                StatusCode::CREATED,
                Json(json!({"message": "User created successfully", "id": user.id})),
            )
                .into_response())
        }
        Err(store::StoreError::Conflict) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "username already taken",
        )),
        Err(e) => Err(e.into()),
    }
}

async fn login(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let ip = client(&st, peer, &headers);
    let client_key = auth::client_key(ip);
    st.per_ip.attempt(&client_key).map_err(too_many)?;
    let c: Credentials = parse(body)?;
    let invalid = || ApiError::new(StatusCode::UNAUTHORIZED, "Invalid credentials");
    // Checked before the name becomes a limiter key: no name that could not be a user's
    // is ever stored.
    if !valid_username(&c.username) || c.password.len() > 1024 {
        return Err(invalid());
    }
    // Failures are counted per user and client, and per user. The per-user count slows an
    // attacker down (past it, each client gets one try a window) without locking out the
    // owner: a client with no recent failures for this user is still let in to try.
    let pair_key = format!("user {} {client_key}", c.username);
    let user_key = format!("user {}", c.username);
    st.per_user.exhausted(&pair_key).map_err(too_many)?;
    if st.per_user.count(&pair_key) > 0 {
        st.per_user.exhausted(&user_key).map_err(too_many)?;
    }
    let user = st.store.user_by_name(&c.username).await?;
    // The same argon2 work whether or not the user exists.
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| st.dummy_hash.clone());
    let password = c.password;
    let ok = hashing(&st, move || auth::verify_password(&password, &phc)).await?;
    let Some(user) = user.filter(|_| ok) else {
        st.per_user.record(&pair_key);
        st.per_user.record(&user_key);
        tracing::info!(client = %ip, "login refused");
        return Err(invalid());
    };

    let now = now_ms();
    let ttl_ms = st.cfg().tokens.session_ttl.as_millis() as i64;
    let session = Session {
        id: session_hex(&token::new_session_id()),
        user_id: user.id,
        created_at: now,
        expires_at: now + ttl_ms,
        ip: ip.to_string(),
        user_agent: user_agent(&headers).chars().take(512).collect(),
    };
    let evicted = st
        .store
        .create_session(&session, st.cfg().admin.max_sessions_per_user)
        .await?;
    for id in &evicted {
        if let Some(b) = session_bytes(id) {
            st.changes.session_ended(b).await;
        }
    }
    let jwt = st.jwt().issue(&Claims {
        sub: user.id.to_string(),
        username: user.username.clone(),
        session_id: session.id.clone(),
        iat: (now / 1000) as u64,
        exp: (session.expires_at / 1000) as u64,
    });
    tracing::info!(user = user.id, evicted = evicted.len(), "login");
    Ok(Json(json!({
        "token": jwt,
        "sessionID": session.id,
        "expiresAt": session.expires_at / 1000,
    }))
    .into_response())
}

async fn logout(State(st): St, headers: HeaderMap) -> ApiResult {
    let c = caller(&st, &headers).await?;
    end_session(&st, c.user_id, &c.session.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn end_session(st: &AdminState, user_id: i64, id: &str) -> Result<bool, ApiError> {
    let found = st.store.delete_session(user_id, id).await?;
    // Only a session this user really ended: forgetting marks it ended for the edge.
    if let Some(b) = session_bytes(id).filter(|_| found) {
        st.changes.session_ended(b).await;
    }
    Ok(found)
}

async fn list_sessions(State(st): St, headers: HeaderMap) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let list: Vec<Value> = st
        .store
        .sessions(c.user_id, now_ms())
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "createdAt": s.created_at / 1000,
                "expiresAt": s.expires_at / 1000,
                "ip": s.ip,
                "userAgent": s.user_agent,
                "current": s.id == c.session.id,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": list })).into_response())
}

async fn revoke_session(State(st): St, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let c = caller(&st, &headers).await?;
    if session_bytes(&id).is_none() || !end_session(&st, c.user_id, &id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Session not found"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- streams ------------------------------------------------------------------------------

/// The stream as JSON: `id` and `url` (SPEC), and the seed's GORM fields for its clients.
/// A stream as the API shows it, with whether it is being published now.
async fn stream_view(st: &AdminState, s: &StreamRecord) -> Result<Value, ApiError> {
    let live = st.store.live(s.id).await?;
    let mut v = stream_json(s);
    v["live"] = json!(live.is_some());
    v["publisherIp"] = json!(live.as_ref().map(|l| &l.publisher_ip));
    v["liveSince"] = json!(live.as_ref().map(|l| l.since / 1000));
    Ok(v)
}

fn stream_json(s: &StreamRecord) -> Value {
    json!({
        "id": s.id,
        "url": s.url(),
        "baseUrl": s.base_url,
        "endpoint": s.endpoint,
        "createdAt": s.created_at / 1000,
        "updatedAt": s.updated_at / 1000,
        "ID": s.id,
        "BaseURL": s.base_url,
        "EndPoint": s.endpoint,
        "UserID": s.user_id,
        "accessRules": stored_rules(&s.access_rules),
        "referers": stored_rules(&s.referers),
    })
}

/// A stored JSON list (access rules, referrers) as JSON; `[]` when none.
fn stored_rules(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!([]))
}

/// Access rules as a user sent them (a stream's, or a credential's), checked: rules naming
/// countries need a country database (the edges share the admin's config).
pub(super) fn access_rules(
    st: &AdminState,
    v: &Value,
) -> Result<crate::rules::AccessRules, ApiError> {
    let r = crate::rules::AccessRules::from_json(v).map_err(bad)?;
    if r.needs_country() && st.cfg().geoip.is_none() {
        return Err(bad(
            "country rules need a country database (geoip.database) on the edges",
        ));
    }
    Ok(r)
}

/// A stream's `accessRules` and `referers` as sent, checked, in the form they are stored:
/// `None` for each one not sent.
fn check_rules(
    st: &AdminState,
    access: Option<&Value>,
    referers: Option<&Vec<String>>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let access = match access {
        None => None,
        Some(Value::Null) => Some(String::new()),
        Some(v) => {
            let r = access_rules(st, v)?;
            Some(if r.is_empty() {
                String::new()
            } else {
                r.to_json().to_string()
            })
        }
    };
    let referers = match referers {
        None => None,
        Some(list) => Some(match crate::rules::Referers::parse(list).map_err(bad)? {
            Some(r) => json!(r.to_list()).to_string(),
            None => String::new(),
        }),
    };
    Ok((access, referers))
}

/// Store what [`check_rules`] let through for the user's stream `s` (the caller tells the
/// caches, once).
async fn store_rules(
    st: &AdminState,
    s: StreamRecord,
    (access, referers): (Option<String>, Option<String>),
) -> Result<StreamRecord, ApiError> {
    if access.is_none() && referers.is_none() {
        return Ok(s);
    }
    let access = access.unwrap_or_else(|| s.access_rules.clone());
    let referers = referers.unwrap_or_else(|| s.referers.clone());
    st.store
        .set_stream_rules(s.user_id, s.id, &access, &referers, now_ms())
        .await?;
    Ok(StreamRecord {
        access_rules: access,
        referers,
        ..s
    })
}

/// Check a user-supplied playlist URL and split it as the seed does: `(base, endpoint)`.
/// http(s) only; hosts resolving to internal addresses need `origins.allow`.
async fn check_origin_url(st: &AdminState, url: &str) -> Result<(String, String), ApiError> {
    let url = url.trim();
    if url.len() > 2048 {
        return Err(bad("URL is longer than 2048 bytes"));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("stream URLs must be http:// or https://"));
    }
    let (origin, _) = Origin::from_playlist_url(url).map_err(|e| bad(format!("bad URL: {e}")))?;
    if !st.cfg().origins.user_url_allowed(url) {
        return Err(bad("not an allowed origin"));
    }
    let policy = st.cfg().origins.clone();
    blocking(move || origin.check_allowed(&policy))
        .await?
        .map_err(|e| bad(e.to_string()))?;
    let i = url.rfind('/').expect("checked by from_playlist_url");
    Ok((url[..i].to_owned(), url[i + 1..].to_owned()))
}

async fn list_streams(State(st): St, headers: HeaderMap) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let mut list: Vec<Value> = Vec::new();
    for s in st.store.streams(c.user_id).await? {
        list.push(stream_view(&st, &s).await?);
    }
    Ok(Json(json!({ "streams": list })).into_response())
}

#[derive(Deserialize)]
struct StreamBody {
    /// Required to create a stream; an update without it keeps the URL.
    url: Option<String>,
    #[serde(rename = "accessRules")]
    access_rules: Option<Value>,
    referers: Option<Vec<String>>,
}

async fn create_stream(State(st): St, headers: HeaderMap, body: Body) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let b: StreamBody = parse(body)?;
    let url = b.url.as_deref().ok_or_else(|| bad("url is required"))?;
    let rules = check_rules(&st, b.access_rules.as_ref(), b.referers.as_ref())?;
    let (base, endpoint) = check_origin_url(&st, url).await?;
    let s = create_own_stream(&st, c.user_id, &base, &endpoint, now_ms()).await?;
    let s = store_rules(&st, s, rules).await?;
    st.changes.stream_changed(s.id).await;
    Ok((StatusCode::CREATED, Json(stream_view(&st, &s).await?)).into_response())
}

/// A new stream for `user_id`, within `admin.max_streams_per_user` (403 past it: one
/// registered account must not fill the store, or the edges' caches, with streams).
async fn create_own_stream(
    st: &AdminState,
    user_id: i64,
    base: &str,
    endpoint: &str,
    now: i64,
) -> Result<crate::store::StreamRecord, ApiError> {
    let max = st.cfg().admin.max_streams_per_user;
    if max > 0 && st.store.streams(user_id).await?.len() >= max as usize {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "stream limit reached (admin.max_streams_per_user)",
        ));
    }
    Ok(st.store.create_stream(user_id, base, endpoint, now).await?)
}

pub(super) fn stream_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Stream not found")
}

pub(super) fn path_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("stream ids are positive integers"))
}

/// The user's stream `id`; another user's stream is 404, as one that does not exist.
pub(super) async fn user_stream(
    st: &AdminState,
    user_id: i64,
    id: i64,
) -> Result<StreamRecord, ApiError> {
    st.store
        .user_stream(user_id, id)
        .await?
        .ok_or_else(stream_not_found)
}

async fn read_stream(State(st): St, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let s = user_stream(&st, c.user_id, path_id(&id)?).await?;
    Ok(Json(stream_view(&st, &s).await?).into_response())
}

async fn update_stream(
    State(st): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let id = path_id(&id)?;
    let b: StreamBody = parse(body)?;
    let rules = check_rules(&st, b.access_rules.as_ref(), b.referers.as_ref())?;
    let s = match &b.url {
        Some(url) => {
            let (base, endpoint) = check_origin_url(&st, url).await?;
            st.store
                .update_stream(c.user_id, id, &base, &endpoint, now_ms())
                .await?
                .ok_or_else(stream_not_found)?
        }
        None => user_stream(&st, c.user_id, id).await?,
    };
    let s = store_rules(&st, s, rules).await?;
    // Once, after the URL and the rules are both stored.
    st.changes.stream_changed(id).await;
    Ok(Json(stream_view(&st, &s).await?).into_response())
}

async fn delete_stream(State(st): St, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let id = path_id(&id)?;
    if !st.store.delete_stream(c.user_id, id).await? {
        return Err(stream_not_found());
    }
    st.changes.stream_changed(id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The seed's `streamID`: a number, or a string of digits. Absent or 0: a new stream.
pub(super) fn stream_id_value(v: &Option<Value>) -> Result<i64, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad("streamID must be a non-negative integer")),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad("streamID must be a non-negative integer")),
        Some(_) => Err(bad("streamID must be a non-negative integer")),
    }
}

#[derive(Deserialize)]
struct SeedUpdate {
    #[serde(rename = "streamID")]
    stream_id: Option<Value>,
    #[serde(rename = "newUrl")]
    new_url: String,
}

/// `POST /api/update-stream`: update the caller's stream, or (as the seed does) create a
/// new one for the caller when the id is not theirs or unknown. Another user's stream is
/// never touched.
async fn seed_update_stream(State(st): St, headers: HeaderMap, body: Body) -> ApiResult {
    let c = caller(&st, &headers).await?;
    let b: SeedUpdate = parse(body)?;
    let id = stream_id_value(&b.stream_id)?;
    let (base, endpoint) = check_origin_url(&st, &b.new_url).await?;
    let now = now_ms();
    let updated = if id > 0 {
        st.store
            .update_stream(c.user_id, id, &base, &endpoint, now)
            .await?
    } else {
        None
    };
    let (s, created) = match updated {
        Some(s) => {
            st.changes.stream_changed(s.id).await;
            (s, false)
        }
        None => (
            create_own_stream(&st, c.user_id, &base, &endpoint, now).await?,
            true,
        ),
    };
    Ok(Json(json!({
        "message": "Stream URL updated successfully",
        "streamID": s.id,
        "created": created,
        "stream": stream_view(&st, &s).await?,
    }))
    .into_response())
}

/// `GET /api/stream?streamID=N`: a playback URL for one of the caller's streams, its
/// token bound to the caller's session, IP and User-Agent (or, from a trusted backend,
/// the viewer's given in `X-Viewer-IP` / `X-Viewer-User-Agent`).
async fn playback_url(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let c = caller(&st, &headers).await?;
    // Read by hand: the seed's only parameter, and no extractor's plain-text 400.
    let id = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("streamID="))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("streamID must be a positive integer"))?;
    let s = user_stream(&st, c.user_id, id).await?;

    let mut ip = client(&st, peer, &headers);
    let mut ua = user_agent(&headers);
    let given_ip = headers.get("x-viewer-ip");
    let given_ua = headers.get("x-viewer-user-agent");
    if given_ip.is_some() || given_ua.is_some() {
        if !in_nets(peer.ip(), &st.cfg().admin.trusted_backends) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "X-Viewer-IP / X-Viewer-User-Agent are only accepted from admin.trusted_backends",
            ));
        }
        if let Some(v) = given_ip {
            ip = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .ok_or_else(|| bad("X-Viewer-IP is not an IP address"))?;
        }
        if let Some(v) = given_ua {
            ua = v
                .to_str()
                .map_err(|_| bad("X-Viewer-User-Agent is not text"))?
                .to_owned();
        }
    }

    let now = token::unix_now();
    let session_exp = (c.session.expires_at / 1000).clamp(0, u32::MAX as i64) as u32;
    let exp = now
        .saturating_add(st.cfg().tokens.ttl.as_secs() as u32)
        .min(session_exp);
    let grant = Grant {
        stream: s.id.to_string(),
        session: session_bytes(&c.session.id).expect("stored session ids are hex"),
        exp,
        session_exp,
        binding: Binding {
            ip: Some((ip, st.cfg().tokens.prefix_for(ip))),
            ua: Some(ua),
        },
        stored_session: true,
        scope: crate::token::Scope::path(),
    };
    let tok = st.keyring().issue(&grant);
    let url = crate::playback::url(
        &st.cfg().admin.public_edge_url,
        &tok,
        &s.id.to_string(),
        &s.endpoint,
    );
    Ok(
        Json(json!({ "url": url, "expiresAt": exp, "sessionExpiresAt": session_exp }))
            .into_response(),
    )
}

/// The router without sockets (`oneshot`), so requests can come from any peer address:
/// which peers are believed about the client (trusted proxies) and the viewer (trusted
/// backends).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::token::{Keyring, TokenError, Viewer};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn state(dir: &std::path::Path) -> Arc<AdminState> {
        let yaml = format!(
            "admin:\n  trusted_proxies: [\"10.0.0.1\"]\n  trusted_backends: [\"10.0.0.2\"]\n  \
             login_attempts_per_ip: 2\n  login_attempts_per_user: 0\n\
             tokens:\n  secret_file: \"{d}/k\"\nstore:\n  url: \"sqlite://{d}/s.db\"\n\
             origins:\n  allow: [\"127.0.0.1\"]\n",
            d = dir.display()
        );
        let cfg = Config::parse(&yaml, std::path::Path::new("t.yaml")).unwrap();
        let keyring = Keyring::load_or_create(&cfg.tokens.secret_file).unwrap();
        let store = store::open(&cfg.store_url).await.unwrap();
        Arc::new(AdminState::new(
            Arc::new(cfg),
            Arc::new(keyring),
            store,
            Arc::new(store::NoCaches),
        ))
    }

    async fn call(
        st: &Arc<AdminState>,
        peer: &str,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("Content-Type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::from(body.to_owned())).unwrap();
        let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = router(st.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    const CREDS: &str = r#"{"username":"zoe","password":"zoe-password"}"#;

    async fn jwt(st: &Arc<AdminState>, peer: &str, xff: &str) -> String {
        let (s, v) = call(
            st,
            peer,
            "POST",
            "/api/login",
            &[("x-forwarded-for", xff)],
            CREDS,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path()).await;
        let (s, _) = call(&st, "10.0.0.1", "POST", "/api/register", &[], CREDS).await;
        assert_eq!(s, StatusCode::CREATED);
        let via_proxy = jwt(&st, "10.0.0.1", "198.51.100.7").await;
        let direct = jwt(&st, "192.0.2.9", "198.51.100.8").await;
        let auth = format!("Bearer {direct}");
        let (_, v) = call(
            &st,
            "192.0.2.9",
            "GET",
            "/api/sessions",
            &[("authorization", &auth)],
            "",
        )
        .await;
        let mut ips: Vec<&str> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ip"].as_str().unwrap())
            .collect();
        ips.sort();
        assert_eq!(ips, vec!["192.0.2.9", "198.51.100.7"]);
        // Each client IP behind the proxy has its own login budget (2 a minute here);
        // the proxy's own address is not what is limited.
        assert!(!via_proxy.is_empty());
        let again = || {
            call(
                &st,
                "10.0.0.1",
                "POST",
                "/api/login",
                &[("x-forwarded-for", "198.51.100.7")],
                CREDS,
            )
        };
        assert_eq!(
            again().await.0,
            StatusCode::OK,
            "198.51.100.7's second attempt"
        );
        assert_eq!(again().await.0, StatusCode::TOO_MANY_REQUESTS, "and third");
        let (s, _) = call(
            &st,
            "10.0.0.1",
            "POST",
            "/api/login",
            &[("x-forwarded-for", "198.51.100.9")],
            CREDS,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "another client behind the same proxy");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn argon2_runs_at_most_one_per_cpu_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path()).await;
        let cap = st.hash_slots.available_permits();
        let inflight = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..cap * 4 {
            let (st, inflight, max) = (st.clone(), inflight.clone(), max.clone());
            tasks.spawn(async move {
                hashing(&st, move || {
                    let n = inflight.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    inflight.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap()
            });
        }
        while tasks.join_next().await.is_some() {}
        let max = max.load(Ordering::SeqCst);
        assert!(max <= cap, "{max} argon2 runs at once, cap {cap}");
        assert!(max >= cap.min(2), "they do run in parallel: {max}");
    }

    #[tokio::test]
    async fn only_trusted_backends_name_the_viewer_and_the_token_binds_them() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path()).await;
        call(&st, "10.0.0.2", "POST", "/api/register", &[], CREDS).await;
        let auth = format!("Bearer {}", jwt(&st, "10.0.0.2", "").await);
        let (s, v) = call(
            &st,
            "10.0.0.2",
            "POST",
            "/api/streams",
            &[("authorization", &auth)],
            r#"{"url":"http://127.0.0.1:9/live/index.m3u8"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let uri = format!("/api/stream?streamID={}", v["id"]);
        let viewer = [
            ("authorization", auth.as_str()),
            ("x-viewer-ip", "203.0.113.50"),
            ("x-viewer-user-agent", "tv/1"),
            ("user-agent", "backend/1"),
        ];
        let (s, v) = call(&st, "10.0.0.3", "GET", &uri, &viewer, "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, v) = call(&st, "10.0.0.2", "GET", &uri, &viewer, "").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let url = v["url"].as_str().unwrap();
        let parts: Vec<&str> = url.split('/').collect();
        let (tok, stream) = (parts[5], parts[6]);
        let check = |ip: &str, ua: &str| {
            st.keyring().verify(
                tok,
                &Viewer {
                    stream,
                    ip: ip.parse().unwrap(),
                    ua,
                    now: crate::token::unix_now(),
                },
            )
        };
        let ok = check("203.0.113.50", "tv/1").unwrap();
        assert!(ok.stored_session());
        assert_eq!(check("10.0.0.2", "tv/1"), Err(TokenError::WrongViewer));
        assert_eq!(
            check("203.0.113.50", "backend/1"),
            Err(TokenError::WrongViewer)
        );
        let (s, _) = call(
            &st,
            "10.0.0.2",
            "GET",
            &uri,
            &[
                ("authorization", auth.as_str()),
                ("x-viewer-ip", "not-an-ip"),
            ],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
