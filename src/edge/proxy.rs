//! The `ProxyHttp` implementation: each Pingora phase dispatches to plain Rust. Who gets in
//! is decided by [`super::admission::authorize`] from the request's facts; this layer
//! gathers them, applies the answer, and keeps the origin in its place on the way back
//! (media types only, its cookies and CORS headers dropped, redirects and error pages
//! replaced by the edge's own JSON answers).

use super::admission::{self, Admission, Denial, Request};
use super::cors::Cors;
use super::{access, file, respond, shield, EdgeState};
use crate::cache::content_length;
use crate::media::{self, Kind};
use crate::metrics::METRICS;
use crate::origin::Origin;
use crate::playback;
use crate::playlist::{EdgeUris, Rewriter};
use crate::token;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheHashKey;
use pingora_cache::{CacheKey, CachePhase, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::RangeType;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state.
pub struct Ctx {
    kind: Kind,
    stream: Option<Arc<crate::stream::Stream>>,
    /// Absolute origin path of the object (no query).
    origin_path: String,
    /// What the origin request's URI becomes: `origin_path` + the query admission let
    /// through (a signed playlist-named query, LL-HLS directives).
    upstream_uri: String,
    /// The token handed back in `X-New-Token` and written into rewritten playlists.
    token: String,
    rewriter: Option<Rewriter<EdgeUris>>,
    status: u16,
    deny: Option<&'static str>,
    /// The viewer's country (`geoip.database`), for the access log.
    country: Option<crate::rules::Country>,
    /// Why the edge failed the request, for the JSON answer of `fail_to_proxy`.
    failure: Option<&'static str>,
    /// The body comes from the segment cache (a hit or a stale hit).
    from_cache: bool,
    /// When the origin was asked (the origin latency histogram and
    /// `edge.origin_total_timeout`).
    fetch_start: Option<Instant>,
    /// When the request began (the access log's duration).
    started: Instant,
    /// Time spent in the rewriter for this playlist so far.
    rewrite_time: Duration,
    /// The origin playlist's length when known, and how much of it went through the
    /// rewriter: Pingora ends a body served from the cache's fill without an
    /// end-of-stream flag, so the length is how the rewriter knows it has the last line.
    playlist_len: Option<u64>,
    playlist_fed: u64,
    /// The viewer's token was renewed: the playlist must carry the new one everywhere.
    token_renewed: bool,
    /// The request came through a `~o/` signed path (relative URIs would not resolve).
    signed_target: bool,
    /// The cached playlist this rewrite may prove verbatim (see `EdgeState::verbatim`).
    verbatim_key: Option<super::VerbatimKey>,
    /// The CORS answer (see `cors`).
    cors: Cors,
    /// A JWT's rules for this viewer session (resolution cap).
    rules: Option<Arc<crate::token::jwt::Rules>>,
    /// The viewer session and address an admitted request belongs to (viewer reports).
    viewer: Option<([u8; 16], IpAddr)>,
    /// A cached playlist already rewritten whole (see `rewrite_whole`): the body to send
    /// instead of the cached one.
    rewritten: Option<Bytes>,
    /// This process is the shield for this request (another edge asked, see `shield`): the
    /// origin's bytes and headers go back as they are.
    shield: bool,
    /// Answered from the segment cache in `request_filter` (see `serve_fresh_hit`): the
    /// cache label ("hit"; "stale" or "failed" while the origin's failure is remembered;
    /// "updating" while a background refresh runs).
    early_hit: Option<&'static str>,
    /// The in-flight share of the cache this request's fill holds (see
    /// `SegmentStore::try_reserve`): given back when the request ends.
    reserved: Option<crate::cache::Reservation>,
    /// A background refresh of a stale object (a Pingora subrequest, see
    /// `EdgeState::refreshes`): no viewer, nothing logged or rewritten.
    background: bool,
}

impl Ctx {
    /// The cache key's primary text: the origin object, never the viewer's token.
    /// `EdgeState::failed` is keyed by it too.
    fn cache_primary(&self) -> Option<String> {
        let space = self.stream.as_ref()?.origin.space();
        // (concatenated, not `format!`: this is on every cached answer's path)
        Some(
            [
                space.scheme.unwrap_or("file"),
                "://",
                &space.authority,
                &self.upstream_uri,
            ]
            .concat(),
        )
    }

    /// The object's key in the segment cache (see `cache_primary`).
    fn cache_key(&self) -> Option<CacheKey> {
        Some(CacheKey::new(self.cache_primary()?, ""))
    }
}

pub struct EdgeProxy {
    /// The state as of the last config (re)load.
    pub live: super::Live,
    /// Where the request lines go (`edge.access_log`).
    pub access: Option<Arc<super::access::AccessLog>>,
}

/// The origin response headers that reach viewers (SPEC "Grants"): an allow-list, so that
/// whatever an origin adds tomorrow stays at the edge. `Transfer-Encoding` is framing,
/// kept for the HTTP/1 writer; the edge's own headers are added after.
pub const ORIGIN_HEADERS: [&str; 10] = [
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "age",
    "transfer-encoding",
];

/// Remove every origin header but [`ORIGIN_HEADERS`] (and `Vary` when `vary`: the cache
/// policy reads it before the response is stored).
fn keep_origin_headers(resp: &mut ResponseHeader, vary: bool) {
    let drop: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            !(ORIGIN_HEADERS.contains(&n) || vary && n == "vary")
        })
        .cloned()
        .collect();
    for name in &drop {
        resp.remove_header(name);
    }
}

/// The key of a background refresh in `EdgeState::refreshes`: the viewer's request's path
/// and query. Not its whole URI: Pingora makes the refresh's request from the viewer's
/// written as HTTP/1.1, whose URI is the path and query alone, while an h2 request's URI
/// has the scheme and authority too.
fn refresh_key(req: &RequestHeader) -> String {
    req.uri
        .path_and_query()
        .map_or_else(|| req.uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// The request's authority: the `Host` header, or HTTP/2's `:authority` (which browsers
/// send instead of `Host`). A `Host` that is not even text is kept as a control byte, so
/// that admission refuses it (400) rather than taking it for absent.
fn request_authority(req: &RequestHeader) -> Option<&str> {
    match req.headers.get(http::header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{0}")),
        None => req.uri.authority().map(|a| a.as_str()),
    }
}

fn bad_gateway(msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(502), msg)
}

/// The address to connect to for `host:port`: the host itself when it is an address, else
/// the first address it resolves to; either only if `allowed` takes it. A failed lookup is
/// a 502 named `what`.
async fn resolve(
    host: &str,
    port: u16,
    what: &'static str,
    allowed: impl Fn(IpAddr) -> bool,
) -> Result<Option<SocketAddr>> {
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => allowed(ip).then_some(SocketAddr::new(ip, port)),
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::because(ErrorType::HTTPStatus(502), what, e))?
            .find(|a| allowed(a.ip())),
    })
}

