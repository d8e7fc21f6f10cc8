//! The admin web page at `/`: plain HTML, one stylesheet, one script and hls.js (vendored
//! from npm, `web/vendor/`), all compiled into the binary. Served with a strict Content
//! Security Policy: scripts and styles only from these files (no inline script or style, no
//! `eval`), network access only to the admin itself and the edge's public origin (where
//! the player fetches playlists and segments), workers and media only from `blob:` (hls.js
//! feeds Media Source Extensions), no framing, no Referer. The page keeps the login JWT in
//! memory and sends it as `Authorization: Bearer`: no cookie, so no cross-site request can
//! carry it (CSRF-safe by construction).

use super::api::St;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const HLS_JS: &[u8] = include_bytes!("../../web/vendor/hls.min.js");

pub fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS.as_bytes()) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS.as_bytes()) }),
        )
        .route(
            "/vendor/hls.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", HLS_JS) }),
        )
}

/// The origin (`scheme://host[:port]`) of a URL, or `None`.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    // Nothing a CSP source list would read as more than one source.
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b';' || b == b',')
    {
        return None;
    }
    Some(&url[..scheme.len() + 3 + end])
}

/// The page's Content-Security-Policy: `edge` is the public edge's origin.
pub fn csp(edge: Option<&str>) -> String {
    let edge = edge.map(|e| format!(" {e}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{edge}; media-src 'self' blob:{edge}; worker-src blob:; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

async fn index(axum::extract::State(st): St) -> Response {
    let cfg = st.cfg();
    let policy = csp(origin_of(&cfg.admin.public_edge_url));
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

fn asset(ctype: &'static str, body: &'static [u8]) -> Response {
    let mut r = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    secure(h);
    r
}

fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_origin_is_the_only_other_source() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("https://edge.example.com/x/y?z"),
            Some("https://edge.example.com")
        );
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("https://a b"), None);
        assert_eq!(origin_of("https://a;script-src *"), None);
        let p = csp(Some("https://edge.example.com"));
        assert!(p.contains("connect-src 'self' https://edge.example.com;"));
        assert!(p.contains("script-src 'self';"));
        assert!(!p.contains("unsafe"));
    }
}
