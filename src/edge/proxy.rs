//! The `ProxyHttp` implementation: each Pingora phase dispatches to plain Rust (route,
//! token, rewriter, file origin). Order of checks in `request_filter`: route and path (404 /
//! 400), method (405), token (401 / 403), stream (404), signed path (403).

use super::client::client_ip;
use super::route::{self, Kind, Route, Target};
use super::{file, respond, EdgeState};
use crate::origin::Origin;
use crate::playlist::{EdgeUris, Rewriter};
use crate::token::{self, Viewer};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
        let Some(stream) = st.streams.get(stream_id).cloned() else {
            return self
                .deny(session, ctx, 404, "unknown_stream", "unknown stream")
                .await;
        };
        let origin_path = match target {
            Target::InBase(rel) => format!("{}{rel}", stream.origin.space().base),
            Target::Signed { sig, path } => {
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
        ctx.token = st.keyring.renew_for(tok, &verified, &viewer, st.ttl);
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
        Rewriter::new(EdgeUris::new(
            stream.origin.space().clone(),
            prefix,
            &ctx.origin_path,
            self.state.keyring.clone(),
            &stream.id,
        ))
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
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.admit(session, ctx).await
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
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
        let is_playlist = ctx.kind == Kind::Playlist
            || resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| route::is_playlist_type(v.as_bytes()));
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
        // The body changes length: headers leave before it is rewritten.
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
        let Some(rw) = ctx.rewriter.as_mut() else {
            return Ok(None);
        };
        let input = body.take();
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
