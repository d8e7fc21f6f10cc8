//! Native stream tokens: stateless, so every edge node verifies them with no lookup.
//!
//! A token is the URL-safe base64 (no padding) of this byte layout:
//!
//! ```text
//! 0       version (1)
//! 1       key id: which key of the keyring signed it (rotation)
//! 2..18   session id (random, 16 bytes)
//! 18..22  exp, u32 big-endian unix seconds: the short expiry
//! 22..26  session_exp, u32 unix seconds: a bound token is renewed until then
//! 26      flags: bit 0 = bound to a client IP prefix, bit 1 = bound to a User-Agent,
//!         bit 2 = the session is a stored login session (the edge checks it is still live),
//!         bit 3 = issued in exchange for a foreign token (JWT, CloudFront, Akamai, secure_link)
//! 27      IP prefix length in bits (IPv4 0..=32, IPv6 0..=128)
//! 28..36  IP tag: keyed SipHash of the masked client IP (zero when unbound)
//! 36..44  UA tag: keyed SipHash of the User-Agent (zero when unbound)
//! 44      n = length of the stream id (1..=64)
//! 45..    stream id bytes
//! +2      m = length of the scope, u16 big-endian (version 2)
//! +m      the scope (version 2): what the grant allows beyond its stream (see [`Scope`])
//! +16     HMAC-SHA256 over everything before it, truncated to 128 bits
//! ```
//!
//! The scope is the rest of the **grant** a credential was exchanged for: the way in it came
//! through, the login session and the playback key that can revoke it, a JWT's rules
//! (allowed and strict origins, viewer id, resolution cap) and an external handler's
//! decision time. It travels under the MAC, so every edge sharing the key file decides the
//! same from the token alone, after any restart. Version 1 tokens (no scope) are still
//! accepted for the edge's own path mode; a version 1 token issued in exchange for a
//! foreign credential is refused, since its rules are unknown (fail closed).
//!
//! The stream id and the binding tags are in clear (MAC-protected) so that a valid token
//! presented for another stream, from another IP or with another User-Agent is told apart
//! (403) from a forged or malformed one (401). The tags are keyed, so a token reveals
//! neither the viewer's address nor their User-Agent.

pub mod akamai;
pub mod cloudfront;
mod hmac;
pub mod jwt;
mod keys;
pub mod rsa2048;
pub mod secure_link;

pub use keys::{KeyError, Keyring};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

const VERSION_1: u8 = 1;
const VERSION: u8 = 2;
const HEADER_LEN: usize = 45;
const MAC_LEN: usize = 16;
/// Longest stream id a token can carry.
pub const MAX_STREAM_ID: usize = 64;
/// Longest encoded scope (a JWT's rules are the bulk of it: see [`Scope::encode`]).
pub const MAX_SCOPE: usize = 768;
const MAX_TOKEN_BYTES: usize = HEADER_LEN + MAX_STREAM_ID + 2 + MAX_SCOPE + MAC_LEN;
/// Longest token string accepted before any decoding is attempted.
pub const MAX_TOKEN_CHARS: usize = (MAX_TOKEN_BYTES * 4).div_ceil(3);

const FLAG_IP: u8 = 1;
const FLAG_UA: u8 = 2;
const FLAG_SESSION: u8 = 4;
const FLAG_EXCHANGED: u8 = 8;

/// Who a token is bound to. `None` means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// The client IP and the prefix length that must match.
    pub ip: Option<(IpAddr, u8)>,
    /// The exact User-Agent string.
    pub ua: Option<String>,
}

/// What a token grants, as issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub stream: String,
    pub session: [u8; 16],
    pub exp: u32,
    pub session_exp: u32,
    pub binding: Binding,
    /// `session` names a login session in the store (issued by the admin): the edge refuses
    /// the token (403) once that session has ended. Tokens from `hlsgate token` have none.
    pub stored_session: bool,
    /// What the grant allows beyond its stream (see [`Scope`]).
    pub scope: Scope,
}

/// What a grant allows and what revokes it, beyond its stream, viewer and expiry: carried
/// in the native token under its MAC (token version 2), so that every edge decides the
/// same from the token alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The way in the grant came through ([`Mode::Path`]: the edge's own token). The
    /// stream's `auth` list is checked against it on every request.
    pub mode: Mode,
    /// A login session that ends the grant when it ends (logout, session expiry): the
    /// admin's own JWTs and cookies carry one.
    pub login: Option<[u8; 16]>,
    /// The key that signed the credential; deleting (or unconfiguring) it ends the grant.
    pub key: Option<KeyRef>,
    /// A JWT's `aws:` rules (allowed and strict origins, viewer id, resolution cap).
    pub rules: Option<std::sync::Arc<jwt::Rules>>,
    /// An external handler's allow: asked again once `cache_ttl` has passed since.
    pub external: Option<ExternalGrant>,
    /// The credential's access rules (a JWT's `accessRules`, the edge's own cookies'
    /// policy): applied on top of the stream's, so they only ever narrow them.
    pub access: Option<std::sync::Arc<crate::rules::AccessRules>>,
}