/// Request headers that reach the origin (besides `Host` and the edge's own
/// `User-Agent`): conditional requests for revalidation and `Range`. Nothing else a
/// viewer sends can shape what the origin answers, and so what is cached for everyone.
const FORWARDED_HEADERS: [http::HeaderName; 6] = [
    http::header::RANGE,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
];

/// (a name, not a `&str`: a lookup by `&str` parses the name first)
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The `User-Agent` the edge sends to origins.
const EDGE_UA: &str = concat!("hlsgate/", env!("CARGO_PKG_VERSION"));

impl EdgeProxy {
    /// The current state (a SIGHUP may have replaced it since the last request).
    fn state(&self) -> arc_swap::Guard<Arc<EdgeState>> {
        self.live.load()
    }

    /// Authorise and route one request. `Ok(true)`: a response was written.
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Held across awaits (the store, the external handler): an owned reference.
        let st = self.live.load_full();
        if session.subrequest_ctx.is_some() {
            // Pingora's background refresh of a stale object (see `should_serve_stale`):
            // it fetches what the viewer who started it was admitted to, nothing else.
            ctx.background = true;
            let uri = refresh_key(session.req_header());
            let Some(r) = st.refreshes.remove(&uri) else {
                ctx.status = 403;
                respond::error(session, 403, "no refresh", &ctx.cors).await?;
                return Ok(true);
            };
            ctx.kind = r.kind;
            ctx.origin_path = r.origin_path.clone();
            ctx.upstream_uri = r.upstream_uri.clone();
            ctx.stream = Some(r.stream.clone());
            return Ok(false);
        }
        // Pingora keeps an idle HTTP/1 keep-alive connection open forever unless told
        // otherwise: bound it, so idle sockets cannot pile up.
        let idle = st.cfg.edge.idle_timeout.as_secs().max(1);
        if super::draining() {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some_and(|k| k == 0 || k > idle) {
            session.set_keepalive(Some(idle));
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(SocketAddr::ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let req = session.req_header();
        let facts = Request {
            method: &req.method,
            version: req.version,
            path: req.uri.path(),
            query: req.uri.query(),
            has_host: req.headers.contains_key(http::header::HOST),
            peer,
            forwarded_for: req
                .headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
            user_agent: req
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            host: request_authority(req),
            cookies: req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
            origin: req
                .headers
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok()),
            referer: req
                .headers
                .get(http::header::REFERER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        };
        if facts.path.starts_with(shield::PREFIX) {
            let header = req.headers.get(shield::HEADER_NAME).map(|v| v.as_bytes());
            let admitted = shield::admit(
                &st.keyring,
                facts.method,
                facts.path,
                facts.query,
                header,
                token::unix_now(),
            );
            return match admitted {
                Ok(o) => {
                    ctx.shield = true;
                    ctx.kind = o.kind;
                    ctx.origin_path = o.origin_path;
                    ctx.upstream_uri = o.upstream_uri;
                    ctx.stream = Some(o.stream);
                    Ok(false)
                }
                Err(d) => {
                    ctx.kind = Kind::of(facts.path);
                    self.deny(session, ctx, d).await
                }
            };
        }
        ctx.cors = Cors::by_config(&st.cfg.edge.cors_allow_origins, facts.origin);
        if req.method == http::Method::OPTIONS
            && matches!(
                playback::parse(facts.path),
                Ok(playback::Route::Hls { .. } | playback::Route::Query { .. })
            )
        {
            ctx.status = 204;
            ctx.cors.preflight(session).await?;
            return Ok(true);
        }
        let decided = admission::authorize(&st, &facts, token::unix_now()).await;
        let g = match decided {
            Ok(Admission::Object(g)) => g,
            Ok(Admission::Health) => {
                let mut h = ResponseHeader::build(200, Some(3))?;
                h.insert_header("Content-Type", "text/plain")?;
                h.insert_header("Content-Length", "3")?;
                h.insert_header("X-Content-Type-Options", "nosniff")?;
                session.write_response_header(Box::new(h), false).await?;
                session
                    .write_response_body(Some(Bytes::from_static(b"ok\n")), true)
                    .await?;
                ctx.status = 200;
                return Ok(true);
            }
            Ok(Admission::Redirect(to)) => {
                let mut h = ResponseHeader::build(302, Some(4))?;
                h.insert_header("Location", to.as_str())?;
                h.insert_header("Content-Length", "0")?;
                h.insert_header("Cache-Control", "no-store")?;
                ctx.cors.apply(&mut h)?;
                session.write_response_header(Box::new(h), true).await?;
                ctx.status = 302;
                return Ok(true);
            }
            Err(d) => {
                // The kind the path names, for the metrics' labels.
                ctx.kind = Kind::of(facts.path);
                return self.deny(session, ctx, d).await;
            }
        };
        METRICS.saw_session(g.session, &g.stream.id);
        ctx.viewer = Some((g.session, g.ip));
        ctx.country = g.country;
        ctx.cors = std::mem::take(&mut ctx.cors).with_rules(g.rules.as_deref(), facts.origin);
        ctx.rules = g.rules.clone();
        ctx.kind = g.kind;
        ctx.upstream_uri = g.origin_uri();
        ctx.token_renewed = g.token_renewed;
        ctx.signed_target = g.signed_target;
        ctx.token = g.token;
        ctx.origin_path = g.origin_path;
        ctx.stream = Some(g.stream.clone());

        if let Origin::File { dir, .. } = &g.stream.origin {
            let rewrite = (ctx.kind == Kind::Playlist).then(|| self.rewriter(ctx));
            let rel = &ctx.origin_path[g.stream.origin.space().base.len()..];
            let ct = Kind::content_type(rel).as_bytes();
            if !st.cfg.origins.is_media(Some(ct)) {
                let d = Denial::new(502, "origin_type", "origin sent a non-media type");
                return self.deny(session, ctx, d).await;
            }
            let served = file::serve(session, dir, rel, rewrite, &ctx.token, &ctx.cors).await?;
            ctx.status = served.status;
            return Ok(true);
        }
        Ok(false)
    }

    async fn deny(&self, session: &mut Session, ctx: &mut Ctx, d: Denial) -> Result<bool> {
        ctx.status = d.status;
        ctx.deny = Some(d.reason);
        ctx.country = d.country.or(ctx.country);
        respond::error(session, d.status, d.message, &ctx.cors).await?;
        Ok(true)
    }

    fn rewriter(&self, ctx: &Ctx) -> Rewriter<EdgeUris> {
        let stream = ctx.stream.as_ref().expect("set before rewriting");
        let prefix = playback::prefix(&ctx.token, &stream.id).into_bytes();
        let keyring = self.state().keyring.clone();
        let uris = EdgeUris::new(
            stream.origin.space().clone(),
            prefix,
            &ctx.origin_path,
            keyring.clone(),
            &stream.id,
        );
        match self.max_height(ctx) {
            // A capped grant: taller variants cut from masters, and every URI carries the
            // signature of the rendition scope it opens (admission refuses the rest).
            Some(h) => Rewriter::new(uris.capped(h, keyring, &stream.id)).cut_ladder(h),
            // The seed's way: relative URIs keep working with no rewriting, since the token
            // is in the path. Only a renewed token must be written into them.
            None if ctx.token_renewed || ctx.signed_target => Rewriter::new(uris),
            None => Rewriter::new(uris.keep_plain_relative()),
        }
    }

    /// A small complete playlist from the cache is rewritten whole, before its header
    /// leaves: it then goes out with its new `Content-Length` in one write, rather than as a
    /// chunked body (header, chunk and last chunk: three writes). `Ok(None)`: not this case
    /// (too big to hold twice, or invalid: it then fails the way it does for the viewer whose
    /// fetch filled the cache, streamed and cut at the bad line); `resp` is untouched then.
    fn rewrite_whole(
        &self,
        body: &[u8],
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<Option<Bytes>> {
        const WHOLE_MAX: usize = 256 * 1024;
        if body.len() > WHOLE_MAX {
            return Ok(None);
        }
        let started = Instant::now();
        let mut rw = self.rewriter(ctx);
        let mut out = Vec::with_capacity(rw.output_hint(body.len()));
        if rw
            .feed(body, &mut out)
            .and_then(|()| rw.finish(&mut out))
            .is_err()
        {
            return Ok(None);
        }
        self.remember_verbatim(ctx.verbatim_key.take(), rw.changed());
        METRICS.rewrote(started.elapsed());
        resp.remove_header(&http::header::ETAG);
        resp.remove_header(&http::header::ACCEPT_RANGES);
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.insert_header(http::header::CONTENT_LENGTH, out.len().to_string())?;
        resp.insert_header("Cache-Control", "private, no-cache")?;
        Ok(Some(Bytes::from(out)))
    }

    /// The key under which a cached playlist's rewrite for this viewer may prove verbatim
    /// (see `EdgeState::verbatim`): only when relative URIs are kept; a capped ladder is this
    /// viewer's own, never the verbatim bytes of another.
    /// `key`: the object's cache key hash (`CacheKey::combined_bin`).
    fn verbatim_key(
        &self,
        ctx: &Ctx,
        key: [u8; 16],
        created: std::time::SystemTime,
    ) -> Option<super::VerbatimKey> {
        let keep_relative =
            !ctx.token_renewed && !ctx.signed_target && self.max_height(ctx).is_none();
        let stream = ctx.stream.as_ref().filter(|_| keep_relative)?;
        Some((
            key,
            created
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            stream.id.clone(),
        ))
    }

    /// The headers of a cached playlist sent as it is (a verbatim one); already there when
    /// the header came from [`EdgeProxy::hit_template`].
    fn verbatim_headers(resp: &mut ResponseHeader) -> Result<()> {
        resp.remove_header(&http::header::ACCEPT_RANGES);
        if resp
            .headers
            .get(http::header::CACHE_CONTROL)
            .map(|v| v.as_bytes())
            != Some(b"private, no-cache")
        {
            resp.insert_header("Cache-Control", "private, no-cache")?;
        }
        METRICS.playlist_rewrites.inc();
        Ok(())
    }

    /// What a complete cached playlist becomes for this viewer, before its header leaves:
    /// the cached bytes as they are when another viewer's rewrite of this very object
    /// changed nothing (no scan, no copy; `Content-Length` stays), else rewritten whole from
    /// `body()`. `Stream`: neither (no body, too big or invalid); `ctx.verbatim_key` is then
    /// set for the streamed rewrite to record. `key`: the object's cache key hash.
    fn cached_playlist(
        &self,
        ctx: &mut Ctx,
        resp: &mut ResponseHeader,
        key: [u8; 16],
        created: std::time::SystemTime,
        body: impl FnOnce() -> Option<Bytes>,
    ) -> Result<CachedPlaylist> {
        let verbatim_key = self.verbatim_key(ctx, key, created);
        if verbatim_key
            .as_ref()
            .is_some_and(|k| self.state().verbatim.contains_key(k))
        {
            Self::verbatim_headers(resp)?;
            return Ok(CachedPlaylist::Verbatim);
        }
        ctx.verbatim_key = verbatim_key;
        Ok(match body() {
            Some(b) => self
                .rewrite_whole(&b, resp, ctx)?
                .map_or(CachedPlaylist::Stream, CachedPlaylist::Rewritten),
            None => CachedPlaylist::Stream,
        })
    }

    /// What every response the edge passes on gets, from the origin or the cache: only the
    /// origin headers of [`ORIGIN_HEADERS`] (a viewer's browser sees nothing else an origin
    /// says: no cookies, CORS, `Clear-Site-Data`, `X-Accel-Redirect`, HSTS, reporting or
    /// service-worker headers), an inert media type relabelled, the viewer's token and
    /// CORS answer, and `X-Cache` (`cache_state`) with RFC 9111's warning on a stale copy.
    fn edge_headers(
        &self,
        resp: &mut ResponseHeader,
        ctx: &Ctx,
        cache_state: Option<&'static str>,
    ) -> Result<()> {
        self.object_headers(resp, ctx)?;
        if !ctx.shield {
            resp.insert_header("X-Content-Type-Options", "nosniff")?;
        }
        Self::viewer_headers(resp, ctx, cache_state)
    }

    /// The part of [`EdgeProxy::edge_headers`] that depends on the object alone: the
    /// origin's allow-listed headers, its media type relabelled if need be.
    fn object_headers(&self, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
        keep_origin_headers(resp, false);
        let ct = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes());
        if !self.state().cfg.origins.is_media(ct) {
            if let Some(t) = relabel(ctx.kind, &ctx.origin_path, ct) {
                resp.insert_header(http::header::CONTENT_TYPE, t)?;
            }
        }
        Ok(())
    }

    /// The part of [`EdgeProxy::edge_headers`] that depends on the viewer and the moment:
    /// the token, the CORS answer, `X-Cache` and the stale warning.
    fn viewer_headers(
        resp: &mut impl respond::Fields,
        ctx: &Ctx,
        cache_state: Option<&'static str>,
    ) -> Result<()> {
        const X_CACHE: respond::Field = respond::Field::new("X-Cache", "x-cache");
        const WARNING: respond::Field = respond::Field::new("Warning", "warning");
        if !ctx.shield {
            let token = http::HeaderValue::from_str(&ctx.token)
                .or_err(ErrorType::InvalidHTTPHeader, "invalid token value")?;
            respond::NEW_TOKEN_FIELD.set(resp, token)?;
            ctx.cors.apply_allow(resp)?;
        }
        if let Some(state) = cache_state {
            X_CACHE.set(resp, http::HeaderValue::from_static(state))?;
        }
        if cache_state == Some("STALE") {
            // RFC 9111 §5.5: a stale response says so.
            WARNING.set(
                resp,
                http::HeaderValue::from_static("110 hlsgate \"Response is Stale\""),
            )?;
        }
        Ok(())
    }

    /// A fresh, complete object in the segment cache is answered here, from
    /// `request_filter`, before Pingora's cache phases (their key hashing, lookup, stored
    /// header copy, lock and hit state machine run on every hit otherwise): the same
    /// response as the cache path would send (the stored header with `Age`, the edge's
    /// headers, a playlist rewritten whole or sent verbatim). Only plain GETs of HTTP
    /// origins' objects; a range, a conditional request, a HEAD, a stale or partial object
    /// and a playlist that cannot be rewritten whole take the cache path. `Ok(false)`: not
    /// served here.
    async fn serve_fresh_hit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        if ctx.shield
            || ctx.background
            || req.method != http::Method::GET
            || FORWARDED_HEADERS
                .iter()
                .any(|h| req.headers.contains_key(h))
            || !ctx
                .stream
                .as_ref()
                .is_some_and(|s| matches!(s.origin, Origin::Http { .. }))
        {
            return Ok(false);
        }
        let Some(bin) = ctx.cache_key().map(|k| k.combined_bin()) else {
            return Ok(false);
        };
        let st = self.state();
        let now = std::time::SystemTime::now();
        let Some(hit) = st.store.hit(&bin, now, true) else {
            // Nothing stored: answered here only while the origin's last failure for this
            // object is remembered (`cache.error_ttl`), with the same error and no origin
            // request. Otherwise the cache path asks the origin.
            let Some((code, message)) = st.failed.get(&bin) else {
                return Ok(false);
            };
            drop(st);
            ctx.status = code;
            ctx.failure = Some(message);
            ctx.early_hit = Some("failed");
            respond::error(session, code, message, &ctx.cors).await?;
            return Ok(true);
        };
        // A stale copy is answered here only while the origin's failure is remembered, or
        // while a background refresh fetches it; otherwise the cache path refreshes it.
        let label = if !hit.stale {
            "hit"
        } else if st.failed.contains_key(&bin) {
            "stale"
        } else if st.refreshing.contains_key(&bin) {
            "updating"
        } else {
            return Ok(false);
        };
        drop(st);
        self.answer_hit(session, ctx, bin, hit, now, label).await
    }

    /// Answer `hit`, found at `now` (see `serve_fresh_hit`), counted under the cache
    /// result `label`. The object's own part of the header is made on its first hit and
    /// kept with it ([`EdgeProxy::hit_template`]); each hit adds `Age` and the viewer's.
    async fn answer_hit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        bin: pingora_cache::key::HashBinary,
        hit: crate::cache::FreshHit,
        now: std::time::SystemTime,
        label: &'static str,
    ) -> Result<bool> {
        let tag = (self.state().generation << 2) | ctx.kind as u64;
        let head = hit.derived(tag, |stored| {
            self.hit_template(stored, hit.body.len(), ctx, tag)
        })?;
        let Some(template) = &head.header else {
            return Ok(false);
        };
        let mut parts = template.clone();
        // As Pingora's cache_hit_header: an Age.
        let age = now.duration_since(hit.epoch).map_or(0, |d| d.as_secs());
        parts
            .headers
            .insert(http::header::AGE, http::HeaderValue::from(age));
        let state = if hit.stale { "STALE" } else { "HIT" };
        Self::viewer_headers(&mut parts, ctx, Some(state))?;
        // Names go out as Pingora writes a header without case: the common ones titled,
        // the others in lower case (field names are case-insensitive).
        let mut resp = ResponseHeader::from(parts);
        let body = if head.playlist {
            let cached = || Some(hit.body.clone());
            match self.cached_playlist(ctx, &mut resp, bin, hit.created, cached)? {
                CachedPlaylist::Verbatim => hit.body,
                CachedPlaylist::Rewritten(out) => out,
                CachedPlaylist::Stream => {
                    ctx.verbatim_key = None;
                    return Ok(false);
                }
            }
        } else {
            hit.body
        };
        ctx.status = 200;
        ctx.from_cache = true;
        ctx.early_hit = Some(label);
        METRICS.cache_served_bytes.inc_by(body.len() as u64);
        if body.is_empty() {
            session.write_response_header(Box::new(resp), true).await?;
        } else {
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await?;
        }
        Ok(true)
    }

