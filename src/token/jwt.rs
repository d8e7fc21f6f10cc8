//! JWT playback tokens, as AWS IVS private channels issue them: `/hls/{stream}/{path}?token=JWT`,
//! signed ES384 (IVS), ES256 or RS256 with a private key whose public half the operator
//! registered (`tokens.jwt.keys: {KID: PEM}`).
//!
//! - The algorithm must match the key: ES256 a P-256 key, ES384 a P-384 key, RS256 an RSA
//!   key. `none` and the HMAC algorithms are refused (a public key is no HMAC secret).
//! - `kid` picks the key when present; IVS tokens carry none, then each key of the token's
//!   algorithm is tried.
//! - `exp` is required, `nbf` honoured, no leeway.
//! - The stream is the `stream` claim, or the text after the last `/` of
//!   `aws:channel-arn`.
//!
//! Pure: no I/O. The edge exchanges an accepted JWT for a native token (see
//! `edge::admission`), so segments never need the JWT.

use super::TokenError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Longest JWT accepted before any decoding.
pub const MAX_JWT_CHARS: usize = 8 * 1024;

/// The registered public keys.
#[derive(Clone, Default)]
pub struct JwtKeys {
    keys: Vec<JwtKey>,
}

#[derive(Clone)]
struct JwtKey {
    kid: String,
    alg: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<(&str, Algorithm)> =
            self.keys.iter().map(|k| (k.kid.as_str(), k.alg)).collect();
        f.debug_struct("JwtKeys").field("keys", &kids).finish()
    }
}

/// What an accepted JWT grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtGrant {
    /// Unix seconds.
    pub exp: u32,
    /// A stable id for the token (its signature hashed): the viewer session it opens.
    pub session: [u8; 16],
    /// The token's `aws:` claims beyond the channel, when it has any.
    pub rules: Option<std::sync::Arc<Rules>>,
    /// The `kid` of the key that verified it.
    pub kid: String,
    /// The login session the edge's own playback tokens name (`hlsgate:sid`): logging
    /// out ends them. Read only from tokens signed with the edge's own keys.
    pub login: Option<[u8; 16]>,
    /// The `accessRules` claim: where the viewer may watch from (they narrow the stream's).
    pub access: Option<std::sync::Arc<crate::rules::AccessRules>>,
}

/// The claim naming the login session in the edge's own playback tokens.
pub const LOGIN_CLAIM: &str = "hlsgate:sid";

/// What a JWT's `aws:` claims add to its viewer session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `aws:access-control-allow-origin`, split on `,` (`*` wildcards): the CORS answer.
    pub allow_origins: Vec<String>,
    /// `aws:strict-origin-enforcement`: requests from other `Origin`s (or none) are refused.
    pub strict_origin: bool,
    /// `aws:viewer-id`: revocable with `POST /api/viewers/revoke`.
    pub viewer_id: Option<String>,
    /// `aws:maximum-resolution` as lines: variants taller than this are removed from
    /// master playlists.
    pub max_height: Option<u32>,
}

impl Rules {
    /// Whether `origin` (an `Origin` header) is one the token allows.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|p| super::cloudfront::wildcard_match(p, origin))
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default, rename = "aws:channel-arn")]
    channel_arn: Option<String>,
    exp: u64,
    #[serde(default, rename = "aws:access-control-allow-origin")]
    allow_origin: Option<String>,
    #[serde(default, rename = "aws:strict-origin-enforcement")]
    strict_origin: Option<bool>,
    #[serde(default, rename = "aws:viewer-id")]
    viewer_id: Option<String>,
    #[serde(default, rename = "aws:maximum-resolution")]
    max_resolution: Option<String>,
    #[serde(default, rename = "hlsgate:sid")]
    login: Option<String>,
    /// Cloudflare Stream's `accessRules` (see [`crate::rules`]).
    #[serde(default, rename = "accessRules")]
    access_rules: Option<Vec<crate::rules::RuleDoc>>,
}