/// The key a credential was verified with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    /// The JWT `kid` or CloudFront key pair id.
    pub kid: String,
    /// The user who registered it (`/api/playback-keys`): it opens only their streams.
    /// `None`: a configured key or the edge's own.
    pub owner: Option<i64>,
}

/// When an external handler allowed the viewer session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalGrant {
    /// Unix seconds.
    pub decided_at: u32,
    /// The handler did not answer and `allow_by_default` let the viewer in: the grant ends
    /// at the next decision and is never renewed past it.
    pub fail_open: bool,
}

const SCOPE_LOGIN: u8 = 1;
const SCOPE_KEY: u8 = 2;
const SCOPE_OWNER: u8 = 3;
const SCOPE_RULES: u8 = 4;
const SCOPE_EXTERNAL: u8 = 5;
const SCOPE_ACCESS: u8 = 6;

impl Scope {
    /// The scope of a path-mode token.
    pub fn path() -> Scope {
        Scope::default()
    }

    /// `mode`, then one `tag, u16 length, value` field for each part present. `None` when
    /// it does not fit [`MAX_SCOPE`] (a JWT with an outsized origin list).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        if *self == Scope::default() {
            return Some(out);
        }
        out.push(self.mode as u8);
        let field = |out: &mut Vec<u8>, tag: u8, value: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
        };
        if let Some(l) = &self.login {
            field(&mut out, SCOPE_LOGIN, l);
        }
        // Every URI of a rewritten playlist carries the token: a configured key costs its
        // kid only, the owner of a registered one 8 bytes more.
        if let Some(k) = &self.key {
            field(&mut out, SCOPE_KEY, k.kid.as_bytes());
            if let Some(owner) = k.owner {
                field(&mut out, SCOPE_OWNER, &owner.to_be_bytes());
            }
        }
        if let Some(r) = &self.rules {
            let mut v = vec![u8::from(r.strict_origin)];
            v.extend_from_slice(&r.max_height.unwrap_or(0).min(u16::MAX as u32).to_be_bytes()[2..]);
            let vid = r.viewer_id.as_deref().unwrap_or("");
            v.push(u8::try_from(vid.len()).ok()?);
            v.extend_from_slice(vid.as_bytes());
            for o in &r.allow_origins {
                v.push(u8::try_from(o.len()).ok()?);
                v.extend_from_slice(o.as_bytes());
            }
            field(&mut out, SCOPE_RULES, &v);
        }
        if let Some(e) = &self.external {
            let mut v = e.decided_at.to_be_bytes().to_vec();
            v.push(u8::from(e.fail_open));
            field(&mut out, SCOPE_EXTERNAL, &v);
        }
        if let Some(a) = &self.access {
            let mut v = Vec::new();
            a.encode(&mut v);
            field(&mut out, SCOPE_ACCESS, &v);
        }
        (out.len() <= MAX_SCOPE).then_some(out)
    }

    /// The inverse of [`Scope::encode`]; `None` for anything it would not have written.
    fn decode(b: &[u8]) -> Option<Scope> {
        let Some((&mode, mut rest)) = b.split_first() else {
            return Some(Scope::default());
        };
        let mut s = Scope {
            mode: *Mode::ALL.get(mode as usize)?,
            ..Scope::default()
        };
        let mut last = 0;
        while let [tag, a, b, tail @ ..] = rest {
            let len = u16::from_be_bytes([*a, *b]) as usize;
            if *tag <= last || tail.len() < len {
                return None;
            }
            last = *tag;
            let (v, tail) = tail.split_at(len);
            rest = tail;
            match *tag {
                SCOPE_LOGIN => s.login = Some(v.try_into().ok()?),
                SCOPE_KEY => {
                    s.key = Some(KeyRef {
                        kid: std::str::from_utf8(v).ok()?.to_owned(),
                        owner: None,
                    })
                }
                SCOPE_OWNER => s.key.as_mut()?.owner = Some(i64::from_be_bytes(v.try_into().ok()?)),
                SCOPE_RULES => s.rules = Some(std::sync::Arc::new(decode_rules(v)?)),
                SCOPE_EXTERNAL => {
                    let [a, b, c, d, f] = v else { return None };
                    s.external = Some(ExternalGrant {
                        decided_at: u32::from_be_bytes([*a, *b, *c, *d]),
                        fail_open: *f != 0,
                    });
                }
                SCOPE_ACCESS => {
                    s.access = Some(std::sync::Arc::new(crate::rules::AccessRules::decode(v)?))
                }
                _ => return None,
            }
        }
        rest.is_empty().then_some(s)
    }
}

fn decode_rules(v: &[u8]) -> Option<jwt::Rules> {
    let [strict, h1, h2, vlen, rest @ ..] = v else {
        return None;
    };
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let (vid, mut rest) = rest.split_at_checked(*vlen as usize)?;
    let mut allow_origins = Vec::new();
    while let [n, tail @ ..] = rest {
        let (o, tail) = tail.split_at_checked(*n as usize)?;
        allow_origins.push(text(o)?);
        rest = tail;
    }
    let height = u16::from_be_bytes([*h1, *h2]) as u32;
    Some(jwt::Rules {
        allow_origins,
        strict_origin: *strict != 0,
        viewer_id: (*vlen > 0).then(|| text(vid)).flatten(),
        max_height: (height > 0).then_some(height),
    })
}