    /// What every viewer's answer from the cached object with header `stored` (and a
    /// body of `len` bytes) shares, made once per object and config (`tag`): the stored
    /// header as Pingora's `cache_hit_header` makes it (HTTP/1.1, a `Content-Length`), the
    /// object's part of the edge's headers, `nosniff`, and for a playlist
    /// `Cache-Control: private, no-cache` (each viewer's copy is their own), for anything
    /// else `Accept-Ranges` (as `range_header_filter` on a hit: it may be asked in ranges).
    /// No header (the cache path answers): a status other than 200, a compressed playlist.
    fn hit_template(
        &self,
        stored: &ResponseHeader,
        len: usize,
        ctx: &Ctx,
        tag: u64,
    ) -> Result<crate::cache::Derived> {
        let playlist = ctx.kind == Kind::Playlist || is_playlist_response(stored);
        let mut d = crate::cache::Derived {
            tag,
            header: None,
            playlist,
        };
        if stored.status != http::StatusCode::OK || playlist && is_compressed(stored) {
            return Ok(d);
        }
        let mut resp = stored.clone();
        resp.set_version(http::Version::HTTP_11);
        if !resp.headers.contains_key(http::header::CONTENT_LENGTH) {
            resp.remove_header(&http::header::TRANSFER_ENCODING);
            resp.insert_header(http::header::CONTENT_LENGTH, len)?;
        }
        self.object_headers(&mut resp, ctx)?;
        resp.insert_header("X-Content-Type-Options", "nosniff")?;
        if playlist {
            resp.remove_header(&http::header::ACCEPT_RANGES);
            resp.insert_header("Cache-Control", "private, no-cache")?;
        } else {
            resp.insert_header(http::header::ACCEPT_RANGES, "bytes")?;
        }
        d.header = Some(resp.as_owned_parts());
        Ok(d)
    }

