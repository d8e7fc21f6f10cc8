//! Who gets in, decided in one place and without sockets: [`authorize`] takes the facts of
//! a request ([`Request`]) and the time, and answers what to serve ([`Admission`]) or why
//! not ([`Denial`]: status, metric reason, message). The Pingora filter only gathers the
//! facts and applies the answer, so every refusal is unit-tested here directly. (What lies
//! behind `EdgeState` may still be asked: the store, and the external handler for viewers
//! without credentials.)
//!
//! Order: `Host` (400), route and path (404 / 400 / 401), method (405), query (400),
//! token (401 / 403), stream and session (404 / 403 / 503), the grant the token carries
//! (mode, key, login session, rules, external decision: 403 / 503), signed path (403),
//! signed query (403).
//!
//! Every way in ends in one grant, carried by the native token under its MAC
//! ([`crate::token::Scope`]): [`check_grant`] decides what it allows on every request, the
//! same on every edge and after any restart, whether the token was just exchanged here or
//! issued by another edge an hour ago.

use super::EdgeState;
use crate::media::Kind;
use crate::net::client_ip;
use crate::origin::Origin;
use crate::playback::{self, Query, Route, Target};
use crate::rules::Country;
use crate::stream::Stream;
use crate::token::jwt::Rules;
use crate::token::{
    Binding, ExternalGrant, Grant as TokenGrant, Mode, Scope, TokenError, Verified, Viewer,
};
use std::net::IpAddr;
use std::sync::Arc;

/// The facts of one request, as the edge received it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub version: http::Version,
    /// Path of the request target (still percent-encoded), no query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Whether a `Host` header was sent (HTTP/1.1 requires one: RFC 9112 §3.2).
    pub has_host: bool,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Every `X-Forwarded-For` value, in order.
    pub forwarded_for: Vec<&'a [u8]>,
    pub user_agent: &'a str,
    /// The request's authority: the `Host` header, or `:authority` on HTTP/2 (CloudFront
    /// policies name the host).
    pub host: Option<&'a str>,
    /// Every `Cookie` header value (cookie modes).
    pub cookies: Vec<&'a str>,
    /// The `Origin` header (a JWT's strict origin enforcement).
    pub origin: Option<&'a str>,
    /// The `Referer` header (told to the external handler).
    pub referer: &'a str,
}

/// Why a request is refused: the status, the `hlsgate_auth_denials_total` reason, and
/// the message of the JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    pub reason: &'static str,
    pub message: &'static str,
    /// The viewer's country, when it was looked up before the refusal (the access log).
    pub country: Option<Country>,
}

impl Denial {
    pub const fn new(status: u16, reason: &'static str, message: &'static str) -> Denial {
        Denial {
            status,
            reason,
            message,
            country: None,
        }
    }

    /// This refusal, made knowing the viewer's country.
    pub fn from_country(self, country: Option<Country>) -> Denial {
        Denial { country, ..self }
    }

    /// The store could not be asked what a decision needs (fail closed).
    pub const STORE_DOWN: Denial = Denial::new(503, "store_unavailable", "store unavailable");

    /// A token refused, in any mode.
    pub fn token(e: TokenError) -> Denial {
        Denial::new(e.status(), e.reason(), e.message())
    }

    fn route(e: playback::RouteError) -> Denial {
        Denial::new(e.status(), "route", e.message())
    }
}

/// What an admitted request may have.
#[derive(Debug)]
pub enum Admission {
    /// `/healthz`.
    Health,
    /// One object of a stream.
    Object(Grant),
    /// The external handler sends this viewer elsewhere (302).
    Redirect(String),
}

/// An admitted request for one object of a stream.
#[derive(Debug)]
pub struct Grant {
    pub kind: Kind,
    pub stream: Arc<Stream>,
    /// Absolute origin path of the object (no query).
    pub origin_path: String,
    /// The query that reaches the origin (and the cache key): a playlist-named query whose
    /// signature matched, then the validated LL-HLS delivery directives. Never the rest of
    /// what the viewer sent.
    pub origin_query: Option<String>,
    /// The token handed back in `X-New-Token` and written into rewritten playlists.
    pub token: String,
    /// `token` differs from the one presented.
    pub token_renewed: bool,
    /// The request came through a `~o/` signed path.
    pub signed_target: bool,
    /// The viewer session the token belongs to.
    pub session: [u8; 16],
    /// A JWT's `aws:` rules for this viewer session (CORS answer, resolution cap).
    pub rules: Option<Arc<Rules>>,
    /// The viewer's address (trusted proxies applied).
    pub ip: IpAddr,
    /// The viewer's country, when the edge has a country database (`geoip.database`).
    pub country: Option<Country>,
}

impl Grant {
    /// `origin_path` + `?origin_query`.
    pub fn origin_uri(&self) -> String {
        match &self.origin_query {
            Some(q) => [self.origin_path.as_str(), "?", q].concat(),
            None => self.origin_path.clone(),
        }
    }
}