impl Claims {
    /// The `aws:` rules, `None` when the token has none. A value outside IVS's vocabulary
    /// makes the token malformed.
    fn rules(&self) -> Result<Option<Rules>, TokenError> {
        let max_height = match self.max_resolution.as_deref() {
            None => None,
            Some("SD") => Some(480),
            Some("HD") => Some(720),
            Some("FULL_HD") => Some(1080),
            Some(_) => return Err(TokenError::Malformed),
        };
        if self
            .viewer_id
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > 40)
        {
            return Err(TokenError::Malformed);
        }
        let allow_origins: Vec<String> = self
            .allow_origin
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        let rules = Rules {
            strict_origin: self.strict_origin.unwrap_or(false),
            allow_origins,
            viewer_id: self.viewer_id.clone(),
            max_height,
        };
        Ok((rules != Rules::default()).then_some(rules))
    }
}

/// The `kid` prefix of the edge's own playback-token keys.
pub const NATIVE_KID_PREFIX: &str = "hlsgate-";

/// The edge's own ES256 playback-token key pairs, derived from the token key file's keys
/// (`Keyring::derive` under [`NATIVE_LABEL`]), so every node with the same key file
/// signs and verifies the same tokens: `(kid, private PKCS#8 PEM, public SPKI PEM)`, the
/// active key first.
pub fn native_keys(derived: &[(u8, [u8; 32])]) -> Vec<(String, String, String)> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    derived
        .iter()
        .filter_map(|(kid, secret)| {
            let sk = p256::SecretKey::from_slice(secret).ok()?;
            let private = sk.to_pkcs8_pem(LineEnding::LF).ok()?.to_string();
            let public = sk.public_key().to_public_key_pem(LineEnding::LF).ok()?;
            Some((format!("{NATIVE_KID_PREFIX}{kid}"), private, public))
        })
        .collect()
}

/// The label the native keys are derived under.
pub const NATIVE_LABEL: &str = "jwt-playback-es256";

/// The public halves of [`native_keys`].
pub fn native_public(derived: &[(u8, [u8; 32])]) -> JwtKeys {
    let pems = native_keys(derived)
        .into_iter()
        .map(|(kid, _, public)| (kid, public))
        .collect();
    JwtKeys::from_pems(&pems).unwrap_or_default()
}

/// The curve or key type a public key PEM holds, from the OIDs in its DER.
fn algorithm_of(pem: &str) -> Option<Algorithm> {
    const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
    ];
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = STANDARD.decode(body).ok()?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if pem.contains("BEGIN RSA PUBLIC KEY") || has(RSA) {
        Some(Algorithm::RS256)
    } else if has(P384) {
        Some(Algorithm::ES384)
    } else if has(P256) {
        Some(Algorithm::ES256)
    } else {
        None
    }
}

impl JwtKeys {
    /// Keys from `KID -> public key PEM`. An error names the key id and the problem.
    pub fn from_pems(pems: &BTreeMap<String, String>) -> Result<JwtKeys, (String, String)> {
        let mut keys = Vec::new();
        for (kid, pem) in pems {
            let bad = |p: &str| (kid.clone(), p.to_owned());
            if pem.contains("PRIVATE KEY") {
                return Err(bad("a private key: register the public key only"));
            }
            let alg =
                algorithm_of(pem).ok_or_else(|| bad("not a P-256, P-384 or RSA public key PEM"))?;
            let key = match alg {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
                _ => DecodingKey::from_ec_pem(pem.as_bytes()),
            }
            .map_err(|e| bad(&format!("unreadable public key PEM: {e}")))?;
            keys.push(JwtKey {
                kid: kid.clone(),
                alg,
                key,
            });
        }
        Ok(JwtKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// These keys and `other`'s.
    pub fn merged(&self, other: &JwtKeys) -> JwtKeys {
        let mut keys = self.keys.clone();
        keys.extend(other.keys.iter().cloned());
        JwtKeys { keys }
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// The `kid` of a JWT's header, if it parses and names one.
    pub fn kid_of(token: &str) -> Option<String> {
        if token.len() > MAX_JWT_CHARS {
            return None;
        }
        jsonwebtoken::decode_header(token).ok()?.kid
    }

    /// Check `token` for `stream`: shape, algorithm, signature, `exp`/`nbf` against the
    /// system clock, then the stream.
    pub fn verify(&self, token: &str, stream: &str) -> Result<JwtGrant, TokenError> {
        if token.is_empty() || token.len() > MAX_JWT_CHARS {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::RS256
        ) {
            // `none` does not even parse; HS*: a public key is not an HMAC secret.
            return Err(TokenError::Forged);
        }
        let candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg && header.kid.as_deref().is_none_or(|kid| kid == k.kid)
        });
        let mut v = Validation::new(header.alg);
        v.leeway = 0;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        let mut result = Err(TokenError::Forged);
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(data) => {
                    result = Ok((data.claims, k.kid.clone()));
                    break;
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidRsaKey(_) => {}
                    ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                    ErrorKind::ImmatureSignature => return Err(TokenError::NotYetValid),
                    _ => return Err(TokenError::Malformed),
                },
            }
        }
        let (claims, kid) = result?;
        grant(claims, kid, token, stream)
    }
}