/// The viewer presenting a token, as the edge sees them.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    pub stream: &'a str,
    pub ip: IpAddr,
    pub ua: &'a str,
    pub now: u32,
}

/// A token that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub kid: u8,
    pub session: [u8; 16],
    pub exp: u32,
    pub session_exp: u32,
    /// The short expiry has passed; the token was renewed because it came from the IP and
    /// User-Agent it is bound to while its session is alive. The caller must hand out a new
    /// token (`X-New-Token`).
    pub expired_renewable: bool,
    /// What the grant allows beyond its stream (carried in the token).
    pub scope: Scope,
    flags: u8,
    prefix: u8,
}

impl Verified {
    /// Whether the token's session is a stored login session that must still be live.
    pub fn stored_session(&self) -> bool {
        self.flags & FLAG_SESSION != 0
    }

    /// Whether the token was issued for a foreign credential (a mode other than path).
    pub fn exchanged(&self) -> bool {
        self.scope.mode != Mode::Path
    }
}

/// What a foreign credential (CloudFront, Akamai, secure_link) proves: when the viewer
/// session it opens ends, and which session it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignGrant {
    /// Unix seconds.
    pub exp: u32,
    pub session: [u8; 16],
    /// The key that verified it (CloudFront key pair id).
    pub key: Option<String>,
    /// The login session the credential names (the edge's own cookies).
    pub login: Option<[u8; 16]>,
    /// The access rules the credential carries (the edge's own cookies' policy).
    pub access: Option<std::sync::Arc<crate::rules::AccessRules>>,
}

impl ForeignGrant {
    /// The grant of a credential whose signed content (what the signature or MAC covers,
    /// never the signature itself: ECDSA signatures are malleable) is `signed`, ending at
    /// `exp`.
    pub fn new(exp: u64, signed: &[&[u8]]) -> ForeignGrant {
        ForeignGrant {
            exp: exp.min(u32::MAX as u64) as u32,
            session: session_of(signed),
            key: None,
            login: None,
            access: None,
        }
    }
}

/// A stable viewer-session id for a credential: what its signature covers (with the key
/// id), hashed (SHA-256, 16 bytes). Derived from signed content, not from signature bytes,
/// so that a malleated signature (ECDSA's `s -> n - s`) is the same session.
pub fn session_of(signed: &[&[u8]]) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in signed {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let digest = ctx.finish();
    let mut session = [0u8; 16];
    session.copy_from_slice(&digest.as_ref()[..16]);
    session
}

/// The ways a viewer can be admitted (SPEC "More ways in"). A mode is on when its keys are
/// configured; `streams.NAME.auth` narrows them per stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `/api/hls/{token}/...`: the edge's own token (the Go seed).
    #[default]
    Path,
    /// `?token=JWT` (IVS).
    Jwt,
    /// CloudFront signed URLs and cookies.
    CloudFront,
    /// Akamai EdgeAuth `hdnts` / `__token__`.
    Akamai,
    /// nginx `secure_link` `md5`/`expires`.
    SecureLink,
    /// No credentials: the platform's handler decides (`auth.external`, Nimble-style).
    External,
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::Path,
        Mode::Jwt,
        Mode::CloudFront,
        Mode::Akamai,
        Mode::SecureLink,
        Mode::External,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Path => "path",
            Mode::Jwt => "jwt",
            Mode::CloudFront => "cloudfront",
            Mode::Akamai => "akamai",
            Mode::SecureLink => "secure_link",
            Mode::External => "external",
        }
    }

    pub fn from_name(n: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == n)
    }
}

/// Why a token was refused, whatever its mode (native, JWT). `status()` maps each to the
/// SPEC's HTTP status; `message()` is the JSON error text, `reason()` the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum TokenError {
    Malformed,
    Forged,
    Expired,
    /// A JWT's `nbf` is still ahead.
    NotYetValid,
    WrongStream,
    WrongViewer,
    SessionEnded,
}

impl TokenError {
    /// 401 for tokens that prove nothing; 403 for valid tokens used where they do not apply.
    pub fn status(self) -> u16 {
        match self {
            TokenError::Malformed
            | TokenError::Forged
            | TokenError::Expired
            | TokenError::NotYetValid => 401,
            TokenError::WrongStream | TokenError::WrongViewer | TokenError::SessionEnded => 403,
        }
    }

    /// Label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Forged => "forged",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongStream => "wrong_stream",
            TokenError::WrongViewer => "wrong_viewer",
            TokenError::SessionEnded => "session_ended",
        }
    }

    /// What the viewer is told.
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed token",
            TokenError::Forged => "invalid token signature",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::WrongStream => "token is for another stream",
            TokenError::WrongViewer => "token is bound to another client",
            TokenError::SessionEnded => "session has ended",
        }
    }
}