/// Decide one request. Async only because a stream or session may have to be read from
/// the store (through the edge's cache of it).
pub async fn authorize(st: &EdgeState, req: &Request<'_>, now: u32) -> Result<Admission, Denial> {
    if req.version == http::Version::HTTP_11 && !req.has_host {
        return Err(Denial::new(400, "bad_request", "missing Host header"));
    }
    if req.host.is_some_and(|h| !crate::net::valid_authority(h)) {
        return Err(Denial::new(400, "bad_request", "invalid Host header"));
    }
    let (path_token, stream_id, target) = match playback::parse(req.path).map_err(Denial::route)? {
        Route::Health => return Ok(Admission::Health),
        Route::Hls {
            token,
            stream,
            target,
        } => (Some(token), stream, target),
        Route::Query { stream, target } => (None, stream, target),
    };
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return Err(Denial::new(405, "method", "method not allowed"));
    }
    let query = Query::parse(req.query.unwrap_or("")).map_err(Denial::route)?;
    let kind = Kind::of(match &target {
        Target::InBase(p) | Target::Rendition { rel: p, .. } => p,
        Target::Signed { path, .. } => path,
    });

    let ip = client_ip(
        req.peer,
        req.forwarded_for.iter().copied(),
        &st.cfg.edge.trusted_proxies,
    );
    let viewer = Viewer {
        stream: stream_id,
        ip,
        ua: req.user_agent,
        now,
    };
    // A foreign token is exchanged for a native one at the door: the rest of the way (and
    // every URI of the rewritten playlist) is path mode.
    let exchanged = match path_token {
        Some(_) => None,
        None => match exchange(st, req, &query, &viewer).await? {
            Exchange::Token(t, v) => Some((t, v)),
            Exchange::Redirect(to) => return Ok(Admission::Redirect(to)),
        },
    };
    let (tok, verified) = match (&exchanged, path_token) {
        (Some((t, v)), _) => (t.as_str(), v.clone()),
        (None, tok) => {
            let tok = tok.unwrap_or_default();
            (tok, st.keyring.verify(tok, &viewer).map_err(Denial::token)?)
        }
    };
    match st.viewers.as_ref().and_then(|v| v.ended(&verified.session)) {
        None => {}
        Some(super::viewers::Ended::Deleted) => {
            return Err(Denial::new(403, "viewer_deleted", "viewer session ended"))
        }
        Some(super::viewers::Ended::Screens) => {
            return Err(Denial::new(
                403,
                "screens",
                "viewer session ended: a newer screen of this account took its place",
            ))
        }
    }
    if st.shared(verified.session, viewer.ip) && st.cfg.edge.token_block_shared {
        return Err(Denial::new(
            403,
            "token_shared",
            "token used from too many addresses",
        ));
    }
    let stream = st.lookup(stream_id, &verified).await?;
    if stream.max_viewers > 0 {
        if let (Some(v), Some(d)) = (&st.viewers, &st.directory) {
            if !v.is_known(&verified.session) {
                let n = d
                    .viewer_count(stream_id)
                    .await
                    .map_err(|_| Denial::STORE_DOWN)?;
                if n >= i64::from(stream.max_viewers) {
                    return Err(Denial::new(
                        403,
                        "max_viewers",
                        "too many viewers of this stream",
                    ));
                }
            }
        }
    }
    let redecided = match check_grant(st, req, &verified, &stream, &viewer).await? {
        Checked::Holds => None,
        Checked::Redecided(g) => Some(g),
        Checked::Redirect(to) => return Ok(Admission::Redirect(to)),
    };
    let country = check_place(st, req, &stream, &verified.scope, ip)?;
    let rules = verified.scope.rules.clone();
    let cap = rules.as_ref().and_then(|r| r.max_height);
    let base = &stream.origin.space().base;
    let rendition_refused = Denial::new(403, "rendition", "rendition not allowed for this token");
    let (origin_path, signed_target) = match target {
        // A grant with a resolution cap has its stream's own playlist (the master the
        // taller variants are cut from) and what that names, through `~r/` signatures.
        Target::InBase(rel) if cap.is_some() && rel != stream.playlist => {
            return Err(rendition_refused)
        }
        Target::InBase(rel) => ([base.as_str(), rel].concat(), false),
        Target::Rendition { sig, rel } => {
            let scope = crate::playlist::rendition_scope(rel.as_bytes());
            let scope = std::str::from_utf8(scope).unwrap_or_default();
            match cap {
                Some(cap) if st.keyring.verify_rendition(stream_id, cap, scope, sig) => {}
                _ => return Err(rendition_refused),
            }
            ([base.as_str(), rel].concat(), false)
        }
        Target::Signed { sig, path } => {
            if matches!(stream.origin, Origin::File { .. })
                || !st.keyring.verify_path(stream_id, path, sig)
            {
                return Err(Denial::new(
                    403,
                    "unsigned_path",
                    "path not signed for this stream",
                ));
            }
            (path.to_owned(), true)
        }
    };
    let mut parts: Vec<&str> = Vec::new();
    let named = query.named_text();
    // Without a signature the named parameters are the viewer's own: dropped (not
    // forwarded, not in the cache key).
    if let Some(sig) = query.sig {
        if !st
            .keyring
            .verify_query(stream_id, &origin_path, &named, sig)
        {
            return Err(Denial::new(
                403,
                "unsigned_query",
                "query not signed for this object",
            ));
        }
        if !named.is_empty() {
            parts.push(&named);
        }
    }
    parts.extend(query.directives.iter().copied());
    let origin_query = (!parts.is_empty()).then(|| parts.join("&"));
    // Last: a request refused for anything else takes no screen.
    screens(st, &verified, &viewer).await?;
    let token = match redecided {
        // The external handler judged the session again: the grant restarts from now.
        Some(g) => st.keyring.issue(&g),
        None => st.keyring.renew_for(tok, &verified, &viewer, st.ttl),
    };
    Ok(Admission::Object(Grant {
        kind,
        stream,
        origin_path,
        origin_query,
        token_renewed: token != tok || exchanged.is_some(),
        token,
        signed_target,
        session: verified.session,
        rules,
        ip,
        country,
    }))
}