/// What verified `claims` of `token` grant for `stream`.
fn grant(claims: Claims, kid: String, token: &str, stream: &str) -> Result<JwtGrant, TokenError> {
    let named = claims
        .stream
        .as_deref()
        .or_else(|| {
            claims
                .channel_arn
                .as_deref()
                .and_then(|a| a.rsplit('/').next())
        })
        .ok_or(TokenError::Malformed)?;
    if named != stream {
        return Err(TokenError::WrongStream);
    }
    // The session is what the signature covers (header and payload), not the signature:
    // an ECDSA signature can be malleated into another valid one.
    let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
    let session = super::session_of(&[b"jwt", kid.as_bytes(), signed.as_bytes()]);
    let login = match &claims.login {
        Some(hex) if kid.starts_with(NATIVE_KID_PREFIX) => {
            Some(crate::store::session_bytes(hex).ok_or(TokenError::Malformed)?)
        }
        _ => None,
    };
    // Rules the edge cannot read would be rules it cannot apply: the token is refused.
    let access = match &claims.access_rules {
        Some(docs) => {
            crate::rules::AccessRules::from_docs(docs).map_err(|_| TokenError::Malformed)?
        }
        None => Default::default(),
    };
    Ok(JwtGrant {
        exp: claims.exp.min(u32::MAX as u64) as u32,
        session,
        rules: claims.rules()?.map(std::sync::Arc::new),
        kid,
        login,
        access: (!access.is_empty()).then(|| std::sync::Arc::new(access)),
    })
}

