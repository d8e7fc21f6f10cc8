//! CloudFront signed URLs and signed cookies, verified exactly as CloudFront does, so the
//! code a platform already signs with (botocore's `CloudFrontSigner`, the AWS SDKs) works
//! unchanged against the edge.
//!
//! - Parameters: `Policy` (custom) or `Expires` (canned), `Signature`, `Key-Pair-Id`, as
//!   query parameters (signed URLs) or as the cookies `CloudFront-Policy` /
//!   `CloudFront-Expires`, `CloudFront-Signature`, `CloudFront-Key-Pair-Id`.
//! - CloudFront's URL-safe base64: `+`→`-`, `=`→`_`, `/`→`~`.
//! - Signatures: RSA PKCS#1 v1.5 with SHA-1 (what CloudFront and botocore use), or SHA-256
//!   when `Hash-Algorithm=SHA256` is given; ECDSA P-256 SHA-256 for EC key pairs.
//! - A custom policy has one statement: `Resource` (`*` and `?` wildcards) is matched
//!   against the request's URL, `http://` or `https://` + authority + path (+ query for
//!   signed URLs, without the signing parameters), in two parts: the pattern's scheme and
//!   host against the request's validated authority (`Host`, or `:authority` on HTTP/2),
//!   its path against the request's path, so that no wildcard spans the two (a `Host` such
//!   as `edge/hls/1/x` is refused with 400 before this); `DateLessThan` is required,
//!   `DateGreaterThan` and `IpAddress.AWS:SourceIp` (CIDR) are honoured. A canned policy is
//!   rebuilt from the request URL and `Expires`, as CloudFront does.
//! - Key pairs by `Key-Pair-Id` from `tokens.cloudfront.keys`; `hlsgate-<kid>` names the
//!   edge's own HMAC-SHA256 key (derived from the token key file), which the admin's
//!   `/api/stream-cookies` signs with.
//!
//! Pure: no I/O.

use super::rsa2048::{Hash, Rsa2048};
use super::{ForeignGrant, TokenError};
use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Longest policy (decoded) accepted: CloudFront's own cookie limits keep real ones far
/// shorter.
pub const MAX_POLICY_BYTES: usize = 4096;

/// The label the edge's own cookie key is derived under (`Keyring::derive`).
pub const NATIVE_LABEL: &str = "cloudfront-cookie";
/// The `Key-Pair-Id` prefix of the edge's own cookies.
pub const NATIVE_PREFIX: &str = "hlsgate-";

/// Registered CloudFront public keys, by key pair id.
#[derive(Clone, Default)]
pub struct CloudFrontKeys {
    keys: BTreeMap<String, PublicKey>,
}

#[derive(Clone)]
enum PublicKey {
    /// Parsed once (AWS-LC): for RSA-SHA1 policies (botocore's signer) and RSA-SHA256;
    /// `fast` when the key is one the IFMA code checks (2,048 bits, e = 65537, a CPU with
    /// AVX-512 IFMA), which then checks its signatures instead.
    Rsa {
        sha1: ParsedPublicKey,
        sha256: ParsedPublicKey,
        fast: Option<Box<Rsa2048>>,
    },
    /// An uncompressed P-256 point, parsed once.
    P256(ParsedPublicKey),
}

impl PublicKey {
    /// `der`: PKCS#1 `RSAPublicKey`.
    fn rsa(der: &[u8]) -> Result<PublicKey, &'static str> {
        let parse = |alg| ParsedPublicKey::new(alg, der).map_err(|_| "unusable RSA public key");
        Ok(PublicKey::Rsa {
            sha1: parse(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)?,
            sha256: parse(&signature::RSA_PKCS1_2048_8192_SHA256)?,
            fast: rsa_numbers(der).and_then(|(n, e)| Rsa2048::new(n, e).map(Box::new)),
        })
    }
}

impl fmt::Debug for CloudFrontKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// The signed parameters of one request, as found in its query or its cookies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    pub policy: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub signature: &'a str,
    pub key_pair_id: &'a str,
    pub sha256: bool,
    /// From a query (a signed URL: the canned resource includes the rest of the query).
    pub in_query: bool,
}