/// Screens per account (`admin.max_screens_per_user`): a viewer session new to this edge,
/// whose credential was issued to an account (a login session's user, or the user whose
/// registered key signed it), takes one of the account's screens in the store, where
/// every edge counts them. Past the limit it is refused (403 `screens`), or, with
/// `admin.screens_full: end_oldest`, the account's oldest sessions are ended to make room.
async fn screens(st: &EdgeState, v: &Verified, viewer: &Viewer<'_>) -> Result<(), Denial> {
    let admin = &st.cfg.admin;
    let (Some(viewers), Some(d)) = (&st.viewers, &st.directory) else {
        return Ok(());
    };
    if admin.max_screens_per_user == 0 || viewers.is_known(&v.session) {
        return Ok(());
    }
    let login = v.scope.login.or(v.stored_session().then_some(v.session));
    let account = match login {
        Some(l) => match d.session(l).await {
            Ok(s) => s.map(|s| s.user_id),
            Err(_) => return Err(Denial::STORE_DOWN),
        },
        None => v.scope.key.as_ref().and_then(|k| k.owner),
    };
    let Some(account) = account else {
        return Ok(());
    };
    let full = || {
        Denial::new(
            403,
            "screens",
            "every screen of this account is in use: stop playing on another device",
        )
    };
    let end_oldest = admin.screens_full == crate::config::ScreensFull::EndOldest;
    if !end_oldest
        && st
            .screens_full
            .get(&account)
            .is_some_and(|holders| !holders.contains(&v.session))
    {
        return Err(full());
    }
    let now = crate::store::now_ms();
    let row = crate::store::ViewerSession {
        id: crate::store::session_hex(&v.session),
        stream_id: viewer.stream.to_owned(),
        ip: viewer.ip.to_string(),
        user_agent: viewer.ua.chars().take(512).collect(),
        edge: viewers.edge().to_owned(),
        first_seen: now,
        last_seen: now,
        bytes: 0,
        account: Some(account),
    };
    let claim = crate::store::ScreenClaim {
        account,
        default_max: admin.max_screens_per_user,
        end_oldest,
        since: now - super::viewers::LIVE_FOR.as_millis() as i64,
        now,
    };
    match d.claim_screen(row, claim).await {
        Ok(crate::store::Screens::Taken { ended }) => {
            viewers.end(&ended, super::viewers::Ended::Screens);
            Ok(())
        }
        Ok(crate::store::Screens::Full { holders }) => {
            let holders = holders
                .iter()
                .filter_map(|h| crate::store::session_bytes(h))
                .collect();
            st.screens_full.insert(account, Arc::new(holders));
            Err(full())
        }
        Err(_) => Err(Denial::STORE_DOWN),
    }
}

/// Where the viewer is and which page embeds the player: the stream's access rules, then
/// the credential's (both must allow, so a credential only narrows its stream's), then the
/// stream's `referers`. Answers the viewer's country when the edge has a database (for the
/// access log). Rules naming countries on an edge without a database cannot be decided:
/// refused (fail closed).
fn check_place(
    st: &EdgeState,
    req: &Request<'_>,
    stream: &Stream,
    scope: &Scope,
    ip: IpAddr,
) -> Result<Option<Country>, Denial> {
    let country = st.cfg.geoip.as_ref().map(|g| g.country(ip));
    for rules in [stream.access.as_deref(), scope.access.as_deref()]
        .into_iter()
        .flatten()
    {
        if rules.needs_country() && country.is_none() {
            return Err(Denial::new(
                403,
                "country",
                "country rules apply but this edge has no country database",
            ));
        }
        rules
            .check(ip, &mut || country.unwrap_or(crate::rules::UNKNOWN))
            .map_err(|r| Denial::new(403, r.reason(), r.message()).from_country(country))?;
    }
    if stream
        .referers
        .as_ref()
        .is_some_and(|r| !r.allows(req.referer))
    {
        return Err(
            Denial::new(403, "referer", "not allowed from this page (Referer)")
                .from_country(country),
        );
    }
    Ok(country)
}

