//! The `ProxyHttp` implementation: each Pingora phase dispatches to plain Rust (route,
//! token, rewriter, file origin). Order of checks in `request_filter`: route and path (404 /
//! 400), method (405), token (401 / 403), stream (404), signed path (403).

use super::client::client_ip;
use super::route::{self, Kind, Route, Target};
use super::{file, respond, EdgeState};
use crate::metrics::METRICS;
use crate::origin::Origin;
use crate::playlist::{EdgeUris, Rewriter};
use crate::token::{self, Viewer};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::key::CacheHashKey;
use pingora_cache::{CacheKey, CachePhase, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::RangeType;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state.
pub struct Ctx {
    kind: Kind,
    stream: Option<Arc<crate::config::Stream>>,
    /// Absolute origin path of the object (no query).
    origin_path: String,
    /// What the origin request's URI becomes: `origin_path` + the viewer's query.
    upstream_uri: String,
    /// The token handed back in `X-New-Token` and written into rewritten playlists.
    token: String,
    rewriter: Option<Rewriter<EdgeUris>>,
    status: u16,
    deny: Option<&'static str>,
    /// The body comes from the segment cache (a hit or a stale hit).
    from_cache: bool,
    /// When the origin was asked (for the origin latency histogram).
    origin_start: Option<Instant>,
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
}

pub struct EdgeProxy {
    pub state: Arc<EdgeState>,
}

fn bad_gateway(msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(502), msg)
}

impl EdgeProxy {
    /// Authorise and route one request. `Ok(true)`: a response was written.
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let st = &self.state;
        // Pingora keeps an idle HTTP/1 keep-alive connection open forever unless told
        // otherwise: bound it, so idle sockets cannot pile up.
        let idle = st.cfg.edge.idle_timeout.as_secs().max(1);
        if session.get_keepalive().is_some_and(|k| k == 0 || k > idle) {
            session.set_keepalive(Some(idle));
        }
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().map(str::to_owned);
        let method = req.method.clone();

