//! Origin shield (`origins.shield`): an edge fetches what it misses from another hlsgate,
//! the shield, instead of the origin. The shield fetches each object from the origin once
//! and caches it like any edge, so N edges cost the origin one fetch per object.
//!
//! Edge → shield: `GET /_shield/{scheme}/{authority}{origin path}[?{query}]` carrying
//! `X-Hlsgate-Shield: {exp}.{sig}`, where `sig` is [`Keyring::sign_shield`] over that target
//! and `exp` (the token key the edges and the shield share; valid for [`LIFETIME`] seconds).
//! Only the edge's allow-listed request headers go along: the viewer's token (path, query
//! or cookie), address and User-Agent never travel. The shield admits nothing else on this
//! route (401 `shield_auth`), fetches the object from the origin it names — checked against
//! its own `origins.allow` at connect time, as any origin — and answers with the origin's
//! bytes and headers as they are: no rewriting, no token, no viewer accounting (the edge
//! does those). A shield request is always fetched from the origin itself, never passed on
//! to a shield of the shield's own: one tier, so no loop can form.

use super::admission::Denial;
use crate::media::Kind;
use crate::origin::Origin;
use crate::playlist::OriginSpace;
use crate::stream::Stream;
use crate::token::Keyring;
use std::sync::Arc;

/// What every shield request's path starts with.
pub const PREFIX: &str = "/_shield/";
/// The request header carrying the edge's authorisation.
pub const HEADER: &str = "x-hlsgate-shield";
/// [`HEADER`] as a name, for lookups (by `&str` the name is parsed first).
pub const HEADER_NAME: http::HeaderName = http::HeaderName::from_static(HEADER);
/// Seconds an authorisation is valid for.
pub const LIFETIME: u32 = 60;
/// The furthest in the future an authorisation's expiry may be (clock skew between hosts).
const MAX_AHEAD: u32 = 600;

const UNAUTHORISED: Denial = Denial::new(401, "shield_auth", "shield request not authorised");

/// The shield request target for the origin object `upstream_uri` (path and query) of
/// `space`.
pub fn target(space: &OriginSpace, upstream_uri: &str) -> String {
    format!(
        "{PREFIX}{}/{}{upstream_uri}",
        space.scheme.unwrap_or("http"),
        space.authority
    )
}

/// The `X-Hlsgate-Shield` value authorising `target` until `now + LIFETIME`.
pub fn authorization(keys: &Keyring, target: &str, now: u32) -> String {
    let exp = now.saturating_add(LIFETIME);
    format!("{exp}.{}", keys.sign_shield(target, exp))
}

/// A shield request admitted: the origin object to serve.
#[derive(Debug)]
pub struct Object {
    pub kind: Kind,
    /// A stream standing for the origin the request names (id `_shield`).
    pub stream: Arc<Stream>,
    pub origin_path: String,
    /// `origin_path` and the query, as the origin is asked.
    pub upstream_uri: String,
}