/// The native token a request without one is admitted with: the first foreign mode whose
/// credentials it carries (see [`super::modes`]) checks them, then a native token is issued
/// for the same viewer session, bound to this viewer's address and User-Agent, ending with
/// the foreign token.
async fn exchange(
    st: &EdgeState,
    req: &Request<'_>,
    query: &Query<'_>,
    viewer: &Viewer<'_>,
) -> Result<Exchange, Denial> {
    if !crate::stream::valid_stream_id(viewer.stream) {
        return Err(Denial::new(404, "unknown_stream", "unknown stream"));
    }
    // A player re-requesting the same URL (a media playlist's refresh carries the foreign
    // token again) gets the token it was given while that is in the first half of its
    // life: no signature check, no new token, and the same URIs in its playlist.
    let key = exchange_key(st, req, viewer);
    if let Some((token, v)) = st.exchanges.get(&key) {
        // The same address and User-Agent (they are in the key), so the binding holds; the
        // grant is checked again by `check_grant` like any other.
        if v.exp.saturating_sub(viewer.now) > st.ttl / 2 && viewer.now < v.session_exp {
            return Ok(Exchange::Token(token, v));
        }
    }
    // An address that has failed this second's credential checks is not given another
    // (an ES384 check costs ~0.2 ms: a flood of forged JWTs must not buy the CPU that
    // admitted viewers need). Its answer waits for the next second, when the address may
    // be checked again: a flooding connection gets one answer a second instead of one as
    // fast as it can ask (refused at once, 17,000 a second from one wrk cost admitted
    // viewers 30 % of their throughput: bench/flood.sh). Only the connection waits.
    if st.checks_exhausted(viewer.ip, viewer.now) {
        tokio::time::sleep(until_next_second()).await;
        return Err(Denial::new(
            429,
            "verify_rate",
            "too many failed credentials from this address",
        ));
    }
    // A JWT naming a key that is not configured may name one a user registered.
    let stored_key = match (&st.directory, query.token) {
        (Some(d), Some(t)) => match crate::token::jwt::JwtKeys::kid_of(t) {
            Some(kid) if !st.jwt_keys.has_kid(&kid) => {
                d.playback_key(&kid).await.map_err(|_| Denial::STORE_DOWN)?
            }
            _ => None,
        },
        _ => None,
    };
    let facts = super::modes::Facts {
        st,
        req,
        query,
        viewer,
        stored_key,
    };
    let f = match super::modes::verify(&facts) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            if matches!(e, TokenError::Forged | TokenError::Malformed) {
                st.check_failed(viewer.ip, viewer.now);
            }
            return Err(Denial::token(e));
        }
        // No credentials at all: the platform's handler may decide.
        None => match external(st, req, viewer).await? {
            Ok(f) => f,
            Err(to) => return Ok(Exchange::Redirect(to)),
        },
    };
    let grant = exchanged_grant(st, viewer, f.session, f.exp, f.scope);
    let Some(token) = st.keyring.try_issue(&grant) else {
        return Err(Denial::new(
            401,
            "malformed",
            "token rules too long (allowed origins, viewer id, access rules)",
        ));
    };
    let v = st.keyring.verify(&token, viewer).map_err(Denial::token)?;
    // A credential signed with a key a user registered is verified again each time: once
    // the key is deleted it proves nothing (401), where its exchanged tokens are revoked
    // (403, `check_grant`).
    if v.scope.key.as_ref().is_none_or(|k| k.owner.is_none()) {
        st.exchanges.insert(key, (token.clone(), v.clone()));
    }
    Ok(Exchange::Token(token, v))
}

/// How long until the next whole second of the system clock (when failed-check counts
/// start again).
fn until_next_second() -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::time::Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()))
}

/// The native grant a foreign credential (or an external decision) is exchanged for: the
/// viewer session it opens, bound to this viewer's address and User-Agent, ending with the
/// credential (`session_exp`), renewed every `tokens.ttl`, carrying its scope.
fn exchanged_grant(
    st: &EdgeState,
    viewer: &Viewer<'_>,
    session: [u8; 16],
    session_exp: u32,
    scope: Scope,
) -> TokenGrant {
    TokenGrant {
        stream: viewer.stream.to_owned(),
        session,
        exp: session_exp.min(viewer.now.saturating_add(st.ttl)),
        session_exp,
        binding: Binding {
            ip: Some((viewer.ip, st.cfg.tokens.prefix_for(viewer.ip))),
            ua: Some(viewer.ua.to_owned()),
        },
        stored_session: false,
        scope,
    }
}

/// What a request without a native token is let in with.
enum Exchange {
    /// A native token for the viewer, and the token checked.
    Token(String, Verified),
    /// The external handler redirects the viewer.
    Redirect(String),
}