impl<'a> Signed<'a> {
    /// The signing parameters of a query, and the query without them (in order).
    pub fn from_query(q: &'a str) -> Option<(Signed<'a>, String)> {
        let mut s = Signed {
            in_query: true,
            ..Signed::default()
        };
        let (mut sig, mut kp) = (None, None);
        let mut rest = Vec::new();
        for p in q.split('&').filter(|p| !p.is_empty()) {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            match n {
                "Policy" => s.policy = Some(v),
                "Expires" => s.expires = Some(v),
                "Signature" => sig = Some(v),
                "Key-Pair-Id" => kp = Some(v),
                "Hash-Algorithm" => s.sha256 = v == "SHA256",
                _ => rest.push(p),
            }
        }
        s.signature = sig?;
        s.key_pair_id = kp?;
        Some((s, rest.join("&")))
    }

    /// The CloudFront cookies among `(name, value)` pairs.
    pub fn from_cookies(cookies: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Signed<'a>> {
        let mut s = Signed::default();
        let (mut sig, mut kp) = (None, None);
        for (n, v) in cookies {
            match n {
                "CloudFront-Policy" => s.policy = Some(v),
                "CloudFront-Expires" => s.expires = Some(v),
                "CloudFront-Signature" => sig = Some(v),
                "CloudFront-Key-Pair-Id" => kp = Some(v),
                "CloudFront-Hash-Algorithm" => s.sha256 = v == "SHA256",
                _ => {}
            }
        }
        s.signature = sig?;
        s.key_pair_id = kp?;
        Some(s)
    }
}

/// The request being admitted.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The request's authority (`Host`, or `:authority` on HTTP/2), already checked to be
    /// a valid one (see `net::valid_authority`): no `/`, `?`, `#`, `@`, space or control
    /// byte.
    pub host: &'a str,
    /// The path as requested (percent-encoded).
    pub path: &'a str,
    /// A signed URL's query without the signing parameters.
    pub rest_query: &'a str,
    pub ip: IpAddr,
    pub now: u32,
}

#[derive(Deserialize)]
struct Policy {
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(rename = "Resource")]
    resource: Option<String>,
    #[serde(rename = "Condition")]
    condition: Condition,
    /// The login session the edge's own cookies name (read only from those): signing out
    /// of the admin ends them.
    #[serde(rename = "hlsgate:Session")]
    login: Option<String>,
    /// Access rules the edge's own cookies carry (read only from those), in
    /// [`crate::rules`]' shape: they narrow the stream's.
    #[serde(rename = "hlsgate:AccessRules")]
    access: Option<Vec<crate::rules::RuleDoc>>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "DateLessThan")]
    less_than: Option<Epoch>,
    #[serde(rename = "DateGreaterThan")]
    greater_than: Option<Epoch>,
    #[serde(rename = "IpAddress")]
    ip: Option<SourceIp>,
}

#[derive(Deserialize)]
struct Epoch {
    #[serde(rename = "AWS:EpochTime")]
    t: u64,
}

#[derive(Deserialize)]
struct SourceIp {
    #[serde(rename = "AWS:SourceIp")]
    cidr: String,
}

/// Decode CloudFront's URL-safe base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    if s.len() > MAX_POLICY_BYTES * 2 {
        return None;
    }
    let std: Vec<u8> = s
        .bytes()
        .map(|c| match c {
            b'-' => b'+',
            b'_' => b'=',
            b'~' => b'/',
            c => c,
        })
        .collect();
    STANDARD.decode(std).ok()
}

/// Encode in CloudFront's URL-safe base64.
pub fn encode(b: &[u8]) -> String {
    STANDARD
        .encode(b)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// `*` any run of characters, `?` one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` is a wildcard even facing a `*` in the text (tested before the literal).
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The DER bytes of a PEM block (its base64 lines between the `-----` ones).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

/// The key of a public key PEM: SPKI (`PUBLIC KEY`, RSA or P-256) or PKCS#1
/// (`RSA PUBLIC KEY`).
fn public_key(pem: &str) -> Result<PublicKey, &'static str> {
    if pem.contains("PRIVATE KEY") {
        return Err("a private key: register the public key only");
    }
    let der = pem_der(pem).ok_or("not a PEM")?;
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        return PublicKey::rsa(&der);
    }
    const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    const P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    let (alg, bits) = spki(&der).ok_or("not a public key PEM (SPKI)")?;
    let has = |oid: &[u8]| alg.windows(oid.len()).any(|w| w == oid);
    if has(RSA) {
        PublicKey::rsa(bits)
    } else if has(P256) {
        ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, bits)
            .map(PublicKey::P256)
            .map_err(|_| "unusable P-256 public key")
    } else {
        Err("not an RSA or P-256 public key")
    }
}