        let (tok, stream_id, target) = match route::parse(&path) {
            Ok(Route::Hls {
                token,
                stream,
                target,
            }) => (token, stream, target),
            Ok(Route::Health) => {
                let mut h = ResponseHeader::build(200, Some(2))?;
                h.insert_header("Content-Type", "text/plain")?;
                h.insert_header("Content-Length", "3")?;
                session.write_response_header(Box::new(h), false).await?;
                session
                    .write_response_body(Some(Bytes::from_static(b"ok\n")), true)
                    .await?;
                ctx.status = 200;
                return Ok(true);
            }
            Err(e) => {
                return self
                    .deny(session, ctx, e.status(), "route", &e.to_string())
                    .await
            }
        };
        if method != http::Method::GET && method != http::Method::HEAD {
            return self
                .deny(session, ctx, 405, "method", "method not allowed")
                .await;
        }
        ctx.kind = Kind::of(match &target {
            Target::InBase(p) => p,
            Target::Signed { path, .. } => path,
        });

        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(SocketAddr::ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let xff = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        let ip = client_ip(peer, xff, &st.cfg.edge.trusted_proxies);
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let viewer = Viewer {
            stream: stream_id,
            ip,
            ua,
            now: token::unix_now(),
        };
        let verified = match st.keyring.verify(tok, &viewer) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .deny(session, ctx, e.status(), e.reason(), &e.to_string())
                    .await
            }
        };
        let token = st.keyring.renew_for(tok, &verified, &viewer, st.ttl);
        let stream = match st.lookup(stream_id, &verified).await {
            Ok(s) => s,
            Err((status, reason, message)) => {
                return self.deny(session, ctx, status, reason, message).await
            }
        };
        let origin_path = match target {
            Target::InBase(rel) => format!("{}{rel}", stream.origin.space().base),
            Target::Signed { sig, path } => {
                ctx.signed_target = true;
                if matches!(stream.origin, Origin::File { .. })
                    || !st.keyring.verify_path(stream_id, path, sig)
                {
                    return self
                        .deny(
                            session,
                            ctx,
                            403,
                            "unsigned_path",
                            "path not signed for this stream",
                        )
                        .await;
                }
                path.to_owned()
            }
        };
        METRICS.saw_session(verified.session);
        ctx.token_renewed = token != tok;
        ctx.token = token;
        ctx.upstream_uri = match &query {
            Some(q) => format!("{origin_path}?{q}"),
            None => origin_path.clone(),
        };
        ctx.origin_path = origin_path;
        ctx.stream = Some(stream.clone());

        if let Origin::File { dir, .. } = &stream.origin {
            let rewrite = (ctx.kind == Kind::Playlist).then(|| self.rewriter(ctx));
            let rel = &ctx.origin_path[stream.origin.space().base.len()..];
            let served = file::serve(session, dir, rel, rewrite, &ctx.token).await?;
            ctx.status = served.status;
            return Ok(true);
        }
        Ok(false)
    }

    async fn deny(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        reason: &'static str,
        message: &str,
    ) -> Result<bool> {
        ctx.status = status;
        ctx.deny = Some(reason);
        respond::error(session, status, message).await?;
        Ok(true)
    }

    fn rewriter(&self, ctx: &Ctx) -> Rewriter<EdgeUris> {
        let stream = ctx.stream.as_ref().expect("set before rewriting");
        let prefix = format!("/api/hls/{}/{}/", ctx.token, stream.id).into_bytes();
        let uris = EdgeUris::new(
            stream.origin.space().clone(),
            prefix,
            &ctx.origin_path,
            self.state.keyring.clone(),
            &stream.id,
        );
        // The seed's way: relative URIs keep working with no rewriting, since the token is
        // in the path. Only a renewed token must be written into them.
        Rewriter::new(if ctx.token_renewed || ctx.signed_target {
            uris
        } else {
            uris.keep_plain_relative()
        })
    }
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
            from_cache: false,
            origin_start: None,
            rewrite_time: Duration::ZERO,
            playlist_len: None,
            playlist_fed: 0,
            token_renewed: false,
            signed_target: false,
            verbatim_key: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.admit(session, ctx).await
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
            let st = &self.state;
            session
                .cache
                .enable(st.store, None, None, Some(st.cache_lock), None);
        }
        Ok(())
    }

    /// The origin object, never the viewer's token: all viewers share one copy.
    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let stream = ctx
            .stream
            .as_ref()
            .ok_or_else(|| bad_gateway("no stream"))?;
        let space = stream.origin.space();
        let primary = format!(
            "{}://{}{}",
            space.scheme.unwrap_or("file"),
            space.authority,
            ctx.upstream_uri
        );
        Ok(CacheKey::new(primary, ""))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(self.state.store.policy().resp_cacheable(ctx.kind, resp))
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
        pingora_proxy::range_header_filter(session.req_header(), resp, Some(16))
    }

    /// A stale object is served when the origin cannot be reached or fails (within
    /// `cache.stale_if_error`), never in place of revalidation.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        error.is_some()
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(t) = ctx.origin_start.take() {
            METRICS.origin_seconds.observe(t.elapsed().as_secs_f64());
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
        ctx.origin_start = Some(Instant::now());
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
        let policy = &self.state.cfg.origins;
        // Checked again at every connection: a name that resolved to a public address at
        // start-up may point inside later (DNS rebinding).
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => policy
                .permits(host, ip)
                .then_some(SocketAddr::new(ip, *port)),
            Err(_) => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| Error::because(ErrorType::HTTPStatus(502), "origin DNS", e))?
                .find(|a| policy.permits(host, a.ip())),
        };
        let addr = addr.ok_or_else(|| bad_gateway("origin address not allowed"))?;
        let mut peer = HttpPeer::new(addr, *tls, host.clone());
        let e = &self.state.cfg.edge;
        peer.options.connection_timeout = Some(e.origin_connect_timeout);
        peer.options.total_connection_timeout = Some(e.origin_connect_timeout);
        peer.options.read_timeout = Some(e.origin_read_timeout);
        peer.options.write_timeout = Some(e.origin_read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let uri: http::Uri = ctx
            .upstream_uri
            .parse()
            .map_err(|e| Error::because(ErrorType::HTTPStatus(400), "origin URI", e))?;
        req.set_uri(uri);
        let stream = ctx
            .stream
            .as_ref()
            .ok_or_else(|| bad_gateway("no stream"))?;
        req.insert_header("Host", stream.origin.space().authority.as_str())?;
        // Playlists must arrive uncompressed to be rewritten; the viewer's credentials and
        // the page they came from (whose URL carries a token) are not the origin's business.
        for h in [
            "accept-encoding",
            "cookie",
            "authorization",
            "referer",
            "x-forwarded-for",
        ] {
            req.remove_header(h);
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
        resp.insert_header(respond::NEW_TOKEN, ctx.token.as_str())?;
        respond::cors(resp)?;
        let cache_state = cache_state(session.cache.phase()).map(|(header, _)| header);
        ctx.from_cache = matches!(cache_state, Some("HIT" | "STALE" | "REVALIDATED"));
        if let Some(state) = cache_state {
            resp.insert_header("X-Cache", state)?;
        }
        if cache_state == Some("STALE") {
            // RFC 9111 §5.5: a stale response says so.
            resp.insert_header("Warning", "110 hlsgate \"Response is Stale\"")?;
        }
        let is_playlist = ctx.kind == Kind::Playlist || is_playlist_response(resp);
        if !is_playlist || resp.status != http::StatusCode::OK {
            return Ok(());
        }
        if resp
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return Err(bad_gateway("origin sent a compressed playlist"));
        }
        let keep_relative = !ctx.token_renewed && !ctx.signed_target;
        let verbatim_key = match (
            keep_relative,
            session.cache.maybe_cache_key(),
            session.cache.maybe_cache_meta(),
            ctx.stream.as_ref(),
        ) {
            (true, Some(key), Some(meta), Some(stream)) => Some((
                key.combined_bin(),
                meta.created()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
                stream.id.clone(),
            )),
            _ => None,
        };
        if ctx.from_cache
            && verbatim_key
                .as_ref()
                .is_some_and(|k| self.state.verbatim.contains_key(k))
        {
            // Another viewer's rewrite of this very object changed nothing: send the
            // cached bytes as they are (no scan, no copy; Content-Length stays).
            resp.remove_header(&http::header::ACCEPT_RANGES);
            resp.insert_header("Cache-Control", "private, no-cache")?;
            METRICS.playlist_rewrites.inc();
            return Ok(());
        }
        ctx.verbatim_key = verbatim_key;
        // The body changes length: headers leave before it is rewritten.
        ctx.playlist_len = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
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
            if let Some(key) = ctx.verbatim_key.take() {
                if !rw.changed() {
                    self.state.verbatim.insert(key, ());
                }
            }
            ctx.rewriter = None; // done: later calls (an empty end-of-stream) pass through
            METRICS.rewrote(ctx.rewrite_time);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        let message = match code {
            502 => "origin unavailable",
            504 => "origin timed out",
            400 => "bad request",
            _ => "internal error",
        };
        if code > 0 && session.response_written().is_none() {
            let _ = respond::error(session, code, message).await;
        }
        ctx.status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map_or(ctx.status, |r| r.status.as_u16());
        let kind = ctx.kind.label();
        METRICS
            .requests
            .with_label_values(&[kind, status_label(status)])
            .inc();
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
        if session.cache.enabled() || ctx.from_cache {
            let result = cache_state(session.cache.phase()).map_or("pass", |(_, label)| label);
            METRICS.cache_lookups.with_label_values(&[result]).inc();
        }
        tracing::debug!(
            target: "hlsgate::access",
            method = %session.req_header().method,
            kind = ctx.kind.label(),
            stream = ctx.stream.as_ref().map_or("-", |s| s.id.as_str()),
            status,
            deny = ctx.deny.unwrap_or("-"),
            error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        );
    }

    /// Pingora puts this in its error logs: the path carries a token, so redact it.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        format!(
            "{} {} stream={}",
            req.method,
            redact(req.uri.path()),
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
        CachePhase::Stale | CachePhase::StaleUpdating => Some(("STALE", "stale")),
        CachePhase::Miss | CachePhase::Expired => Some(("MISS", "miss")),
        _ => None,
    }
}

fn is_playlist_response(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| route::is_playlist_type(v.as_bytes()))
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

/// `/api/hls/{token}/...` with the token replaced.
pub fn redact(path: &str) -> String {
    match path.strip_prefix("/api/hls/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, after)) => format!("/api/hls/<token>/{after}"),
            None => "/api/hls/<token>".into(),
        },
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_tokens() {
        assert_eq!(
            super::redact("/api/hls/SECRET/demo/i.m3u8"),
            "/api/hls/<token>/demo/i.m3u8"
        );
        assert_eq!(super::redact("/api/hls/SECRET"), "/api/hls/<token>");
        assert_eq!(super::redact("/healthz"), "/healthz");
    }
}