/// Mask `ip` to its first `prefix` bits, IPv4-mapped IPv6 addresses treated as IPv4.
fn tag_input(ip: IpAddr, prefix: u8) -> [u8; 18] {
    let mut buf = [0u8; 18];
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let p = prefix.min(32) as u32;
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            buf[0] = 4;
            buf[1] = p as u8;
            buf[2..6].copy_from_slice(&(u32::from(v4) & mask).to_be_bytes());
        }
        IpAddr::V6(v6) => {
            let p = prefix.min(128) as u32;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            buf[0] = 6;
            buf[1] = p as u8;
            buf[2..18].copy_from_slice(&(u128::from(v6) & mask).to_be_bytes());
        }
    }
    buf
}

impl Keyring {
    /// Sign a grant with the active key. Its scope must fit (see [`Keyring::try_issue`]);
    /// the edge's own grants always do.
    pub fn issue(&self, grant: &Grant) -> String {
        self.try_issue(grant)
            .expect("scopes that may not fit are issued with try_issue")
    }

    /// Sign a grant with the active key; `None` when its scope does not fit
    /// [`MAX_SCOPE`] (a foreign credential with an outsized origin list).
    pub fn try_issue(&self, grant: &Grant) -> Option<String> {
        self.issue_with(self.active_kid(), grant)
    }

    fn issue_with(&self, kid: u8, g: &Grant) -> Option<String> {
        let key = self.key(kid).expect("kid of the keyring");
        let sid = g.stream.as_bytes();
        assert!(
            !sid.is_empty() && sid.len() <= MAX_STREAM_ID,
            "stream ids are validated before tokens are issued"
        );
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        buf[0] = VERSION;
        buf[1] = kid;
        buf[2..18].copy_from_slice(&g.session);
        buf[18..22].copy_from_slice(&g.exp.to_be_bytes());
        buf[22..26].copy_from_slice(&g.session_exp.to_be_bytes());
        let mut flags = if g.stored_session { FLAG_SESSION } else { 0 };
        if g.scope.mode != Mode::Path {
            flags |= FLAG_EXCHANGED;
        }
        if let Some((ip, prefix)) = g.binding.ip {
            flags |= FLAG_IP;
            let input = tag_input(ip, prefix);
            buf[27] = input[1];
            buf[28..36].copy_from_slice(&key.tag(&input));
        }
        if let Some(ua) = &g.binding.ua {
            flags |= FLAG_UA;
            buf[36..44].copy_from_slice(&key.tag(ua.as_bytes()));
        }
        buf[26] = flags;
        buf[44] = sid.len() as u8;
        let mut body_len = HEADER_LEN + sid.len();
        buf[HEADER_LEN..body_len].copy_from_slice(sid);
        let scope = g.scope.encode()?;
        buf[body_len..body_len + 2].copy_from_slice(&(scope.len() as u16).to_be_bytes());
        body_len += 2;
        buf[body_len..body_len + scope.len()].copy_from_slice(&scope);
        body_len += scope.len();
        let mac = key.mac(&[&buf[..body_len]]);
        buf[body_len..body_len + MAC_LEN].copy_from_slice(&mac[..MAC_LEN]);
        Some(URL_SAFE_NO_PAD.encode(&buf[..body_len + MAC_LEN]))
    }

    /// Check a token presented by `viewer`. Order: shape (401), signature (401), stream and
    /// binding (403), expiry (401, or renewal for a bound token within its session).
    pub fn verify(&self, token: &str, viewer: &Viewer<'_>) -> Result<Verified, TokenError> {
        let t = token.as_bytes();
        if t.len() < (HEADER_LEN + 1 + MAC_LEN) * 4 / 3 || t.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let mut buf = [0u8; MAX_TOKEN_BYTES + 3];
        let n = URL_SAFE_NO_PAD
            .decode_slice(t, &mut buf)
            .map_err(|_| TokenError::Malformed)?;
        let raw = &buf[..n];
        let sid_len = raw[HEADER_LEN - 1] as usize;
        let sid_end = HEADER_LEN + sid_len;
        if sid_len == 0 || sid_len > MAX_STREAM_ID || n < sid_end + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let scope_len = match raw[0] {
            VERSION_1 => None,
            VERSION if n >= sid_end + 2 + MAC_LEN => {
                Some(u16::from_be_bytes([raw[sid_end], raw[sid_end + 1]]) as usize)
            }
            _ => return Err(TokenError::Malformed),
        };
        let body_len = sid_end + scope_len.map_or(0, |m| 2 + m);
        if n != body_len + MAC_LEN {
            return Err(TokenError::Malformed);
        }
        let key = self.key(raw[1]).ok_or(TokenError::Forged)?;
        let mac = key.mac(&[&raw[..body_len]]);
        if !bool::from(mac[..MAC_LEN].ct_eq(&raw[body_len..])) {
            return Err(TokenError::Forged);
        }
        if !bool::from(raw[HEADER_LEN..sid_end].ct_eq(viewer.stream.as_bytes())) {
            return Err(TokenError::WrongStream);
        }
        let flags = raw[26];
        let scope = match scope_len {
            Some(_) => Scope::decode(&raw[sid_end + 2..body_len]).ok_or(TokenError::Malformed)?,
            // A version 1 token knows no rules: only the edge's own path grants are whole.
            None if flags & FLAG_EXCHANGED != 0 => return Err(TokenError::Malformed),
            None => Scope::path(),
        };
        if (scope.mode != Mode::Path) != (flags & FLAG_EXCHANGED != 0) {
            return Err(TokenError::Malformed);
        }
        let prefix = raw[27];
        let mut ok = subtle::Choice::from(1);
        if flags & FLAG_IP != 0 {
            ok &= key.tag(&tag_input(viewer.ip, prefix)).ct_eq(&raw[28..36]);
        }
        if flags & FLAG_UA != 0 {
            ok &= key.tag(viewer.ua.as_bytes()).ct_eq(&raw[36..44]);
        }
        if !bool::from(ok) {
            return Err(TokenError::WrongViewer);
        }
        let exp = u32::from_be_bytes([raw[18], raw[19], raw[20], raw[21]]);
        let session_exp = u32::from_be_bytes([raw[22], raw[23], raw[24], raw[25]]);
        let fully_bound = flags & (FLAG_IP | FLAG_UA) == FLAG_IP | FLAG_UA;
        let expired_renewable = if viewer.now <= exp {
            false
        } else if fully_bound && viewer.now <= session_exp {
            true
        } else {
            return Err(TokenError::Expired);
        };
        let mut session = [0u8; 16];
        session.copy_from_slice(&raw[2..18]);
        Ok(Verified {
            kid: raw[1],
            session,
            exp,
            session_exp,
            expired_renewable,
            scope,
            flags,
            prefix,
        })
    }