    /// A finished rewrite of a cached playlist that changed nothing: its next viewers get
    /// the cached bytes as they are (see `EdgeState::verbatim`).
    fn remember_verbatim(&self, key: Option<super::VerbatimKey>, changed: bool) {
        if let (Some(key), false) = (key, changed) {
            self.state().verbatim.insert(key, ());
        }
    }

    /// A JWT's resolution cap for this viewer session.
    fn max_height(&self, ctx: &Ctx) -> Option<u32> {
        ctx.rules.as_ref().and_then(|r| r.max_height)
    }

    /// Remember that fetching this object failed because the origin could not be reached
    /// or timed out (see `EdgeState::failed`).
    fn remember_failure(&self, ctx: &Ctx, e: &Error) {
        let (code, message) = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, "origin timed out")
            }
            ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
                (502, "origin unavailable")
            }
            // The origin answered 5xx and a stale copy answers for it (the edge's own answer
            // would be 502, as `refusal` says; a shield's 504 stays one).
            ErrorType::HTTPStatus(s)
                if (500..600).contains(s) && *e.esource() == ErrorSource::Upstream =>
            {
                match self.refusal_of_status(ctx, *s) {
                    Some((code, _, message)) => (code, message),
                    None => return,
                }
            }
            _ => return,
        };
        self.remember_status(ctx, code, message);
    }

    /// Remember for `cache.error_ttl` that this object's fetch failed with `code`.
    fn remember_status(&self, ctx: &Ctx, code: u16, message: &'static str) {
        let st = self.state();
        if st.cfg.cache.error_ttl.is_zero() {
            return;
        }
        if let Some(key) = ctx.cache_key() {
            st.failed.insert(key.combined_bin(), (code, message));
        }
    }

    /// The shield this request's miss is fetched from: `origins.shield`, unless this
    /// request is itself a shield request (one tier).
    fn via_shield(&self, ctx: &Ctx) -> Option<crate::stream::Shield> {
        if ctx.shield {
            return None;
        }
        self.state().cfg.origins.shield.clone()
    }

    /// [`EdgeProxy::refusal`] of a response by its status alone (`None`: 304 and 1xx/2xx).
    fn refusal_of_status(
        &self,
        ctx: &Ctx,
        status: u16,
    ) -> Option<(u16, &'static str, &'static str)> {
        match status {
            304 => None,
            300..=399 => Some((
                502,
                "origin_redirect",
                "origin redirected; redirects are not followed",
            )),
            404 | 410 => Some((404, "", "not found at the origin")),
            // The shield timed out on the origin (its own 502s stay 502s).
            504 if self.via_shield(ctx).is_some() => Some((504, "", "origin timed out")),
            400..=499 => Some((502, "", "origin refused the request")),
            500..=599 => Some((502, "", "origin error")),
            _ => None,
        }
    }

    /// What the edge answers instead of an origin response it will not pass on: redirects
    /// (their `Location` may point anywhere, the metadata service included), error pages
    /// (they may hold internal text), and anything that is not media.
    /// `(status, denial reason or "", message)`.
    fn refusal(
        &self,
        ctx: &Ctx,
        resp: &ResponseHeader,
    ) -> Option<(u16, &'static str, &'static str)> {
        let status = resp.status.as_u16();
        match status {
            300..=599 => self.refusal_of_status(ctx, status),
            _ if status < 200 => None,
            _ => {
                let ct = resp
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.as_bytes());
                let passes = self.state().cfg.origins.is_media(ct)
                    || relabel(ctx.kind, &ctx.origin_path, ct).is_some();
                (!passes).then_some((502, "origin_type", "origin sent a non-media type"))
            }
        }
    }
}

