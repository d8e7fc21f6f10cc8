//! The foreign token modes (SPEC "More ways in"): one verifier per mode, tried in the order
//! of [`VERIFIERS`]. Each looks for its own credentials in the request (query parameters or
//! cookies) and, when it finds them, checks them against its keys. The first mode whose
//! credentials are present decides; its grant is exchanged for a native token by
//! `admission` so that the rest of the way (segments, renewals, the rewritten playlist's
//! URIs) is path mode.
//!
//! Adding a mode: a verifier in `token/`, a function here, an entry in `VERIFIERS` and in
//! `token::Mode`. The one mode that needs no credentials, `external` (the platform's
//! handler, `edge::external`), is asked last, by `admission`, since it is a network call.

use super::admission::Request;
use super::EdgeState;
use crate::playback::Query;
use crate::token::{akamai, cloudfront, secure_link, KeyRef, Mode, Scope, TokenError, Viewer};
use std::sync::Arc;

/// What a foreign credential proved: the grant it is exchanged for.
#[derive(Debug, Clone)]
pub struct Foreign {
    /// Unix seconds: the end of the viewer session it opens.
    pub exp: u32,
    /// The viewer session (stable for one credential).
    pub session: [u8; 16],
    /// What it allows beyond its stream and what revokes it: its mode, the key that
    /// verified it (a key a user registered opens only that user's streams), a login
    /// session, a JWT's `aws:` rules.
    pub scope: Scope,
}

impl Foreign {
    /// A CloudFront, Akamai or secure_link grant.
    fn of(mode: Mode, g: crate::token::ForeignGrant) -> Foreign {
        Foreign {
            exp: g.exp,
            session: g.session,
            scope: Scope {
                mode,
                login: g.login,
                key: g.key.map(|kid| KeyRef { kid, owner: None }),
                access: g.access,
                ..Scope::default()
            },
        }
    }
}

/// Everything a verifier may read.
pub struct Facts<'r, 'a> {
    pub st: &'r EdgeState,
    pub req: &'r Request<'a>,
    pub query: &'r Query<'a>,
    pub viewer: &'r Viewer<'a>,
    /// The registered playback key a JWT's `kid` names (read from the store beforehand).
    pub stored_key: Option<Arc<super::store_cache::StoredKey>>,
}

impl Facts<'_, '_> {
    /// `(name, value)` of every cookie sent.
    fn cookies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.req
            .cookies
            .iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|c| c.trim().split_once('='))
    }

    fn query_param(&self, name: &str) -> Option<&str> {
        self.req.query.and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        })
    }
}

type Verifier = fn(&Facts<'_, '_>) -> Option<Result<Foreign, TokenError>>;

/// The modes, in the order their credentials are looked for.
pub const VERIFIERS: [(Mode, Verifier); 4] = [
    (Mode::Jwt, jwt),
    (Mode::CloudFront, cloudfront),
    (Mode::Akamai, akamai),
    (Mode::SecureLink, secure_link),
];

/// The first mode whose credentials the request carries, and its answer; `None`: no
/// foreign credentials at all.
pub fn verify(f: &Facts<'_, '_>) -> Option<Result<Foreign, TokenError>> {
    VERIFIERS.iter().find_map(|(_, v)| v(f))
}

fn jwt(f: &Facts<'_, '_>) -> Option<Result<Foreign, TokenError>> {
    let token = f.query.token?;
    let (keys, owner) = match &f.stored_key {
        Some(k) => (&k.keys, Some(k.user_id)),
        None => (&f.st.jwt_keys, None),
    };
    let stream = f.viewer.stream;
    let (g, owner) = match f.st.jwt_seen.get(token) {
        // A token a user's key signed holds only while that key is registered.
        Some((s, g, o))
            if s == stream
                && f.viewer.now < g.exp
                && (o.is_none() || o == f.stored_key.as_ref().map(|k| k.user_id)) =>
        {
            (g, o)
        }
        Some((s, _, _)) if s != stream => return Some(Err(TokenError::WrongStream)),
        _ => match keys.verify(token, stream) {
            Ok(g) => {
                f.st.jwt_seen
                    .insert(token.to_owned(), (stream.to_owned(), g.clone(), owner));
                (g, owner)
            }
            Err(e) => return Some(Err(e)),
        },
    };
    Some(Ok(Foreign {
        exp: g.exp,
        session: g.session,
        scope: Scope {
            mode: Mode::Jwt,
            login: g.login,
            key: Some(KeyRef {
                kid: g.kid.clone(),
                owner,
            }),
            rules: g.rules.clone(),
            external: None,
            access: g.access.clone(),
        },
    }))
}

fn cloudfront(f: &Facts<'_, '_>) -> Option<Result<Foreign, TokenError>> {
    let native = &f.st.cloudfront_native;
    let (signed, rest) = match f.req.query.and_then(cloudfront::Signed::from_query) {
        Some((s, rest)) => (s, rest),
        None => (
            cloudfront::Signed::from_cookies(f.cookies())?,
            String::new(),
        ),
    };
    let t = cloudfront::Target {
        host: f.req.host.unwrap_or(""),
        path: f.req.path,
        rest_query: &rest,
        ip: f.viewer.ip,
        now: f.viewer.now,
    };
    Some(
        f.st.cfg
            .tokens
            .cloudfront
            .verify(&signed, &t, native)
            .map(|g| Foreign::of(Mode::CloudFront, g)),
    )
}

fn akamai(f: &Facts<'_, '_>) -> Option<Result<Foreign, TokenError>> {
    let key = f.st.cfg.tokens.akamai.as_ref()?;
    let token = f
        .query_param("hdnts")
        .or_else(|| f.query_param("__token__"))
        .or_else(|| f.cookies().find(|(n, _)| *n == "__token__").map(|(_, v)| v))?;
    let token = percent_encoding::percent_decode_str(token).decode_utf8_lossy();
    Some(
        akamai::verify(&key.0, &token, f.req.path, f.viewer.ip, f.viewer.now)
            .map(|g| Foreign::of(Mode::Akamai, g)),
    )
}

fn secure_link(f: &Facts<'_, '_>) -> Option<Result<Foreign, TokenError>> {
    let secret = f.st.cfg.tokens.secure_link.as_ref()?;
    let md5 = f.query_param("md5")?;
    // nginx's `$uri`: the decoded path.
    let uri = percent_encoding::percent_decode_str(f.req.path).decode_utf8_lossy();
    Some(
        secure_link::verify(
            &secret.0,
            md5,
            f.query_param("expires"),
            &uri,
            f.viewer.ip,
            f.viewer.now,
        )
        .map(|g| Foreign::of(Mode::SecureLink, g)),
    )
}