    /// The token to hand back in `X-New-Token` to a viewer that just passed `verify`: the
    /// presented one while more than half of `ttl` remains and its key is the active one,
    /// else a fresh token for the same session and binding (re-derived from the viewer that
    /// just matched it, so it also moves old-key tokens to the active key), expiring `ttl`
    /// from now but never after its session.
    pub fn renew_for(
        &self,
        presented: &str,
        v: &Verified,
        viewer: &Viewer<'_>,
        ttl: u32,
    ) -> String {
        if !v.expired_renewable
            && v.kid == self.active_kid()
            && v.exp.saturating_sub(viewer.now) > ttl / 2
        {
            return presented.to_owned();
        }
        let binding = Binding {
            ip: (v.flags & FLAG_IP != 0).then_some((viewer.ip, v.prefix)),
            ua: (v.flags & FLAG_UA != 0).then(|| viewer.ua.to_owned()),
        };
        self.issue(&Grant {
            stream: viewer.stream.to_owned(),
            session: v.session,
            exp: viewer
                .now
                .saturating_add(ttl)
                .min(v.session_exp.max(viewer.now)),
            session_exp: v.session_exp,
            binding,
            stored_session: v.stored_session(),
            scope: v.scope.clone(),
        })
    }

    /// Signature that makes one exact origin path outside a stream's base folder reachable
    /// through the edge: URL-safe base64 of the key id and a 96-bit truncated HMAC over the
    /// stream id and the path. Made when a playlist naming that path is rewritten.
    pub fn sign_path(&self, stream: &str, path: &str) -> String {
        self.sign_short(&[b"path\0", stream.as_bytes(), b"\0", path.as_bytes()])
    }

    /// Whether `sig` is [`Keyring::sign_path`]'s signature of `path` for `stream`.
    pub fn verify_path(&self, stream: &str, path: &str, sig: &str) -> bool {
        self.verify_short(&[b"path\0", stream.as_bytes(), b"\0", path.as_bytes()], sig)
    }

    /// Signature that lets a grant capped at `cap` lines (a JWT's `aws:maximum-resolution`)
    /// have `scope` below the base of `stream`: a rendition's media playlist (`scope` is its
    /// path) or a folder of its segments (`scope` ends in `/`, `""` for the base itself).
    /// Made when the edge rewrites a playlist for such a grant; the cap is part of what is
    /// signed, so a signature made for one cap never opens more for a higher one's holder.
    pub fn sign_rendition(&self, stream: &str, cap: u32, scope: &str) -> String {
        self.sign_short(&rendition_parts(stream, &cap.to_be_bytes(), scope))
    }

    /// Whether `sig` is [`Keyring::sign_rendition`]'s signature.
    pub fn verify_rendition(&self, stream: &str, cap: u32, scope: &str, sig: &str) -> bool {
        self.verify_short(&rendition_parts(stream, &cap.to_be_bytes(), scope), sig)
    }

    /// Signature of the query `query` (its named part, see
    /// [`crate::playback::named_query`]) that a playlist gave the object at origin path
    /// `path` of `stream`: only such a query reaches the origin. Same form as
    /// [`Keyring::sign_path`], with its own domain label (a path signature is never a
    /// query signature).
    pub fn sign_query(&self, stream: &str, path: &str, query: &str) -> String {
        self.sign_short(&query_parts(stream, path, query))
    }

