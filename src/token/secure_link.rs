//! nginx `secure_link` tokens, for drop-in migration from nginx: `?md5=HASH&expires=T`,
//! where HASH is what nginx computes for
//! `secure_link_md5 "$secure_link_expires$uri$remote_addr SECRET"`: the MD5 of
//! `T` + the decoded request path + the viewer's address + ` ` + `tokens.secure_link.secret`,
//! in URL-safe base64 without padding (`openssl md5 -binary | openssl base64 | tr +/ -_ |
//! tr -d =`).
//!
//! The hash covers one path and one address, so a token used for another path or from
//! another address is indistinguishable from a forged one: 401 (nginx cannot tell them
//! apart either). `expires` is required.
//!
//! Pure: no I/O.

use super::{ForeignGrant, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use md5::{Digest, Md5};
use std::net::IpAddr;

/// The hash nginx expects for `expires`, `uri` and `ip`.
pub fn hash(secret: &str, expires: &str, uri: &str, ip: IpAddr) -> String {
    let mut h = Md5::new();
    h.update(expires.as_bytes());
    h.update(uri.as_bytes());
    h.update(ip.to_string().as_bytes());
    h.update(b" ");
    h.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Check a link. `uri` is the decoded request path.
pub fn verify(
    secret: &str,
    md5: &str,
    expires: Option<&str>,
    uri: &str,
    ip: IpAddr,
    now: u32,
) -> Result<ForeignGrant, TokenError> {
    let expires = expires.ok_or(TokenError::Malformed)?;
    if md5.len() != 22 || expires.is_empty() || expires.len() > 12 {
        return Err(TokenError::Malformed);
    }
    let exp: u64 = expires
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| expires.parse().ok())
        .flatten()
        .ok_or(TokenError::Malformed)?;
    let want = hash(secret, expires, uri, ip);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        want.as_bytes(),
        md5.as_bytes(),
    )) {
        return Err(TokenError::Forged);
    }
    if u64::from(now) >= exp {
        return Err(TokenError::Expired);
    }
    Ok(ForeignGrant::new(exp, &[b"secure_link", md5.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_docs_example_and_every_refusal() {
        // nginx docs: echo -n '2147483647/s/link127.0.0.1 secret' | openssl md5 -binary
        //   | openssl base64 | tr +/ -_ | tr -d =   ->   _e4Nc3iduzkWRm01TBBNYw
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            hash("secret", "2147483647", "/s/link", ip),
            "_e4Nc3iduzkWRm01TBBNYw"
        );
        let v = |md5: &str, exp: Option<&str>, uri: &str, now: u32| {
            verify("secret", md5, exp, uri, ip, now)
        };
        let good = "_e4Nc3iduzkWRm01TBBNYw";
        assert!(v(good, Some("2147483647"), "/s/link", 1).is_ok());
        assert_eq!(
            v(good, Some("2147483647"), "/s/other", 1),
            Err(TokenError::Forged)
        );
        assert_eq!(
            v(good, Some("2147483646"), "/s/link", 1),
            Err(TokenError::Forged)
        );
        assert_eq!(
            verify(
                "secret",
                good,
                Some("2147483647"),
                "/s/link",
                "127.0.0.2".parse().unwrap(),
                1
            ),
            Err(TokenError::Forged)
        );
        assert_eq!(
            v(good, Some("2147483647"), "/s/link", 2147483647),
            Err(TokenError::Expired)
        );
        assert_eq!(v(good, None, "/s/link", 1), Err(TokenError::Malformed));
        assert_eq!(
            v("short", Some("1"), "/s/link", 1),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            v(good, Some("+1"), "/s/link", 1),
            Err(TokenError::Malformed)
        );
    }
}
