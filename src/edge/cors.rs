//! CORS is the edge's, never the origin's (the origin's `Access-Control-*` headers are
//! dropped): `edge.cors.allow_origins` decides, and a JWT's
//! `aws:access-control-allow-origin` decides instead for the requests of its viewer
//! session.
//!
//! - No list configured: `Access-Control-Allow-Origin: *`, without credentials (token modes
//!   carry no ambient credentials, so any page may play a URL it was given).
//! - A list (`*` wildcards, e.g. `https://*.example.com`): an allowed `Origin` is echoed
//!   with `Access-Control-Allow-Credentials: true` (cookie mode needs it); any other gets
//!   no `Access-Control-Allow-Origin`, so the browser refuses it. A lone `*` in the list
//!   means any origin, without credentials.
//! - A JWT with allowed origins: a matching `Origin` is echoed (no credentials: the token
//!   is in the URL), others get none.
//! - `Vary: Origin` whenever the answer depends on the `Origin`.
//! - `OPTIONS` preflights of edge routes are answered 204 with the allowed methods and the
//!   headers a player may send.

use super::respond::{Field, Fields};
use crate::token::cloudfront::wildcard_match;
use crate::token::jwt::Rules;
use http::HeaderValue;
use pingora_error::OrErr;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::borrow::Cow;

/// The headers a browser may read besides the safelisted ones.
const EXPOSE: &str = "X-New-Token, Content-Length, Content-Range";

/// The CORS answer of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// The `Access-Control-Allow-Origin` value, if any.
    allow: Option<Cow<'static, str>>,
    credentials: bool,
    vary: bool,
}

impl Cors {
    /// The answer by `edge.cors.allow_origins` for a request with `origin`.
    pub fn by_config(list: &[String], origin: Option<&str>) -> Cors {
        if list.is_empty() {
            return Cors {
                allow: Some(Cow::Borrowed("*")),
                ..Cors::default()
            };
        }
        let mut c = Cors {
            vary: true,
            ..Cors::default()
        };
        if let Some(o) = origin {
            if list.iter().any(|p| p != "*" && wildcard_match(p, o)) {
                c.allow = Some(Cow::Owned(o.to_owned()));
                c.credentials = true;
            } else if list.iter().any(|p| p == "*") {
                c.allow = Some(Cow::Borrowed("*"));
            }
        }
        c
    }

    /// The answer for a viewer session whose JWT names allowed origins; `self` otherwise.
    pub fn with_rules(self, rules: Option<&Rules>, origin: Option<&str>) -> Cors {
        match rules {
            Some(r) if !r.allow_origins.is_empty() => Cors {
                allow: origin
                    .filter(|o| r.allows_origin(o))
                    .map(|o| Cow::Owned(o.to_owned())),
                credentials: false,
                vary: true,
            },
            _ => self,
        }
    }

    /// Write the answer (and `nosniff`: a browser must not run what an origin sent).
    pub fn apply(&self, h: &mut ResponseHeader) -> pingora_error::Result<()> {
        self.apply_allow(h)?;
        h.insert_header("X-Content-Type-Options", "nosniff")?;
        Ok(())
    }

    /// Write the answer alone (the caller adds `nosniff`).
    pub fn apply_allow(&self, h: &mut impl Fields) -> pingora_error::Result<()> {
        const ALLOW_ORIGIN: Field =
            Field::new("Access-Control-Allow-Origin", "access-control-allow-origin");
        const EXPOSE_HEADERS: Field = Field::new(
            "Access-Control-Expose-Headers",
            "access-control-expose-headers",
        );
        const ALLOW_CREDENTIALS: Field = Field::new(
            "Access-Control-Allow-Credentials",
            "access-control-allow-credentials",
        );
        const VARY: Field = Field::new("Vary", "vary");
        if let Some(a) = &self.allow {
            // (static values as they are: a `&str` value would be copied each time)
            let v = match a {
                Cow::Borrowed(s) => HeaderValue::from_static(s),
                Cow::Owned(s) => HeaderValue::from_str(s).or_err(
                    pingora_error::ErrorType::InvalidHTTPHeader,
                    "invalid Origin value",
                )?,
            };
            ALLOW_ORIGIN.set(h, v)?;
            EXPOSE_HEADERS.set(h, HeaderValue::from_static(EXPOSE))?;
            if self.credentials {
                ALLOW_CREDENTIALS.set(h, HeaderValue::from_static("true"))?;
            }
        }
        if self.vary {
            VARY.add(h, HeaderValue::from_static("Origin"))?;
        }
        Ok(())
    }

    /// Answer an `OPTIONS` preflight (204).
    pub async fn preflight(&self, session: &mut Session) -> pingora_error::Result<()> {
        let mut h = ResponseHeader::build(204, Some(8))?;
        self.apply(&mut h)?;
        if self.allow.is_some() {
            h.insert_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")?;
            h.insert_header(
                "Access-Control-Allow-Headers",
                "Range, If-None-Match, If-Modified-Since, Content-Type",
            )?;
            h.insert_header("Access-Control-Max-Age", "600")?;
        }
        h.insert_header("Content-Length", "0")?;
        session.write_response_header(Box::new(h), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn answers() {
        let any = Cors::by_config(&[], Some("https://a.example"));
        assert_eq!((any.allow.as_deref(), any.credentials), (Some("*"), false));
        let l = list(&["https://*.example.com", "http://127.0.0.1:9000"]);
        let ok = Cors::by_config(&l, Some("https://player.example.com"));
        assert_eq!(
            (ok.allow.as_deref(), ok.credentials, ok.vary),
            (Some("https://player.example.com"), true, true)
        );
        let no = Cors::by_config(&l, Some("https://evil.example.org"));
        assert_eq!((no.allow, no.vary), (None, true));
        let star = Cors::by_config(&list(&["*"]), Some("https://x"));
        assert_eq!(
            (star.allow.as_deref(), star.credentials),
            (Some("*"), false)
        );
        let rules = Rules {
            allow_origins: list(&["https://ivs.example"]),
            ..Rules::default()
        };
        let j = any
            .clone()
            .with_rules(Some(&rules), Some("https://ivs.example"));
        assert_eq!(j.allow.as_deref(), Some("https://ivs.example"));
        let j = any.with_rules(Some(&rules), Some("https://other.example"));
        assert_eq!(j.allow, None);
    }
}