/// Admit one request on the shield route: its authorisation (401), its method (405), then
/// the origin object it names (400).
pub fn admit(
    keys: &Keyring,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    header: Option<&[u8]>,
    now: u32,
) -> Result<Object, Denial> {
    let sent = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let (exp, sig) = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.split_once('.'))
        .ok_or(UNAUTHORISED)?;
    let exp: u32 = exp.parse().map_err(|_| UNAUTHORISED)?;
    if !keys.verify_shield(&sent, exp, sig) || now > exp || exp > now.saturating_add(MAX_AHEAD) {
        return Err(UNAUTHORISED);
    }
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(Denial::new(405, "method", "method not allowed"));
    }
    let bad = Denial::new(400, "route", "invalid shield target");
    let rest = path.strip_prefix(PREFIX).ok_or(bad)?;
    let (scheme, rest) = rest.split_once('/').ok_or(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad);
    }
    let slash = rest.find('/').ok_or(bad)?;
    let (authority, origin_path) = rest.split_at(slash);
    let (origin, playlist) =
        Origin::from_playlist_url(&format!("{scheme}://{authority}{origin_path}"))
            .map_err(|_| bad)?;
    let upstream_uri = match query {
        Some(q) => format!("{origin_path}?{q}"),
        None => origin_path.to_owned(),
    };
    Ok(Object {
        kind: Kind::of(origin_path),
        stream: Arc::new(Stream {
            id: "_shield".into(),
            origin,
            playlist,
            owner: None,
            auth: None,
            max_viewers: 0,
            access: None,
            referers: None,
        }),
        origin_path: origin_path.to_owned(),
        upstream_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keyring {
        Keyring::from_text(
            "1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        )
        .unwrap()
    }

    fn space() -> OriginSpace {
        OriginSpace {
            scheme: Some("http"),
            authority: "127.0.0.1:9000".into(),
            base: "/live/".into(),
        }
    }

    #[test]
    fn an_edge_authorisation_admits_exactly_its_target() {
        let k = keys();
        let t = target(&space(), "/live/seg1.ts");
        assert_eq!(t, "/_shield/http/127.0.0.1:9000/live/seg1.ts");
        let auth = authorization(&k, &t, 1000);
        let get = &http::Method::GET;
        let o = admit(&k, get, &t, None, Some(auth.as_bytes()), 1000).unwrap();
        assert_eq!(o.origin_path, "/live/seg1.ts");
        assert_eq!(o.upstream_uri, "/live/seg1.ts");
        assert_eq!(o.kind, Kind::Segment);
        match &o.stream.origin {
            Origin::Http { host, port, .. } => {
                assert_eq!((host.as_str(), *port), ("127.0.0.1", 9000))
            }
            _ => panic!("an http origin"),
        }
        // Another object, another query, expired, from too far ahead, no header, garbage:
        // all 401, before anything else is looked at.
        let other = "/_shield/http/127.0.0.1:9000/live/seg2.ts";
        for (path, query, header, now) in [
            (other, None, Some(auth.as_str()), 1000),
            (t.as_str(), Some("a=1"), Some(auth.as_str()), 1000),
            (t.as_str(), None, Some(auth.as_str()), 1000 + LIFETIME + 1),
            (t.as_str(), None, None, 1000),
            (t.as_str(), None, Some("1060"), 1000),
            (t.as_str(), None, Some("x.y"), 1000),
        ] {
            let e = admit(&k, get, path, query, header.map(str::as_bytes), now).unwrap_err();
            assert_eq!(e, UNAUTHORISED, "{path} {query:?} {header:?} {now}");
        }
        let far = format!(
            "{}.{}",
            1000 + MAX_AHEAD + 1,
            k.sign_shield(&t, 1000 + MAX_AHEAD + 1)
        );
        assert_eq!(
            admit(&k, get, &t, None, Some(far.as_bytes()), 1000).unwrap_err(),
            UNAUTHORISED
        );
        // A signed query goes to the origin as it is.
        let q = "/_shield/http/127.0.0.1:9000/live/p.m3u8";
        let auth = authorization(&k, &format!("{q}?_HLS_msn=4"), 1000);
        let o = admit(&k, get, q, Some("_HLS_msn=4"), Some(auth.as_bytes()), 1000).unwrap();
        assert_eq!(o.upstream_uri, "/live/p.m3u8?_HLS_msn=4");
        assert_eq!(o.kind, Kind::Playlist);
    }

    #[test]
    fn authorised_but_malformed_targets_are_refused() {
        let k = keys();
        for t in [
            "/_shield/ftp/h/x.ts",
            "/_shield/http/h",
            "/_shield/http/h/../x.ts",
            "/_shield/http/u@h/x.ts",
            "/_shield/http",
        ] {
            let auth = authorization(&k, t, 1000);
            let e = admit(&k, &http::Method::GET, t, None, Some(auth.as_bytes()), 1000);
            assert_eq!(e.unwrap_err().status, 400, "{t}");
        }
        let t = "/_shield/http/h/x.ts";
        let auth = authorization(&k, t, 1000);
        let e = admit(
            &k,
            &http::Method::POST,
            t,
            None,
            Some(auth.as_bytes()),
            1000,
        );
        assert_eq!(e.unwrap_err().status, 405);
    }
}