/// What [`check_grant`] found.
enum Checked {
    Holds,
    /// An external grant was judged again and allowed: the grant to issue from now on.
    Redecided(TokenGrant),
    /// The external handler, asked again, redirects the viewer.
    Redirect(String),
}

/// What the grant a verified token carries allows for this request, decided the same on
/// every edge from the token and the store alone: the stream admits the way in; the key
/// that verified the credential is still configured or registered (and a registered key
/// opens only its owner's streams); the login session it names is live and the stream's
/// owner's; a JWT's rules hold (strict origin, viewer id not revoked); an external
/// decision older than `cache_ttl` is asked again.
async fn check_grant(
    st: &EdgeState,
    req: &Request<'_>,
    v: &Verified,
    stream: &Stream,
    viewer: &Viewer<'_>,
) -> Result<Checked, Denial> {
    let scope = &v.scope;
    if !stream.admits(scope.mode) {
        return Err(Denial::new(
            403,
            "mode",
            "this stream does not admit this kind of token",
        ));
    }
    let key_gone = Denial::new(403, "key_revoked", "the key that signed this token is gone");
    match (&scope.key, scope.mode) {
        (Some(k), Mode::Jwt) if k.owner.is_some() => {
            if k.owner != stream.owner {
                return Err(Denial::token(TokenError::WrongStream));
            }
            // Registered by a user: deleting it ends what it let in (every edge within
            // `store.cache_ttl`). Without a store it cannot be known: refused.
            let Some(d) = &st.directory else {
                return Err(key_gone);
            };
            match d.playback_key(&k.kid).await {
                Ok(Some(sk)) if Some(sk.user_id) == k.owner => {}
                Ok(_) => return Err(key_gone),
                Err(_) => return Err(Denial::STORE_DOWN),
            }
        }
        (Some(k), Mode::Jwt) if !st.jwt_keys.has_kid(&k.kid) => return Err(key_gone),
        (Some(k), Mode::CloudFront) if !st.has_cloudfront_key(&k.kid) => return Err(key_gone),
        (_, Mode::Akamai) if st.cfg.tokens.akamai.is_none() => return Err(key_gone),
        (_, Mode::SecureLink) if st.cfg.tokens.secure_link.is_none() => return Err(key_gone),
        _ => {}
    }
    if let Some(login) = scope.login {
        let ended = Denial::token(TokenError::SessionEnded);
        let Some(d) = &st.directory else {
            return Err(ended);
        };
        match d.session(login).await {
            Ok(Some(s)) if stream.owner.is_none_or(|o| o == s.user_id) => {}
            Ok(_) => return Err(ended),
            Err(_) => return Err(Denial::STORE_DOWN),
        }
    }
    if let Some(r) = &scope.rules {
        if r.strict_origin && !req.origin.is_some_and(|o| r.allows_origin(o)) {
            return Err(Denial::new(
                403,
                "origin",
                "origin not allowed for this token",
            ));
        }
        if let Some(id) = &r.viewer_id {
            if st.viewer_revoked(&stream.id, id).await {
                return Err(Denial::new(403, "revoked", "viewer revoked"));
            }
        }
    }
    if let Some(e) = scope.external {
        let Some(ext) = &st.external else {
            // Nobody left to ask: an external grant cannot be confirmed (fail closed).
            return Err(external_denied());
        };
        let ttl = ext.config().cache_ttl.as_secs().min(u32::MAX as u64) as u32;
        if viewer.now >= e.decided_at.saturating_add(ttl) {
            // The handler's decisions are remembered `cache_ttl` too: one call per session
            // and period, on each edge.
            let (msg, _) = external_message(req, viewer);
            return match ext.decide(v.session, || msg).await {
                (super::external::Decision::Allow, fallback) => {
                    let (exp, grant) = external_grant(st, viewer, fallback);
                    Ok(Checked::Redecided(exchanged_grant(
                        st,
                        viewer,
                        v.session,
                        exp,
                        Scope {
                            external: Some(grant),
                            ..scope.clone()
                        },
                    )))
                }
                (super::external::Decision::Redirect(to), _) => Ok(Checked::Redirect(to)),
                (super::external::Decision::Deny, _) => Err(external_denied()),
            };
        }
    }
    Ok(Checked::Holds)
}

fn external_denied() -> Denial {
    Denial::new(403, "external", "playback refused by the platform")
}

/// What the external handler is told about this request, and the viewer session its
/// decision belongs to (see [`super::external::session_of`]).
fn external_message<'a>(
    req: &Request<'a>,
    viewer: &Viewer<'a>,
) -> (super::external::Message<'a>, [u8; 16]) {
    let mut m = super::external::Message {
        host: req.host.unwrap_or(""),
        url: match req.query {
            Some(q) => format!("{}?{q}", req.path),
            None => req.path.to_owned(),
        },
        ip: viewer.ip.to_string(),
        user_agent: viewer.ua,
        referer: req.referer,
        session_id: String::new(),
        session_type: "HLS",
    };
    let session = super::external::session_of(viewer.stream, &m);
    m.session_id = crate::store::session_hex(&session);
    (m, session)
}