/// What a JWT whose signature checked out and whose payload is `payload` (JSON) grants:
/// the claims half of [`JwtKeys::verify`] without a signature, for the fuzz target (a
/// fuzzer cannot sign its payloads with ES256 at libFuzzer speed).
#[doc(hidden)]
pub fn grant_of_payload(payload: &[u8], stream: &str) -> Result<JwtGrant, TokenError> {
    let claims: Claims = serde_json::from_slice(payload).map_err(|_| TokenError::Malformed)?;
    grant(claims, String::new(), "fuzz.payload.signature", stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEfE7EmMIrYXAf6EJhLCjNWrjhUJjBGnk8
7cf7UvYEDCHbhQRBtueUhR7UngNyLlZJEgh/XLag9cOI4X1kX+OC4xV2f6AsqSoe
RCW8PY/TqwyPe3b1zGpG8MI1HyYfWXQV
-----END PUBLIC KEY-----";
    const P384_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBDDxlnXtOUIIkbYV3e
JflEunGFd2E487XbBUTqfTMLLRH+C+zxHvgXwf892yTS6S2hZANiAAR8TsSYwith
cB/oQmEsKM1auOFQmMEaeTztx/tS9gQMIduFBEG255SFHtSeA3IuVkkSCH9ctqD1
w4jhfWRf44LjFXZ/oCypKh5EJbw9j9OrDI97dvXMakbwwjUfJh9ZdBU=
-----END PRIVATE KEY-----";

    fn keys() -> JwtKeys {
        JwtKeys::from_pems(&[("ivs".to_owned(), P384_PUB.to_owned())].into()).unwrap()
    }

    fn token(alg: Algorithm, claims: serde_json::Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(P384_PRIV.as_bytes()).unwrap();
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap()
    }

    /// The P-256 group order, big-endian.
    const P256_N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63,
        0x25, 0x51,
    ];

    /// `n - s` for a big-endian 32-byte `s`.
    fn negate(s: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = P256_N[i] as i16 - s[i] as i16 - borrow;
            (out[i], borrow) = if d < 0 {
                ((d + 256) as u8, 1)
            } else {
                (d as u8, 0)
            };
        }
        out
    }

    #[test]
    fn a_malleated_signature_is_the_same_viewer_session() {
        let derived = [(1u8, [7u8; 32])];
        let (kid, private, _) = native_keys(&derived).remove(0);
        let native = native_public(&derived);
        let key = jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        let claims = serde_json::json!({"stream": "s1", "exp": 4_000_000_000u64,
            "hlsgate:sid": "000102030405060708090a0b0c0d0e0f"});
        let t = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let (signed, sig) = t.rsplit_once('.').unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let mut other = raw[..32].to_vec();
        other.extend(negate(&raw[32..]));
        let malleated = format!(
            "{signed}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&other)
        );
        assert_ne!(malleated, t);
        let a = native.verify(&t, "s1").unwrap();
        // the other signature is valid too (ECDSA verifiers accept both)...
        let b = native.verify(&malleated, "s1").unwrap();
        // ...and it is the same viewer session, which revocation and limits see
        assert_eq!(a.session, b.session);
        // the edge's own token names its login session
        assert_eq!(a.login, Some(std::array::from_fn(|i| i as u8)));
        // a foreign key's `hlsgate:sid` is not believed
        let t = token(
            Algorithm::ES384,
            serde_json::json!({"stream": "s1", "exp": 4_000_000_000u64,
                "hlsgate:sid": "000102030405060708090a0b0c0d0e0f"}),
        );
        assert_eq!(keys().verify(&t, "s1").unwrap().login, None);
    }

    #[test]
    fn keys_are_typed_by_their_curve_and_private_keys_are_refused() {
        assert_eq!(algorithm_of(P384_PUB), Some(Algorithm::ES384));
        let e = JwtKeys::from_pems(&[("k".to_owned(), P384_PRIV.to_owned())].into()).unwrap_err();
        assert!(e.1.contains("private key"), "{e:?}");
        let e = JwtKeys::from_pems(
            &[(
                "k".to_owned(),
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned(),
            )]
            .into(),
        )
        .unwrap_err();
        assert!(e.1.contains("not a P-256"), "{e:?}");
    }

    #[test]
    fn streams_come_from_the_claim_or_the_channel_arn() {
        let k = keys();
        let exp = 4_000_000_000u64;
        let t = token(
            Algorithm::ES384,
            serde_json::json!({"aws:channel-arn": "arn:aws:ivs:x:1:channel/abc", "exp": exp}),
        );
        assert_eq!(k.verify(&t, "abc").map(|g| g.exp), Ok(exp as u32));
        assert_eq!(k.verify(&t, "abd"), Err(TokenError::WrongStream));
        let t = token(
            Algorithm::ES384,
            serde_json::json!({"stream": "s1", "exp": exp}),
        );
        assert!(k.verify(&t, "s1").is_ok());
        let t = token(Algorithm::ES384, serde_json::json!({"exp": exp}));
        assert_eq!(k.verify(&t, "s1"), Err(TokenError::Malformed));
        assert_eq!(
            k.verify(&"a".repeat(MAX_JWT_CHARS + 1), "s1"),
            Err(TokenError::Malformed)
        );
        // the same token is the same viewer session
        let t = token(
            Algorithm::ES384,
            serde_json::json!({"stream": "s1", "exp": exp}),
        );
        assert_eq!(
            k.verify(&t, "s1").unwrap().session,
            k.verify(&t, "s1").unwrap().session
        );
    }
}