/// One DER element at the start of `b`: `(tag, contents, rest)`.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, mut b) = b.split_first()?;
    let len = if l0 < 0x80 {
        l0 as usize
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 3 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// PKCS#1 `RSAPublicKey`: the modulus and the public exponent, big-endian.
fn rsa_numbers(d: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, inner, _) = der(d)? else {
        return None;
    };
    let (0x02, n, rest) = der(inner)? else {
        return None;
    };
    let (0x02, e, _) = der(rest)? else {
        return None;
    };
    Some((n, e))
}

/// `SubjectPublicKeyInfo`: the algorithm identifier's contents and the key bits.
fn spki(d: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, inner, _) = der(d)? else {
        return None;
    };
    let (0x30, alg, rest) = der(inner)? else {
        return None;
    };
    let (0x03, bits, _) = der(rest)? else {
        return None;
    };
    let (&0, bits) = bits.split_first()? else {
        return None;
    };
    Some((alg, bits))
}

impl CloudFrontKeys {
    /// Keys from `KEY_PAIR_ID -> public key PEM`. An error names the id and the problem.
    pub fn from_pems(pems: &BTreeMap<String, String>) -> Result<CloudFrontKeys, (String, String)> {
        let mut keys = BTreeMap::new();
        for (id, pem) in pems {
            if id.starts_with(NATIVE_PREFIX) {
                return Err((
                    id.clone(),
                    format!("{NATIVE_PREFIX}* ids are the edge's own"),
                ));
            }
            let k = public_key(pem).map_err(|p| (id.clone(), p.to_owned()))?;
            keys.insert(id.clone(), k);
        }
        Ok(CloudFrontKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether key pair `id` is configured.
    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Check a signed request. `native` holds the edge's own cookie keys (`(kid, secret)`).
    /// Forged or malformed: 401; expired: 401; the resource does not cover this URL: 403
    /// (wrong stream); the source IP is outside the policy's: 403 (wrong viewer).
    pub fn verify(
        &self,
        s: &Signed<'_>,
        t: &Target<'_>,
        native: &[(u8, [u8; 32])],
    ) -> Result<ForeignGrant, TokenError> {
        let sig = decode(s.signature).ok_or(TokenError::Malformed)?;
        if sig.is_empty() || sig.len() > 1024 || s.key_pair_id.len() > 128 {
            return Err(TokenError::Malformed);
        }
        let check = |msg: &[u8]| -> Result<(), TokenError> {
            if let Some(kid) = s.key_pair_id.strip_prefix(NATIVE_PREFIX) {
                let kid: u8 = kid.parse().map_err(|_| TokenError::Forged)?;
                let (_, secret) = native
                    .iter()
                    .find(|(k, _)| *k == kid)
                    .ok_or(TokenError::Forged)?;
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                return ring::hmac::verify(&key, msg, &sig).map_err(|_| TokenError::Forged);
            }
            let key = match self.keys.get(s.key_pair_id).ok_or(TokenError::Forged)? {
                PublicKey::Rsa {
                    fast: Some(fast), ..
                } => {
                    let hash = if s.sha256 { Hash::Sha256 } else { Hash::Sha1 };
                    return if fast.verify(hash, msg, &sig) {
                        Ok(())
                    } else {
                        Err(TokenError::Forged)
                    };
                }
                PublicKey::Rsa { sha256, .. } if s.sha256 => sha256,
                PublicKey::Rsa { sha1, .. } => sha1,
                PublicKey::P256(k) => k,
            };
            key.verify_sig(msg, &sig).map_err(|_| TokenError::Forged)
        };
        let native = s.key_pair_id.starts_with(NATIVE_PREFIX);
        let mut login = None;
        let mut access = None;
        let signed: Vec<u8>;
        let exp = if let Some(p) = s.policy {
            let text = decode(p).ok_or(TokenError::Malformed)?;
            if text.len() > MAX_POLICY_BYTES {
                return Err(TokenError::Malformed);
            }
            check(&text)?;
            let policy: Policy =
                serde_json::from_slice(&text).map_err(|_| TokenError::Malformed)?;
            signed = text;
            let [st] = policy.statement.as_slice() else {
                return Err(TokenError::Malformed);
            };
            let c = &st.condition;
            let exp = c.less_than.as_ref().ok_or(TokenError::Malformed)?.t;
            if u64::from(t.now) >= exp {
                return Err(TokenError::Expired);
            }
            if let Some(g) = &c.greater_than {
                if u64::from(t.now) <= g.t {
                    return Err(TokenError::NotYetValid);
                }
            }
            // No `Resource` covers every URL (CloudFront's default).
            if let Some(r) = &st.resource {
                if !resource_covers(r, t, s.in_query) {
                    return Err(TokenError::WrongStream);
                }
            }
            if let (true, Some(hex)) = (native, &st.login) {
                login = Some(crate::store::session_bytes(hex).ok_or(TokenError::Malformed)?);
            }
            if let (true, Some(docs)) = (native, &st.access) {
                let a = crate::rules::AccessRules::from_docs(docs)
                    .map_err(|_| TokenError::Malformed)?;
                access = (!a.is_empty()).then(|| std::sync::Arc::new(a));
            }
            if let Some(ip) = &c.ip {
                let net: ipnet::IpNet = ip
                    .cidr
                    .parse()
                    .or_else(|_| ip.cidr.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| TokenError::Malformed)?;
                if !net.contains(&t.ip) {
                    return Err(TokenError::WrongViewer);
                }
            }
            exp
        } else {
            let exp_text = s.expires.ok_or(TokenError::Malformed)?;
            let exp: u64 = exp_text.parse().map_err(|_| TokenError::Malformed)?;
            if !exp_text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TokenError::Malformed);
            }
            // A canned policy names one URL: it must be this one.
            let canned = request_urls(t, s.in_query)
                .iter()
                .map(|u| canned_policy(u, exp))
                .find(|p| check(p.as_bytes()).is_ok());
            signed = canned.ok_or(TokenError::Forged)?.into_bytes();
            if u64::from(t.now) >= exp {
                return Err(TokenError::Expired);
            }
            exp
        };
        // The session is what was signed (and by which key), not the signature: ECDSA
        // signatures are malleable.
        let mut g = ForeignGrant::new(exp, &[b"cloudfront", s.key_pair_id.as_bytes(), &signed]);
        g.key = Some(s.key_pair_id.to_owned());
        g.login = login;
        g.access = access;
        Ok(g)
    }
}