/// When an external allow made now ends, and its record. An answer of the handler lasts
/// `tokens.session_ttl` (asked again every `cache_ttl`); a fail-open allow
/// (`allow_by_default` while the handler did not answer) ends after `cache_ttl` and is
/// never renewed past it.
fn external_grant(st: &EdgeState, viewer: &Viewer<'_>, fail_open: bool) -> (u32, ExternalGrant) {
    let secs = |d: std::time::Duration| d.as_secs().min(u32::MAX as u64) as u32;
    let life = match (&st.external, fail_open) {
        (Some(ext), true) => secs(ext.config().cache_ttl).max(1),
        _ => secs(st.cfg.tokens.session_ttl),
    };
    (
        viewer.now.saturating_add(life),
        ExternalGrant {
            decided_at: viewer.now,
            fail_open,
        },
    )
}

/// A viewer with no credentials, when `auth.external` is configured and the stream admits
/// it: the handler's decision. `Ok(Err(url))`: redirect.
async fn external(
    st: &EdgeState,
    req: &Request<'_>,
    viewer: &Viewer<'_>,
) -> Result<Result<super::modes::Foreign, String>, Denial> {
    let missing = Denial::route(playback::RouteError::MissingToken);
    let Some(ext) = &st.external else {
        return Err(missing);
    };
    // A static stream that does not admit the handler's decisions is not worth a call.
    if st
        .streams
        .get(viewer.stream)
        .is_some_and(|s| !s.admits(Mode::External))
    {
        return Err(missing);
    }
    let (msg, session) = external_message(req, viewer);
    match ext.decide(session, || msg).await {
        (super::external::Decision::Allow, fallback) => {
            let (exp, grant) = external_grant(st, viewer, fallback);
            Ok(Ok(super::modes::Foreign {
                exp,
                session,
                scope: Scope {
                    mode: Mode::External,
                    external: Some(grant),
                    ..Scope::default()
                },
            }))
        }
        (super::external::Decision::Redirect(to), _) => Ok(Err(to)),
        (super::external::Decision::Deny, _) => Err(external_denied()),
    }
}