    /// Whether `sig` is [`Keyring::sign_query`]'s signature.
    pub fn verify_query(&self, stream: &str, path: &str, query: &str, sig: &str) -> bool {
        self.verify_short(&query_parts(stream, path, query), sig)
    }

    /// An edge's authorisation of one shield request (`origins.shield`): the short form
    /// over the request's path and query and its expiry, with a domain label of its own.
    pub fn sign_shield(&self, uri: &str, exp: u32) -> String {
        self.sign_short(&[b"shield\0", &exp.to_be_bytes(), uri.as_bytes()])
    }

    /// Whether `sig` is [`Keyring::sign_shield`]'s signature of `uri` and `exp`.
    pub fn verify_shield(&self, uri: &str, exp: u32, sig: &str) -> bool {
        self.verify_short(&[b"shield\0", &exp.to_be_bytes(), uri.as_bytes()], sig)
    }

    /// The short signature form: URL-safe base64 of the active key id and a 96-bit
    /// truncated HMAC over `parts`.
    fn sign_short(&self, parts: &[&[u8]]) -> String {
        let kid = self.active_kid();
        let mac = self.key(kid).expect("active key").mac(parts);
        let mut buf = [0u8; 13];
        buf[0] = kid;
        buf[1..].copy_from_slice(&mac[..12]);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Whether `sig` is [`Keyring::sign_short`]'s signature of `parts` (compared in
    /// constant time, by whichever key it names).
    fn verify_short(&self, parts: &[&[u8]], sig: &str) -> bool {
        let mut buf = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(sig.as_bytes(), &mut buf) {
            Ok(13) => {}
            _ => return false,
        }
        let Some(key) = self.key(buf[0]) else {
            return false;
        };
        bool::from(key.mac(parts)[..12].ct_eq(&buf[1..13]))
    }
}

/// What a rendition signature covers.
fn rendition_parts<'a>(stream: &'a str, cap: &'a [u8; 4], scope: &'a str) -> [&'a [u8]; 5] {
    [
        b"rendition\0",
        cap,
        stream.as_bytes(),
        b"\0",
        scope.as_bytes(),
    ]
}

/// What a query signature covers.
fn query_parts<'a>(stream: &'a str, path: &'a str, query: &'a str) -> [&'a [u8]; 6] {
    [
        b"query\0",
        stream.as_bytes(),
        b"\0",
        path.as_bytes(),
        b"\0",
        query.as_bytes(),
    ]
}

/// A random session id.
pub fn new_session_id() -> [u8; 16] {
    let mut s = [0u8; 16];
    getrandom::getrandom(&mut s).expect("OS random source");
    s
}