/// Whether a policy's `Resource` covers the request. `*` alone covers every URL; a URL
/// pattern is split at its authority: the scheme and host part is matched against the
/// request's scheme and (validated) authority, the path part against the path (and a
/// signed URL's query), so a wildcard never spans from one into the other.
fn resource_covers(resource: &str, t: &Target<'_>, with_query: bool) -> bool {
    if resource == "*" {
        return true;
    }
    let Some((scheme, rest)) = resource.split_once("://") else {
        return false;
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        // `https://host*`: a trailing star covers every path of the hosts it matches.
        None if rest.ends_with('*') => (rest, "*"),
        None => return false,
    };
    let q = if with_query && !t.rest_query.is_empty() {
        format!("{}?{}", t.path, t.rest_query)
    } else {
        t.path.to_owned()
    };
    ["http", "https"].iter().any(|s| wildcard_match(scheme, s))
        && wildcard_match(host, t.host)
        && wildcard_match(path, &q)
}

/// The canned policy CloudFront signs for `url` until `exp`.
pub fn canned_policy(url: &str, exp: u64) -> String {
    format!(
        r#"{{"Statement":[{{"Resource":"{url}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{exp}}}}}}}]}}"#
    )
}

/// The URLs a policy's resource may name for this request.
fn request_urls(t: &Target<'_>, with_query: bool) -> [String; 2] {
    let q = if with_query && !t.rest_query.is_empty() {
        format!("?{}", t.rest_query)
    } else {
        String::new()
    };
    [
        format!("https://{}{}{q}", t.host, t.path),
        format!("http://{}{}{q}", t.host, t.path),
    ]
}