/// The media type a segment or key is sent with when its origin labels it with an inert
/// type that is not media: generic servers send `.ts` as `text/vnd.trolltech.linguist`
/// (Debian's mime.types, Python's http.server) or TypeScript, keys as PGP keys. Active
/// types (HTML, XML, SVG, scripts, JSON, CSS) are never relabelled: they are refused.
fn relabel(kind: Kind, path: &str, content_type: Option<&[u8]>) -> Option<&'static str> {
    if !matches!(kind, Kind::Segment | Kind::Key) {
        return None;
    }
    let ct = String::from_utf8_lossy(content_type?).to_ascii_lowercase();
    let active = [
        "html",
        "xml",
        "svg",
        "script",
        "json",
        "css",
        "multipart",
        "pdf",
    ]
    .iter()
    .any(|a| ct.contains(a));
    (!active).then(|| Kind::content_type(path))
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            kind: Kind::Other,
            stream: None,
            origin_path: String::new(),
            upstream_uri: String::new(),
            token: String::new(),
            rewriter: None,
            status: 0,
            deny: None,
            country: None,
            failure: None,
            from_cache: false,
            fetch_start: None,
            started: Instant::now(),
            rewrite_time: Duration::ZERO,
            playlist_len: None,
            playlist_fed: 0,
            token_renewed: false,
            signed_target: false,
            verbatim_key: None,
            cors: Cors::default(),
            rules: None,
            rewritten: None,
            viewer: None,
            shield: false,
            early_hit: None,
            reserved: None,
            background: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        Ok(self.admit(session, ctx).await? || self.serve_fresh_hit(session, ctx).await?)
    }

    /// Every GET/HEAD for an HTTP origin goes through the segment cache (playlists too:
    /// cached as origin bytes, rewritten per viewer on the way out).
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let method = &session.req_header().method;
        let http_origin = ctx
            .stream
            .as_ref()
            .is_some_and(|s| matches!(s.origin, Origin::Http { .. }));
        if http_origin && (method == http::Method::GET || method == http::Method::HEAD) {
            let st = self.state();
            session
                .cache
                .enable(st.store, None, None, Some(st.cache_lock), None);
        }
        Ok(())
    }

    /// The origin object, never the viewer's token: all viewers share one copy.
    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        ctx.cache_key().ok_or_else(|| bad_gateway("no stream"))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        if self.refusal(ctx, resp).is_some() {
            return Ok(RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::Custom("refused origin response"),
            ));
        }
        let st = self.state();
        let decided = st.store.policy().resp_cacheable(ctx.kind, resp);
        if matches!(decided, RespCacheable::Cacheable(_)) {
            // The fill's room is taken now, before the viewer's header goes out: a body
            // the cache cannot hold is passed through whole, never cut half way.
            match st.store.reserve_for(resp) {
                Some(r) => ctx.reserved = Some(r),
                None => {
                    return Ok(RespCacheable::Uncacheable(
                        pingora_cache::NoCacheReason::Custom("in-flight share of max_bytes in use"),
                    ))
                }
            }
        }
        Ok(decided)
    }

    /// Ranges of segments are cut from the cached object; a playlist is rewritten, so a
    /// byte range of the origin's copy would mean nothing: it is always sent whole.
    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> RangeType {
        if ctx.kind == Kind::Playlist || is_playlist_response(resp) {
            return RangeType::None;
        }
        let length = content_length(resp);
        let range = pingora_proxy::range_header_filter(session.req_header(), resp, Some(16));
        match (&range, length) {
            // `bytes=-0` asks for no bytes at all: Pingora makes it an empty 206 whose
            // Content-Range is backwards; RFC 9110 §14.1.1 makes it unsatisfiable.
            (RangeType::Single(r), Some(len)) if r.start >= r.end => {
                let _ = resp.set_status(416);
                let _ = resp.insert_header("Content-Length", "0");
                let _ = resp.insert_header("Content-Range", format!("bytes */{len}"));
                resp.remove_header(&http::header::CONTENT_TYPE);
                RangeType::Invalid
            }
            _ => range,
        }
    }

    /// A stale object is served when the origin cannot be reached or fails (within
    /// `cache.stale_if_error`; the failure is remembered for `cache.error_ttl`, so its
    /// next viewers get the stale copy without asking the origin), and — for objects
    /// stored with a stale-while-revalidate window: playlists — while one request
    /// refreshes it in the background (`error` is `None` then; Pingora spawns the refresh
    /// for the request holding the write lock).
    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        if ctx.background {
            // The refresh itself: it stores, it never answers stale.
            if let Some(e) = error {
                self.remember_failure(ctx, e);
            }
            return error.is_some();
        }
        match error {
            Some(e) => {
                self.remember_failure(ctx, e);
                // Pingora will not reuse this connection after a failed fetch.
                session.set_keepalive(None);
            }
            None if session.cache.is_cache_lock_writer() => {
                let Some(stream) = ctx.stream.clone() else {
                    return false;
                };
                if let Some(key) = session.cache.maybe_cache_key() {
                    self.state().refreshing.insert(key.combined_bin(), ());
                }
                if session.is_http2() {
                    // Pingora 0.9 makes the refresh's request by writing this one as
                    // HTTP/1 text, its version as it is: "GET /… HTTP/2", which its own
                    // HTTP/1 parser then refuses, and the refresh never runs (each h2
                    // viewer got the stale copy until the refresh's bound ran out). The
                    // viewer's request is answered from here on; its version is read no
                    // more.
                    session.req_header_mut().set_version(http::Version::HTTP_11);
                }
                self.state().refreshes.insert(
                    refresh_key(session.req_header()),
                    Arc::new(super::Refresh {
                        stream,
                        kind: ctx.kind,
                        origin_path: ctx.origin_path.clone(),
                        upstream_uri: ctx.upstream_uri.clone(),
                    }),
                );
            }
            None => {}
        }
        true
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = ctx.fetch_start.filter(|_| !resp.status.is_informational()) {
            METRICS.origin_seconds.observe(t.elapsed().as_secs_f64());
        }
        // What is stored is already what a viewer may see (and `Vary`, which the cache
        // policy reads): hits then have nothing to remove.
        keep_origin_headers(resp, true);
        if let Some((status, reason, message)) = self.refusal(ctx, resp) {
            if resp.status.is_server_error() {
                // Remembered for `cache.error_ttl`: the viewers waiting on this fetch, and
                // the next ones, get the same answer without asking the origin again.
                self.remember_status(ctx, status, message);
            }
            // The origin's answer does not reach the viewer: `fail_to_proxy` writes the
            // edge's JSON error instead (nothing has been sent downstream yet), or a stale
            // copy is served when there is one.
            if !reason.is_empty() {
                ctx.deny = Some(reason);
            }
            ctx.failure = Some(message);
            return Err(Error::explain(ErrorType::HTTPStatus(status), message));
        }
        if resp.status.is_server_error() {
            METRICS
                .origin_errors
                .with_label_values(&[ctx.kind.label()])
                .inc();
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if let Some((code, message)) = ctx
            .cache_key()
            .and_then(|k| self.state().failed.get(&k.combined_bin()))
        {
            // Another viewer's fetch of this object just failed, and this one waited on it
            // (or found it stale, after `serve_fresh_hit`): the same answer, or the stale
            // copy (`should_serve_stale`), without asking the origin again.
            ctx.failure = Some(message);
            return Err(Error::explain(
                ErrorType::HTTPStatus(code),
                "origin just failed",
            ));
        }
        ctx.fetch_start = Some(Instant::now());
        METRICS
            .origin_fetches
            .with_label_values(&[ctx.kind.label()])
            .inc();
        let stream = ctx
            .stream
            .as_ref()
            .ok_or_else(|| bad_gateway("no stream"))?;
        let Origin::Http {
            tls, host, port, ..
        } = &stream.origin
        else {
            return Err(bad_gateway("not an http origin"));
        };
        let st = self.state();
        let e = &st.cfg.edge;
        let with_timeouts = |mut peer: HttpPeer| {
            peer.options.connection_timeout = Some(e.origin_connect_timeout);
            peer.options.total_connection_timeout = Some(e.origin_connect_timeout);
            peer.options.read_timeout = Some(e.origin_read_timeout);
            peer.options.write_timeout = Some(e.origin_read_timeout);
            peer.options.idle_timeout = Some(Duration::from_secs(60));
            Box::new(peer)
        };
        if let Some(sh) = self.via_shield(ctx) {
            // The operator's own hlsgate: no origin policy (it applies its own).
            let addr = resolve(&sh.host, sh.port, "shield DNS", |_| true)
                .await?
                .ok_or_else(|| bad_gateway("shield address unknown"))?;
            return Ok(with_timeouts(HttpPeer::new(addr, sh.tls, sh.host.clone())));
        }
        let policy = &st.cfg.origins;
        // Checked again at every connection: a name that resolved to a public address at
        // start-up may point inside later (DNS rebinding).
        let permitted = |ip| policy.permits(host, ip, *port);
        let Some(addr) = resolve(host, *port, "origin DNS", permitted).await? else {
            ctx.deny = Some("origin_not_allowed");
            ctx.failure = Some("not an allowed origin");
            return Err(bad_gateway("origin address not allowed"));
        };
        Ok(with_timeouts(HttpPeer::new(addr, *tls, host.clone())))
    }

    /// Every origin fetch ends by `edge.origin_total_timeout`, however slowly its body
    /// drips (each read is bounded by `origin_read_timeout`; the whole was not).
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let limit = self.state().cfg.edge.origin_total_timeout;
        if ctx.fetch_start.is_some_and(|t| t.elapsed() > limit) {
            ctx.failure = Some("origin took too long");
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "origin fetch exceeded edge.origin_total_timeout",
            ));
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.remember_failure(ctx, &e);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        self.remember_failure(ctx, &e);
        // Pingora's default from here on.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let stream = ctx
            .stream
            .as_ref()
            .ok_or_else(|| bad_gateway("no stream"))?;
        let shield = self.via_shield(ctx);
        let target = match &shield {
            Some(_) => shield::target(stream.origin.space(), &ctx.upstream_uri),
            None => ctx.upstream_uri.clone(),
        };
        let uri: http::Uri = target
            .parse()
            .map_err(|e| Error::because(ErrorType::HTTPStatus(400), "origin URI", e))?;
        req.set_uri(uri);
        // Only the allow-listed headers go on: playlists arrive uncompressed (no
        // Accept-Encoding) to be rewritten; the viewer's credentials, the page they came
        // from (whose URL carries a token) and anything an origin could vary on stay here.
        let drop: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| !FORWARDED_HEADERS.contains(n))
            .cloned()
            .collect();
        for name in drop {
            req.remove_header(&name);
        }
        req.insert_header("User-Agent", EDGE_UA)?;
        match shield {
            Some(sh) => {
                req.insert_header("Host", sh.authority.as_str())?;
                let auth = shield::authorization(&self.state().keyring, &target, token::unix_now());
                req.insert_header(shield::HEADER, auth)?;
            }
            None => req.insert_header("Host", stream.origin.space().authority.as_str())?,
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        if ctx.background {
            return Ok(());
        }
        let cache_state = cache_state(session.cache.phase()).map(|(header, _)| header);
        ctx.from_cache = matches!(cache_state, Some("HIT" | "STALE" | "REVALIDATED"));
        self.edge_headers(resp, ctx, cache_state)?;
        let is_playlist = ctx.kind == Kind::Playlist || is_playlist_response(resp);
        if ctx.shield || !is_playlist || resp.status != http::StatusCode::OK {
            return Ok(());
        }
        if is_compressed(resp) {
            return Err(bad_gateway("origin sent a compressed playlist"));
        }
        if let (Some(key), Some(meta)) = (
            session.cache.maybe_cache_key(),
            session.cache.maybe_cache_meta(),
        ) {
            let (bin, created) = (key.combined_bin(), meta.created());
            if !ctx.from_cache {
                // Being fetched: the streamed rewrite may prove it verbatim for later viewers.
                ctx.verbatim_key = self.verbatim_key(ctx, bin, created);
            } else {
                let complete = || self.state().store.complete_body(key, created);
                match self.cached_playlist(ctx, resp, bin, created, complete)? {
                    CachedPlaylist::Verbatim => return Ok(()),
                    CachedPlaylist::Rewritten(out) => {
                        ctx.rewritten = Some(out);
                        return Ok(());
                    }
                    CachedPlaylist::Stream => {}
                }
            }
        }
        // The body changes length: headers leave before it is rewritten.
        ctx.playlist_len = content_length(resp);
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.remove_header(&http::header::ETAG);
        resp.remove_header(&http::header::ACCEPT_RANGES);
        resp.insert_header("Transfer-Encoding", "chunked")?;
        resp.insert_header("Cache-Control", "private, no-cache")?;
        if session.req_header().method != http::Method::HEAD {
            ctx.rewriter = Some(self.rewriter(ctx));
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if ctx.from_cache {
            if let Some(b) = body.as_ref() {
                METRICS.cache_served_bytes.inc_by(b.len() as u64);
            }
        }
        if let Some(whole) = ctx.rewritten.as_mut() {
            // Rewritten before the header left: the cached bytes are replaced by it, once.
            *body = (!whole.is_empty()).then(|| std::mem::take(whole));
            return Ok(None);
        }
        let Some(rw) = ctx.rewriter.as_mut() else {
            return Ok(None);
        };
        let started = Instant::now();
        let input = body.take();
        ctx.playlist_fed += input.as_ref().map_or(0, |b| b.len() as u64);
        let end_of_stream = end_of_stream || ctx.playlist_len == Some(ctx.playlist_fed);
        let mut out = Vec::with_capacity(input.as_ref().map_or(0, |b| rw.output_hint(b.len())));
        if let Some(chunk) = input {
            rw.feed(&chunk, &mut out)
                .map_err(|e| Error::because(ErrorType::HTTPStatus(502), "invalid playlist", e))?;
        }
        if end_of_stream {
            rw.finish(&mut out)
                .map_err(|e| Error::because(ErrorType::HTTPStatus(502), "invalid playlist", e))?;
        }
        // An empty chunk would end a chunked body early: send nothing instead.
        *body = (!out.is_empty()).then(|| Bytes::from(out));
        ctx.rewrite_time += started.elapsed();
        if end_of_stream {
            self.remember_verbatim(ctx.verbatim_key.take(), rw.changed());
            ctx.rewriter = None; // done: later calls (an empty end-of-stream) pass through
            METRICS.rewrote(ctx.rewrite_time);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = failure_status(e);
        // Pingora closes the viewer's connection after a failed proxy attempt (whatever
        // this returns): the answer says so rather than promise a keep-alive.
        session.set_keepalive(None);
        let message = match (ctx.failure, code) {
            (Some(m), _) => m,
            (None, 502) => "origin unavailable",
            (None, 504) => "origin timed out",
            (None, 400) => "bad request",
            (None, _) => "internal error",
        };
        if code > 0 && session.response_written().is_none() {
            let _ = respond::error(session, code, message, &ctx.cors).await;
        }
        ctx.status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.background {
            // No viewer: its origin fetch is counted (`hlsgate_origin_fetches_total`). The
            // refresh is over: the stale copy's viewers take the cache path again (fresh
            // copy, or the failure now remembered).
            if let Some(key) = ctx.cache_key() {
                self.state().refreshing.invalidate(&key.combined_bin());
            }
            return;
        }
        if let Some(stream) = ctx.stream.as_ref().filter(|_| !ctx.shield) {
            let sent = session.body_bytes_sent() as u64;
            METRICS.streams.served(&stream.id, sent);
            if let (Some(v), Some((id, ip))) = (&self.state().viewers, ctx.viewer) {
                let ua = session
                    .req_header()
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                v.saw(id, &stream.id, ip, ua, sent);
            }
        }
        let status = session
            .response_written()
            .map_or(ctx.status, |r| r.status.as_u16());
        let kind = ctx.kind.label();
        METRICS.request(ctx.kind, status_label(status));
        if let Some(reason) = ctx.deny {
            METRICS.denials.with_label_values(&[reason]).inc();
        }
        // Failures of our fetch (refused, timed out, body cut short); a 5xx the origin
        // answered itself was counted in `upstream_response_filter`.
        if e.is_some_and(|e| *e.esource() == ErrorSource::Upstream || matches!(status, 502 | 504))
            && ctx.deny.is_none()
        {
            METRICS.origin_errors.with_label_values(&[kind]).inc();
        }
        let cache = if let Some(label) = ctx.early_hit {
            METRICS.cache_lookup(label);
            label
        } else if session.cache.enabled() || ctx.from_cache {
            let result = cache_state(session.cache.phase()).map_or("pass", |(_, label)| label);
            METRICS.cache_lookup(result);
            result
        } else {
            "-"
        };
        if let Some(log) = &self.access {
            let req = session.req_header();
            log.log(&access::Entry {
                client: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip()),
                method: req.method.as_str(),
                path: req.uri.path(),
                status,
                bytes: session.body_bytes_sent(),
                duration: ctx.started.elapsed(),
                stream: ctx.stream.as_ref().map_or("-", |s| s.id.as_str()),
                kind,
                cache,
                deny: ctx.deny.or(e.map(|e| e.etype().as_str())).unwrap_or("-"),
                proto: if session.is_http2() { "h2" } else { "h1" },
                tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
                country: ctx.country,
                host: request_authority(req).unwrap_or("-"),
            });
        }
    }

    /// Pingora puts this in its error logs: the path carries a token, so redact it.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        format!(
            "{} {} stream={}",
            req.method,
            playback::redact(req.uri.path()),
            ctx.stream.as_ref().map_or("-", |s| s.id.as_str())
        )
    }
}