/// Current unix time in seconds, as tokens count it.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_text("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n")
            .unwrap()
    }

    fn grant(bind: bool) -> Grant {
        Grant {
            stream: "demo".into(),
            session: [7; 16],
            exp: 1_000,
            session_exp: 5_000,
            binding: if bind {
                Binding {
                    ip: Some(("203.0.113.9".parse().unwrap(), 24)),
                    ua: Some("ffmpeg".into()),
                }
            } else {
                Binding::default()
            },
            stored_session: false,
            scope: Scope::path(),
        }
    }

    fn viewer(now: u32) -> Viewer<'static> {
        Viewer {
            stream: "demo",
            ip: "203.0.113.77".parse().unwrap(),
            ua: "ffmpeg",
            now,
        }
    }

    #[test]
    fn round_trip_and_url_safe() {
        let k = ring();
        let t = k.issue(&grant(true));
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let v = k.verify(&t, &viewer(900)).unwrap();
        assert_eq!(v.session, [7; 16]);
        assert!(!v.expired_renewable);
    }

    #[test]
    fn stored_session_flag_is_signed_and_survives_renewal() {
        let k = ring();
        let mut g = grant(true);
        g.stored_session = true;
        let t = k.issue(&g);
        let v = k.verify(&t, &viewer(1_500)).unwrap();
        assert!(v.stored_session() && v.expired_renewable);
        let renewed = k.renew_for(&t, &v, &viewer(1_500), 300);
        assert_ne!(renewed, t);
        assert!(k.verify(&renewed, &viewer(1_600)).unwrap().stored_session());
        let plain = k.issue(&grant(true));
        assert!(!k.verify(&plain, &viewer(900)).unwrap().stored_session());
        // Clearing the flag (byte 26) breaks the signature.
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[26] &= !FLAG_SESSION;
        let stripped = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(k.verify(&stripped, &viewer(900)), Err(TokenError::Forged));
    }

    #[test]
    fn derived_secrets_differ_per_label_and_lead_with_the_active_key() {
        let k = Keyring::from_text(
            "2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n\
             1 LywrKikoJyYlJCMiISAfHh0cGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA\n",
        )
        .unwrap();
        let a = k.derive("admin jwt");
        assert_eq!(
            a.iter().map(|(kid, _)| *kid).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_ne!(a[0].1, a[1].1);
        assert_ne!(a[0].1, k.derive("other")[0].1);
    }

    #[test]
    fn every_flipped_character_is_refused_with_401() {
        let k = ring();
        let t = k.issue(&grant(true));
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(b).unwrap();
            let err = k.verify(&forged, &viewer(900)).unwrap_err();
            assert_eq!(err.status(), 401, "char {i}: {err:?}");
        }
    }

    #[test]
    fn binding_is_enforced_with_403() {
        let k = ring();
        let t = k.issue(&grant(true));
        let mut v = viewer(900);
        v.ua = "curl";
        assert_eq!(k.verify(&t, &v), Err(TokenError::WrongViewer));
        let mut v = viewer(900);
        v.ip = "203.0.114.1".parse().unwrap();
        assert_eq!(k.verify(&t, &v), Err(TokenError::WrongViewer));
        let mut v = viewer(900);
        v.stream = "other";
        assert_eq!(k.verify(&t, &v), Err(TokenError::WrongStream));
    }

    #[test]
    fn ipv4_mapped_ipv6_matches_ipv4() {
        let k = ring();
        let t = k.issue(&grant(true));
        let mut v = viewer(900);
        v.ip = "::ffff:203.0.113.5".parse().unwrap();
        assert!(k.verify(&t, &v).is_ok());
    }

    #[test]
    fn expiry_renews_only_bound_tokens_within_session() {
        let k = ring();
        let bound = k.issue(&grant(true));
        let v = k.verify(&bound, &viewer(2_000)).unwrap();
        assert!(v.expired_renewable);
        assert_eq!(
            k.verify(&bound, &viewer(5_001)),
            Err(TokenError::Expired),
            "past the session"
        );
        let unbound = k.issue(&grant(false));
        assert_eq!(k.verify(&unbound, &viewer(2_000)), Err(TokenError::Expired));

        let fresh = k.renew_for(&bound, &v, &viewer(2_000), 300);
        assert_ne!(fresh, bound);
        let again = k.verify(&fresh, &viewer(2_000)).unwrap();
        assert_eq!(again.exp, 2_300);
        assert!(!again.expired_renewable);
        assert_eq!(again.session, [7; 16]);
    }

    #[test]
    fn renew_keeps_token_while_fresh() {
        let k = ring();
        let t = k.issue(&grant(true));
        let v = k.verify(&t, &viewer(900)).unwrap();
        // 100 s left of a 300 s ttl: less than half, so a new one is minted.
        assert_ne!(k.renew_for(&t, &v, &viewer(900), 300), t);
        let v = k.verify(&t, &viewer(500)).unwrap();
        assert_eq!(k.renew_for(&t, &v, &viewer(500), 300), t);
    }

    #[test]
    fn rotation_keeps_old_tokens_and_resigns_them() {
        let old = ring();
        let t = old.issue(&grant(true));
        let rotated = Keyring::from_text(
            "2 ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm\n\
             1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n",
        )
        .unwrap();
        let v = rotated.verify(&t, &viewer(500)).unwrap();
        assert_eq!(v.kid, 1);
        let fresh = rotated.renew_for(&t, &v, &viewer(500), 300);
        assert_eq!(rotated.verify(&fresh, &viewer(500)).unwrap().kid, 2);
        // A keyring without the old key refuses it as forged.
        let only_new =
            Keyring::from_text("2 ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm\n").unwrap();
        assert_eq!(only_new.verify(&t, &viewer(500)), Err(TokenError::Forged));
    }

    fn full_scope() -> Scope {
        Scope {
            mode: Mode::Jwt,
            login: Some([9; 16]),
            key: Some(KeyRef {
                kid: "user-key".into(),
                owner: Some(42),
            }),
            rules: Some(std::sync::Arc::new(jwt::Rules {
                allow_origins: vec!["https://app.example".into(), "https://*.example.net".into()],
                strict_origin: true,
                viewer_id: Some("viewer-7".into()),
                max_height: Some(720),
            })),
            external: Some(ExternalGrant {
                decided_at: 77,
                fail_open: true,
            }),
            access: Some(std::sync::Arc::new(
                crate::rules::AccessRules::from_json(&serde_json::json!([
                    {"type": "ip.geoip.country", "country": ["US"], "action": "block"},
                    {"type": "ip.src", "ip": ["192.0.2.0/24", "2001:db8::/48"], "action": "allow"},
                    {"type": "any", "action": "block"}
                ]))
                .unwrap(),
            )),
        }
    }

    #[test]
    fn the_grant_travels_in_the_token_and_survives_renewal() {
        let k = ring();
        let mut g = grant(true);
        g.scope = full_scope();
        let t = k.issue(&g);
        let v = k.verify(&t, &viewer(900)).unwrap();
        assert_eq!(v.scope, full_scope());
        assert!(v.exchanged());
        // renewed (past its short expiry): the same grant
        let v = k.verify(&t, &viewer(1_500)).unwrap();
        let renewed = k.renew_for(&t, &v, &viewer(1_500), 300);
        assert_ne!(renewed, t);
        assert_eq!(
            k.verify(&renewed, &viewer(1_600)).unwrap().scope,
            full_scope()
        );
        // a path token's scope is empty and costs two bytes
        let plain = k.issue(&grant(true));
        assert_eq!(k.verify(&plain, &viewer(900)).unwrap().scope, Scope::path());
        assert!(t.len() > plain.len());
    }

    #[test]
    fn a_scope_cannot_be_dropped_or_changed() {
        let k = ring();
        let mut g = grant(true);
        g.scope = full_scope();
        let t = k.issue(&g);
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let scope_at = HEADER_LEN + 4 + 2;
        for i in scope_at..raw.len() - MAC_LEN {
            let mut r = raw.clone();
            r[i] ^= 1;
            let e = k
                .verify(&URL_SAFE_NO_PAD.encode(&r), &viewer(900))
                .unwrap_err();
            assert_eq!(e, TokenError::Forged, "byte {i}");
        }
        // the same token cut down to version 1 without its scope: no MAC fits
        let mut v1 = raw[..HEADER_LEN + 4].to_vec();
        v1[0] = VERSION_1;
        v1.extend_from_slice(&raw[raw.len() - MAC_LEN..]);
        assert!(k
            .verify(&URL_SAFE_NO_PAD.encode(&v1), &viewer(900))
            .is_err());
    }

    #[test]
    fn a_version_1_token_is_a_path_grant_and_an_exchanged_one_is_refused() {
        let k = ring();
        // version 1 as the edge issued it before grants: header, stream, MAC
        let v1 = |flags: u8| {
            let mut b = vec![0u8; HEADER_LEN];
            b[0] = VERSION_1;
            b[1] = 1;
            b[18..22].copy_from_slice(&1_000u32.to_be_bytes());
            b[22..26].copy_from_slice(&1_000u32.to_be_bytes());
            b[26] = flags;
            b[44] = 4;
            b.extend_from_slice(b"demo");
            let mac = k.key(1).unwrap().mac(&[&b]);
            b.extend_from_slice(&mac[..MAC_LEN]);
            URL_SAFE_NO_PAD.encode(b)
        };
        let v = k.verify(&v1(0), &viewer(900)).unwrap();
        assert_eq!(v.scope, Scope::path());
        // its rules are unknown: fail closed
        assert_eq!(
            k.verify(&v1(FLAG_EXCHANGED), &viewer(900)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn scopes_decode_only_what_encode_writes() {
        let bytes = full_scope().encode().unwrap();
        assert_eq!(Scope::decode(&bytes), Some(full_scope()));
        for cut in 1..bytes.len() {
            assert!(Scope::decode(&bytes[..cut]).is_none_or(|s| s != full_scope()));
        }
        assert_eq!(Scope::decode(&[200]), None, "unknown mode");
        assert_eq!(Scope::decode(&[1, 9, 0, 0]), None, "unknown field");
        // too many origins to carry: refused when granting, never cut
        let mut big = full_scope();
        big.rules = Some(std::sync::Arc::new(jwt::Rules {
            allow_origins: vec!["https://a-long-origin-name.example.com".into(); 40],
            ..jwt::Rules::default()
        }));
        assert_eq!(big.encode(), None);
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let k = ring();
        for s in [
            "",
            "a",
            "!!!!",
            &"A".repeat(500),
            &"A".repeat(64),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(k.verify(s, &viewer(1)).is_err(), "{s}");
        }
    }

    #[test]
    fn query_signatures_bind_stream_path_and_query() {
        let k = ring();
        let sig = k.sign_query("s1", "/live/a.ts", "x=1");
        assert!(k.verify_query("s1", "/live/a.ts", "x=1", &sig));
        assert!(!k.verify_query("s1", "/live/a.ts", "x=2", &sig));
        assert!(!k.verify_query("s1", "/live/b.ts", "x=1", &sig));
        assert!(!k.verify_query("s2", "/live/a.ts", "x=1", &sig));
        // a path signature is not a query signature
        assert!(!k.verify_query("s1", "/live/a.ts", "", &k.sign_path("s1", "/live/a.ts")));
        assert!(!k.verify_query("s1", "/live/a.ts", "x=1", "garbage"));
    }

    #[test]
    fn path_signatures_bind_stream_and_path() {
        let k = ring();
        let sig = k.sign_path("demo", "/keys/k.bin");
        assert!(k.verify_path("demo", "/keys/k.bin", &sig));
        assert!(!k.verify_path("demo", "/keys/k2.bin", &sig));
        assert!(!k.verify_path("other", "/keys/k.bin", &sig));
        assert!(!k.verify_path("demo", "/keys/k.bin", "AAAA"));
    }

    #[test]
    fn shield_signatures_bind_uri_and_expiry_and_are_not_path_signatures() {
        let k = ring();
        let uri = "/_shield/http/o:80/live/a.ts";
        let sig = k.sign_shield(uri, 100);
        assert!(k.verify_shield(uri, 100, &sig));
        assert!(!k.verify_shield(uri, 101, &sig));
        assert!(!k.verify_shield("/_shield/http/o:80/live/b.ts", 100, &sig));
        assert!(!k.verify_path("shield", uri, &sig));
        let other = Keyring::from_text(
            "1 ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n",
        )
        .unwrap();
        assert!(!other.verify_shield(uri, 100, &sig));
    }
}