/// Sign `policy` with the edge's own cookie key (`(kid, secret)`): the three cookie values
/// `(Policy, Signature, Key-Pair-Id)`.
pub fn sign_native(policy: &str, kid: u8, secret: &[u8; 32]) -> (String, String, String) {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, policy.as_bytes());
    (
        encode(policy.as_bytes()),
        encode(sig.as_ref()),
        format!("{NATIVE_PREFIX}{kid}"),
    )
}

/// `policy` (one statement, as [`custom_policy`] makes it) with `field` set in its
/// statement: the edge's own cookies carry `hlsgate:Session` (the login session, hex,
/// checked live), `hlsgate:AccessRules` (rules in [`crate::rules`]' shape) and
/// `hlsgate:Nonce` (each issue a viewer session of its own). Read only from the edge's own
/// cookies.
pub fn with_field(policy: &str, field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(policy).unwrap_or_default();
    if let Some(st) = v["Statement"].get_mut(0) {
        st[field] = value;
    }
    v.to_string()
}

/// A custom policy for every object under `resource` until `exp` (unix seconds).
pub fn custom_policy(resource: &str, exp: u32) -> String {
    serde_json::json!({"Statement": [{
        "Resource": resource,
        "Condition": {"DateLessThan": {"AWS:EpochTime": exp}}
    }]})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1_700_000_000;

    fn target<'a>(path: &'a str, rest: &'a str) -> Target<'a> {
        Target {
            host: "edge.example",
            path,
            rest_query: rest,
            ip: "192.0.2.7".parse().unwrap(),
            now: NOW,
        }
    }

    fn native() -> Vec<(u8, [u8; 32])> {
        vec![(1, [9; 32])]
    }

    fn signed<'a>(p: &'a str, s: &'a str, k: &'a str) -> Signed<'a> {
        Signed {
            policy: Some(p),
            signature: s,
            key_pair_id: k,
            ..Signed::default()
        }
    }

    #[test]
    fn a_policy_host_is_matched_against_the_authority_and_its_path_against_the_path() {
        let t = |host: &'static str, path: &'static str| Target {
            host,
            path,
            rest_query: "",
            ip: "192.0.2.1".parse().unwrap(),
            now: NOW,
        };
        let r = "https://cdn.example.com/hls/sa/*";
        assert!(resource_covers(
            r,
            &t("cdn.example.com", "/hls/sa/index.m3u8"),
            false
        ));
        assert!(!resource_covers(
            r,
            &t("cdn.example.com", "/hls/sb/index.m3u8"),
            false
        ));
        // a wildcard in the host never spans into the path
        let r = "https://*.example.com/hls/sa/*";
        assert!(resource_covers(
            r,
            &t("a.example.com", "/hls/sa/x.ts"),
            false
        ));
        assert!(!resource_covers(
            r,
            &t("a.example.com", "/hls/sb/b.example.com/hls/sa/x.ts"),
            false
        ));
        assert!(resource_covers("*", &t("x", "/hls/sb/x.ts"), false));
        assert!(resource_covers(
            "http*://cdn.example.com*",
            &t("cdn.example.com", "/hls/sb/x.ts"),
            false
        ));
        assert!(!resource_covers(
            "cdn.example.com/hls/*",
            &t("cdn.example.com", "/hls/a"),
            false
        ));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            "https://h/hls/a/*",
            "https://h/hls/a/x/y.ts"
        ));
        assert!(wildcard_match("http*://h/hls/a/*", "http://h/hls/a/"));
        assert!(wildcard_match(
            "https://h/hls/?/i.m3u8",
            "https://h/hls/a/i.m3u8"
        ));
        assert!(!wildcard_match(
            "https://h/hls/?/i.m3u8",
            "https://h/hls/ab/i.m3u8"
        ));
        assert!(!wildcard_match(
            "https://h/hls/a/*",
            "https://h/hls/b/i.m3u8"
        ));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("a*b*c", "aXbY"));
        assert!(wildcard_match(&"*a".repeat(20), &"a".repeat(40)));
    }

    /// Found by the `token_cloudfront` fuzz target: a `*` in the pattern facing a literal
    /// `*` in the URL was taken as that character, not as a wildcard, so the rest of the
    /// URL had to match exactly: a policy for `/hls/s1/*` refused `/hls/s1/*/x.ts`.
    #[test]
    fn a_star_in_the_url_does_not_disarm_the_wildcard() {
        assert!(wildcard_match("h/L*s", "h/L*s\th\"r:s"));
        assert!(wildcard_match(
            "https://h/hls/s1/*",
            "https://h/hls/s1/*/x.ts"
        ));
        assert!(wildcard_match("a*c", "a*bc"));
        assert!(!wildcard_match("a*c", "a*b"));
    }

    #[test]
    fn the_edges_own_cookies_verify_and_every_condition_holds() {
        let keys = CloudFrontKeys::default();
        let n = native();
        let pol = custom_policy("https://edge.example/hls/s1/*", NOW + 60);
        let (p, s, k) = sign_native(&pol, 1, &n[0].1);
        let ok = keys.verify(&signed(&p, &s, &k), &target("/hls/s1/i.m3u8", ""), &n);
        assert_eq!(ok.map(|g| g.exp), Ok(NOW + 60));
        assert_eq!(
            keys.verify(&signed(&p, &s, &k), &target("/hls/s2/i.m3u8", ""), &n),
            Err(TokenError::WrongStream)
        );
        let mut forged = s.clone();
        forged.replace_range(0..1, if s.starts_with('A') { "B" } else { "A" });
        assert_eq!(
            keys.verify(&signed(&p, &forged, &k), &target("/hls/s1/i.m3u8", ""), &n),
            Err(TokenError::Forged)
        );
        assert_eq!(
            keys.verify(
                &signed(&p, &s, "hlsgate-2"),
                &target("/hls/s1/i.m3u8", ""),
                &n
            ),
            Err(TokenError::Forged)
        );
        let old = custom_policy("https://edge.example/hls/s1/*", NOW);
        let (p, s, k) = sign_native(&old, 1, &n[0].1);
        assert_eq!(
            keys.verify(&signed(&p, &s, &k), &target("/hls/s1/i.m3u8", ""), &n),
            Err(TokenError::Expired)
        );
        let ip = serde_json::json!({"Statement": [{"Resource": "http*://edge.example/hls/s1/*",
            "Condition": {"DateLessThan": {"AWS:EpochTime": NOW + 60},
                "DateGreaterThan": {"AWS:EpochTime": NOW - 60},
                "IpAddress": {"AWS:SourceIp": "198.51.100.0/24"}}}]})
        .to_string();
        let (p, s, k) = sign_native(&ip, 1, &n[0].1);
        assert_eq!(
            keys.verify(&signed(&p, &s, &k), &target("/hls/s1/i.m3u8", ""), &n),
            Err(TokenError::WrongViewer)
        );
        let later = serde_json::json!({"Statement": [{"Resource": "*",
            "Condition": {"DateLessThan": {"AWS:EpochTime": NOW + 60},
                "DateGreaterThan": {"AWS:EpochTime": NOW + 10}}}]})
        .to_string();
        let (p, s, k) = sign_native(&later, 1, &n[0].1);
        assert_eq!(
            keys.verify(&signed(&p, &s, &k), &target("/hls/s1/i.m3u8", ""), &n),
            Err(TokenError::NotYetValid)
        );
        let no_exp = r#"{"Statement":[{"Resource":"*","Condition":{}}]}"#;
        let (p, s, k) = sign_native(no_exp, 1, &n[0].1);
        assert_eq!(
            keys.verify(&signed(&p, &s, &k), &target("/hls/s1/i.m3u8", ""), &n),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn query_and_cookie_parameters_are_found() {
        let (s, rest) =
            Signed::from_query("a=1&Expires=5&Signature=x~y_&Key-Pair-Id=K&b=2").unwrap();
        assert_eq!(
            (s.expires, s.signature, s.key_pair_id),
            (Some("5"), "x~y_", "K")
        );
        assert_eq!(rest, "a=1&b=2");
        assert!(Signed::from_query("Expires=5&Signature=x").is_none());
        let c = Signed::from_cookies(
            [
                ("CloudFront-Policy", "P"),
                ("x", "y"),
                ("CloudFront-Signature", "S"),
                ("CloudFront-Key-Pair-Id", "K"),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!((c.policy, c.signature, c.in_query), (Some("P"), "S", false));
        assert_eq!(decode(&encode(b"\xfb\xff?>")).unwrap(), b"\xfb\xff?>");
    }

    #[test]
    fn private_and_unknown_keys_are_refused() {
        let bad = |pem: &str| {
            CloudFrontKeys::from_pems(&[("K".to_owned(), pem.to_owned())].into()).unwrap_err()
        };
        assert!(
            bad("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .1
                .contains("private")
        );
        assert!(
            bad("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .1
                .contains("SPKI")
        );
    }

    include!("../../tests/fixtures/botocore_cloudfront.rs");

    /// The IFMA check and AWS-LC's give the same answer: for signatures botocore (SHA-1)
    /// and AWS-LC (SHA-256, keys it generated) made, and for every way of spoiling them.
    #[test]
    fn the_ifma_check_and_aws_lc_agree_on_every_signature() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::rsa::{KeyPair, KeySize};
        use aws_lc_rs::signature::KeyPair as _;
        /// The key's DER, whether SHA-256, the message, the signature.
        type Case = (Vec<u8>, bool, Vec<u8>, Vec<u8>);
        let mut cases: Vec<Case> = Vec::new();
        let botocore_der = spki(&pem_der(CF_PUBLIC).unwrap()).unwrap().1.to_vec();
        cases.push((
            botocore_der,
            false,
            decode(CF_POLICY).unwrap(),
            decode(CF_SIGNATURE).unwrap(),
        ));
        for i in 0..3u8 {
            let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
            let msg = format!("{{\"Statement\":[{{\"Resource\":\"https://e/{i}/*\"}}]}}");
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                msg.as_bytes(),
                &mut sig,
            )
            .unwrap();
            cases.push((
                pair.public_key().as_ref().to_vec(),
                true,
                msg.into_bytes(),
                sig,
            ));
        }
        let mut spoiled = 0;
        for (der, sha256, msg, sig) in cases {
            let PublicKey::Rsa {
                sha1,
                sha256: s256,
                fast,
            } = PublicKey::rsa(&der).unwrap()
            else {
                unreachable!()
            };
            let Some(fast) = fast else {
                // No IFMA on this CPU: AWS-LC checks every signature (the tests above).
                assert!(!super::super::rsa2048::available());
                return;
            };
            let lib = if sha256 { &s256 } else { &sha1 };
            let hash = if sha256 { Hash::Sha256 } else { Hash::Sha1 };
            let agree = |m: &[u8], s: &[u8]| {
                let want = lib.verify_sig(m, s).is_ok();
                assert_eq!(fast.verify(hash, m, s), want, "msg {m:x?} sig {s:x?}");
                want
            };
            assert!(agree(&msg, &sig), "a good signature");
            // The other hash: refused by both.
            let other = if sha256 { Hash::Sha1 } else { Hash::Sha256 };
            assert!(!fast.verify(other, &msg, &sig));
            for at in 0..sig.len() {
                for bit in [0, 7] {
                    let mut s = sig.clone();
                    s[at] ^= 1 << bit;
                    assert!(!agree(&msg, &s));
                    spoiled += 1;
                }
            }
            for at in 0..msg.len() {
                let mut m = msg.clone();
                m[at] ^= 0x20;
                assert!(!agree(&m, &sig));
                spoiled += 1;
            }
            let (n, _) = rsa_numbers(&der).unwrap();
            let n = &n[n.len() - 256..];
            for s in [
                &sig[1..],
                &[&[0u8][..], &sig].concat(),
                n,
                &[0xFF; 256],
                &[0; 256],
            ] {
                assert!(!agree(&msg, s));
            }
        }
        assert!(spoiled > 2000);
    }
}