/// How a response relates to the cache: its `X-Cache` header value and its
/// `hlsgate_cache_requests_total` label. `None`: the cache was not involved.
fn cache_state(phase: CachePhase) -> Option<(&'static str, &'static str)> {
    match phase {
        CachePhase::Hit => Some(("HIT", "hit")),
        CachePhase::Revalidated => Some(("REVALIDATED", "hit")),
        CachePhase::RevalidatedNoCache(_) => Some(("REVALIDATED", "pass")),
        // Stale because the origin failed; stale while a background refresh runs.
        CachePhase::Stale => Some(("STALE", "stale")),
        CachePhase::StaleUpdating => Some(("STALE", "updating")),
        CachePhase::Miss | CachePhase::Expired => Some(("MISS", "miss")),
        _ => None,
    }
}

/// See `EdgeProxy::cached_playlist`.
enum CachedPlaylist {
    /// Send the cached bytes as they are.
    Verbatim,
    /// Send these instead of the cached bytes.
    Rewritten(Bytes),
    /// Rewrite the body as it streams.
    Stream,
}

/// A body in a content coding other than `identity` (a playlist must not be: it is
/// rewritten as text).
fn is_compressed(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

fn is_playlist_response(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| media::is_playlist_type(v.as_bytes()))
}

/// The status a failed request is answered (and counted and logged) with; 0: the viewer
/// went away (an HTTP/2 stream reset, a closed connection) and is answered nothing. A
/// read or write failure that is not the origin's is the viewer's, whichever layer
/// reported it (Pingora's proxy marks some downstream, the edge's own writes in
/// `request_filter` leave the source unset): never a 500.
fn failure_status(e: &Error) -> u16 {
    let gone = matches!(
        e.etype(),
        ErrorType::WriteError
            | ErrorType::ReadError
            | ErrorType::ConnectionClosed
            | ErrorType::H2Error
    );
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            _ if gone => 0,
            ErrorSource::Downstream => 400,
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Status label values: a fixed set, so a hostile origin cannot grow the metric.
fn status_label(status: u16) -> &'static str {
    const EXACT: [(u16, &str); 14] = [
        (200, "200"),
        (206, "206"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (416, "416"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
        (0, "0"),
    ];
    if let Some((_, l)) = EXACT.iter().find(|(c, _)| *c == status) {
        return l;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_viewer_going_away_is_no_server_error() {
        use super::failure_status;
        use pingora_error::{Error, ErrorType};
        let unset = |t: ErrorType| *Error::new(t);
        let down = |t: ErrorType| *Error::new(t).into_down();
        let up = |t: ErrorType| *Error::new(t).into_up();
        for t in [
            ErrorType::WriteError,
            ErrorType::ReadError,
            ErrorType::ConnectionClosed,
            ErrorType::H2Error,
        ] {
            assert_eq!(failure_status(&unset(t.clone())), 0, "{t:?}");
            assert_eq!(failure_status(&down(t.clone())), 0, "{t:?}");
            assert_eq!(failure_status(&up(t.clone())), 502, "{t:?}");
        }
        assert_eq!(failure_status(&unset(ErrorType::InternalError)), 500);
        assert_eq!(failure_status(&down(ErrorType::InvalidHTTPHeader)), 400);
        assert_eq!(failure_status(&up(ErrorType::ReadTimedout)), 504);
        assert_eq!(failure_status(&unset(ErrorType::HTTPStatus(416))), 416);
    }

    #[test]
    fn redacts_tokens() {
        use crate::playback::redact;
        assert_eq!(
            redact("/api/hls/SECRET/demo/i.m3u8"),
            "/api/hls/<token>/demo/i.m3u8"
        );
        assert_eq!(redact("/api/hls/SECRET"), "/api/hls/<token>");
        assert_eq!(redact("/healthz"), "/healthz");
    }
}