/// What an exchange depends on: the path (CloudFront, Akamai and secure_link credentials
/// may open one path only), the authority (CloudFront policies name it), the `Referer`
/// (the external handler judges it), the viewer, and every credential the request carries
/// (the query and the cookies), hashed to 128 bits with a key random per process (SipHash: a
/// viewer cannot aim a collision at another's entry).
fn exchange_key(st: &EdgeState, req: &Request<'_>, viewer: &Viewer<'_>) -> u128 {
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_key(&st.exchange_key);
    let mut field = |b: &[u8]| {
        h.write_usize(b.len());
        h.write(b);
    };
    field(req.path.as_bytes());
    field(req.host.unwrap_or("").as_bytes());
    field(req.referer.as_bytes());
    match viewer.ip {
        IpAddr::V4(a) => field(&a.octets()),
        IpAddr::V6(a) => field(&a.octets()),
    }
    field(viewer.ua.as_bytes());
    field(req.query.unwrap_or("").as_bytes());
    for c in &req.cookies {
        field(c.as_bytes());
    }
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::token::Keyring;
    use std::path::Path;

    const NOW: u32 = 1_000_000;

    fn state() -> EdgeState {
        let cfg = Config::parse(
            "origins:\n  allow: [\"127.0.0.1:9000\"]\nstreams:\n  s1: { url: \"http://127.0.0.1:9000/live/s1/index.m3u8\" }\n  s2: { url: \"http://127.0.0.1:9000/live/s2/index.m3u8\" }\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let keyring = Keyring::from_text(
            "1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n",
        )
        .unwrap();
        EdgeState::new(Arc::new(cfg), Arc::new(keyring), None)
    }

    fn token(st: &EdgeState, stream: &str, exp: u32, session_exp: u32, bind: bool) -> String {
        st.keyring.issue(&TokenGrant {
            stream: stream.into(),
            session: [7; 16],
            exp,
            session_exp,
            binding: Binding {
                ip: bind.then(|| ("192.0.2.1".parse().unwrap(), 32)),
                ua: bind.then(|| "ua".into()),
            },
            stored_session: false,
            scope: Scope::path(),
        })
    }

    fn req<'a>(path: &'a str, query: Option<&'a str>) -> Request<'a> {
        Request {
            method: &http::Method::GET,
            version: http::Version::HTTP_11,
            path,
            query,
            has_host: true,
            peer: "192.0.2.1".parse().unwrap(),
            forwarded_for: Vec::new(),
            user_agent: "ua",
            host: Some("edge.example"),
            cookies: Vec::new(),
            origin: None,
            referer: "",
        }
    }

    fn run(st: &EdgeState, r: &Request<'_>) -> Result<Admission, Denial> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(authorize(st, r, NOW))
    }

    fn grant(st: &EdgeState, r: &Request<'_>) -> Grant {
        match run(st, r) {
            Ok(Admission::Object(g)) => g,
            other => panic!("{other:?}"),
        }
    }

    fn denied(st: &EdgeState, r: &Request<'_>) -> (u16, &'static str) {
        match run(st, r) {
            Err(d) => (d.status, d.reason),
            Ok(a) => panic!("admitted: {a:?}"),
        }
    }

    #[test]
    fn access_rules_of_stream_and_credential_both_apply_and_referers_are_checked() {
        let cfg = Config::parse(
            "origins:\n  allow: [\"127.0.0.1:9000\"]\nstreams:\n  s1:\n    url: \"http://127.0.0.1:9000/live/s1/index.m3u8\"\n    access_rules:\n      - {type: ip.src, ip: [\"192.0.2.0/25\"], action: allow}\n      - {type: any, action: block}\n    referers: [\"*.example.com\", none]\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let keyring = Keyring::from_text(
            "1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n",
        )
        .unwrap();
        let st = EdgeState::new(Arc::new(cfg), Arc::new(keyring), None);
        let with_access = |json: serde_json::Value| {
            let access = crate::rules::AccessRules::from_json(&json).unwrap();
            st.keyring.issue(&TokenGrant {
                stream: "s1".into(),
                session: [7; 16],
                exp: NOW + 100,
                session_exp: NOW + 100,
                binding: Binding::default(),
                stored_session: false,
                scope: Scope {
                    access: Some(Arc::new(access)),
                    ..Scope::path()
                },
            })
        };
        let t = token(&st, "s1", NOW + 100, NOW + 100, false);
        let p = format!("/api/hls/{t}/s1/index.m3u8");
        let mut r = req(&p, None);
        grant(&st, &r);
        // The stream's rules: 192.0.2.200 is outside its allowed network.
        r.peer = "192.0.2.200".parse().unwrap();
        assert_eq!(denied(&st, &r), (403, "network"));
        r.peer = "192.0.2.1".parse().unwrap();
        // Referers: a listed page, none, and another page.
        r.referer = "https://www.example.com/watch";
        grant(&st, &r);
        r.referer = "https://evil.test/";
        assert_eq!(denied(&st, &r), (403, "referer"));
        r.referer = "";
        // A credential's rules narrow the stream's...
        let narrow = with_access(serde_json::json!([
            {"type": "ip.src", "ip": ["192.0.2.1"], "action": "block"}
        ]));
        let p = format!("/api/hls/{narrow}/s1/index.m3u8");
        assert_eq!(denied(&st, &req(&p, None)), (403, "network"));
        // ...and never widen them: allowing everything still leaves the stream's block.
        let wide = with_access(serde_json::json!([{"type": "any", "action": "allow"}]));
        let p = format!("/api/hls/{wide}/s1/index.m3u8");
        let mut r = req(&p, None);
        grant(&st, &r);
        r.peer = "198.51.100.1".parse().unwrap();
        assert_eq!(denied(&st, &r), (403, "network"));
        // Country rules on an edge without a database cannot be decided: refused.
        let by_country = with_access(serde_json::json!([
            {"type": "ip.geoip.country", "country": ["DE"], "action": "block"}
        ]));
        let p = format!("/api/hls/{by_country}/s1/index.m3u8");
        assert_eq!(denied(&st, &req(&p, None)), (403, "country"));
    }

    #[test]
    fn a_good_token_opens_its_stream() {
        let st = state();
        let t = token(&st, "s1", NOW + 100, NOW + 100, false);
        let p = format!("/api/hls/{t}/s1/v0/seg1.ts");
        let g = grant(&st, &req(&p, None));
        assert_eq!(g.origin_uri(), "/live/s1/v0/seg1.ts");
        assert_eq!(g.kind, Kind::Segment);
        assert!(!g.token_renewed);
    }

    #[test]
    fn every_refusal_has_its_status_and_reason() {
        let st = state();
        let t = token(&st, "s1", NOW + 100, NOW + 100, true);
        let old = token(&st, "s1", NOW - 1, NOW - 1, false);
        let p = |rest: &str| format!("/api/hls/{t}/s1/{rest}");
        let seg = p("a.ts");
        let mut no_host = req(&seg, None);
        no_host.has_host = false;
        assert_eq!(denied(&st, &no_host), (400, "bad_request"));
        let mut http10 = req(&seg, None);
        (http10.has_host, http10.version) = (false, http::Version::HTTP_10);
        grant(&st, &http10);
        let mut post = req(&seg, None);
        post.method = &http::Method::POST;
        assert_eq!(denied(&st, &post), (405, "method"));
        assert_eq!(denied(&st, &req("/nope", None)), (404, "route"));
        assert_eq!(denied(&st, &req("/api/hls/", None)), (401, "route"));
        for bad in ["..;/x.ts", "%252e%252e/x.ts", "a/../../x.ts"] {
            assert_eq!(denied(&st, &req(&p(bad), None)), (400, "route"), "{bad}");
        }
        assert_eq!(
            denied(&st, &req(&seg, Some("_HLS_msn=abc"))),
            (400, "route")
        );
        let forged = format!("/api/hls/{}x/s1/a.ts", &t[..t.len() - 1]);
        assert_eq!(denied(&st, &req(&forged, None)).0, 401);
        let expired = format!("/api/hls/{old}/s1/a.ts");
        assert_eq!(denied(&st, &req(&expired, None)), (401, "expired"));
        let other = format!("/api/hls/{t}/s2/a.ts");
        assert_eq!(denied(&st, &req(&other, None)), (403, "wrong_stream"));
        let mut elsewhere = req(&seg, None);
        elsewhere.peer = "198.51.100.9".parse().unwrap();
        assert_eq!(denied(&st, &elsewhere), (403, "wrong_viewer"));
        let unknown = token(&st, "zz", NOW + 100, NOW + 100, false);
        let unknown = format!("/api/hls/{unknown}/zz/a.ts");
        assert_eq!(denied(&st, &req(&unknown, None)), (404, "unknown_stream"));
        let unsigned = p("~o/AAAAAAAAAAAAAAAAAA/keys/k.bin");
        assert_eq!(denied(&st, &req(&unsigned, None)), (403, "unsigned_path"));
        assert_eq!(
            denied(&st, &req(&seg, Some("x=1&hlsq=AAAAAAAAAAAAAAAAAA"))),
            (403, "unsigned_query")
        );
    }

    #[test]
    fn viewer_queries_are_dropped_but_delivery_directives_and_signed_queries_kept() {
        let st = state();
        let t = token(&st, "s1", NOW + 100, NOW + 100, false);
        let seg = format!("/api/hls/{t}/s1/a.ts");
        for q in ["cb=1", "cb=2", "x=1&y=2", "_HLS_foo=1"] {
            assert_eq!(
                grant(&st, &req(&seg, Some(q))).origin_uri(),
                "/live/s1/a.ts"
            );
        }
        let pl = format!("/api/hls/{t}/s1/index.m3u8");
        let g = grant(&st, &req(&pl, Some("cb=9&_HLS_msn=12&_HLS_part=3")));
        assert_eq!(
            g.origin_uri(),
            "/live/s1/index.m3u8?_HLS_msn=12&_HLS_part=3"
        );
        let sig = st.keyring.sign_query("s1", "/live/s1/a.ts", "v=2");
        let q = format!("v=2&hlsq={sig}&_HLS_skip=YES");
        let g = grant(&st, &req(&seg, Some(&q)));
        assert_eq!(g.origin_uri(), "/live/s1/a.ts?v=2&_HLS_skip=YES");
        // the same signature for another value, path or stream: refused
        let q = format!("v=3&hlsq={sig}");
        assert_eq!(denied(&st, &req(&seg, Some(&q))).0, 403);
        let b = format!("/api/hls/{t}/s1/b.ts");
        let q = format!("v=2&hlsq={sig}");
        assert_eq!(denied(&st, &req(&b, Some(&q))).0, 403);
    }

    #[test]
    fn signed_out_of_base_paths_open_exactly_that_path() {
        let st = state();
        let t = token(&st, "s1", NOW + 100, NOW + 100, false);
        let sig = st.keyring.sign_path("s1", "/keys/k.bin");
        let p = format!("/api/hls/{t}/s1/~o/{sig}/keys/k.bin");
        let g = grant(&st, &req(&p, None));
        assert_eq!(g.origin_uri(), "/keys/k.bin");
        assert!(g.signed_target);
        let p = format!("/api/hls/{t}/s1/~o/{sig}/keys/other.bin");
        assert_eq!(denied(&st, &req(&p, None)), (403, "unsigned_path"));
        let p = format!("/api/hls/{t}/s2/~o/{sig}/keys/k.bin");
        assert_eq!(denied(&st, &req(&p, None)).0, 403);
    }

    #[test]
    fn unbound_tokens_renew_only_within_their_own_cap() {
        let st = state();
        // 20 s token whose cap is its own expiry (what `hlsgate token --ttl 20` issues)
        let t = token(&st, "s1", NOW + 20, NOW + 20, false);
        let p = format!("/api/hls/{t}/s1/a.ts");
        let g = grant(&st, &req(&p, None));
        // less than half of tokens.ttl (300 s) left: X-New-Token is re-derived, capped at
        // the token's own end
        let renewed = st
            .keyring
            .verify(
                &g.token,
                &Viewer {
                    stream: "s1",
                    ip: "192.0.2.1".parse().unwrap(),
                    ua: "ua",
                    now: NOW + 21,
                },
            )
            .unwrap_err();
        assert_eq!(
            renewed,
            TokenError::Expired,
            "the renewal dies with the token"
        );
    }
}
