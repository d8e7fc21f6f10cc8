//! Akamai EdgeAuth tokens (the `hdnts` query parameter or the `__token__` cookie), as
//! Akamai's EdgeAuth libraries make them: `[ip=IP~]st=START~exp=END~acl=ACL[~id=ID][~data=D]
//! ~hmac=HEX`, where `hmac` is HMAC-SHA256 (key: `tokens.akamai.key_hex`, hex-decoded) of
//! the other fields joined by `~`. A token without `acl` is for one URL: its HMAC also
//! covers `url=PATH` (the request path), which the token itself does not carry.
//!
//! `acl` may list several patterns separated by `!`, with `*` and `?` wildcards, matched
//! against the request path. `exp` is required, `st` honoured; `ip` binds the viewer.
//!
//! Pure: no I/O.

use super::cloudfront::wildcard_match;
use super::{ForeignGrant, TokenError};
use std::net::IpAddr;

/// Longest token accepted.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// Parse a hex key (`tokens.akamai.key_hex`).
pub fn key_from_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.trim();
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Check `token` for a request of `path` from `ip` at `now`. Forged or malformed: 401;
/// expired or not yet valid: 401; the ACL does not cover the path: 403 (wrong stream);
/// another IP: 403 (wrong viewer).
pub fn verify(
    key: &[u8],
    token: &str,
    path: &str,
    ip: IpAddr,
    now: u32,
) -> Result<ForeignGrant, TokenError> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::Malformed);
    }
    let (signed, mac_hex) = token.rsplit_once("~hmac=").ok_or(TokenError::Malformed)?;
    let mac = key_from_hex(mac_hex).ok_or(TokenError::Malformed)?;
    let (mut st, mut exp, mut acl, mut bound_ip) = (None, None, None, None);
    for field in signed.split('~') {
        let (n, v) = field.split_once('=').ok_or(TokenError::Malformed)?;
        let slot = match n {
            "st" => &mut st,
            "exp" => &mut exp,
            "acl" => &mut acl,
            "ip" => &mut bound_ip,
            "id" | "data" => continue,
            _ => return Err(TokenError::Malformed),
        };
        if slot.replace(v).is_some() {
            return Err(TokenError::Malformed);
        }
    }
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let ok = match acl {
        Some(_) => ring::hmac::verify(&k, signed.as_bytes(), &mac),
        None => ring::hmac::verify(&k, format!("{signed}~url={path}").as_bytes(), &mac),
    };
    ok.map_err(|_| TokenError::Forged)?;
    let num = |v: Option<&str>| -> Result<Option<u64>, TokenError> {
        v.map(|v| v.parse::<u64>().map_err(|_| TokenError::Malformed))
            .transpose()
    };
    let exp = num(exp)?.ok_or(TokenError::Malformed)?;
    if u64::from(now) >= exp {
        return Err(TokenError::Expired);
    }
    if num(st)?.is_some_and(|st| st > u64::from(now)) {
        return Err(TokenError::NotYetValid);
    }
    if let Some(acl) = acl {
        if !acl.split('!').any(|p| wildcard_match(p, path)) {
            return Err(TokenError::WrongStream);
        }
    }
    if let Some(b) = bound_ip {
        if b.parse::<IpAddr>().map_err(|_| TokenError::Malformed)? != ip {
            return Err(TokenError::WrongViewer);
        }
    }
    Ok(ForeignGrant::new(exp, &[b"akamai", &mac]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1_700_000_000;
    const KEY: &[u8] = b"0123456789abcdef";

    fn sign(fields: &str, url: Option<&str>) -> String {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY);
        let src = match url {
            Some(u) => format!("{fields}~url={u}"),
            None => fields.to_owned(),
        };
        let mac: String = ring::hmac::sign(&k, src.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{fields}~hmac={mac}")
    }

    #[test]
    fn every_check_has_its_answer() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let v = |t: &str, p: &str| verify(KEY, t, p, ip, NOW);
        let t = sign(
            &format!("st={}~exp={}~acl=/hls/s1/*", NOW - 5, NOW + 60),
            None,
        );
        assert_eq!(v(&t, "/hls/s1/i.m3u8").map(|g| g.exp), Ok(NOW + 60));
        assert_eq!(v(&t, "/hls/s2/i.m3u8"), Err(TokenError::WrongStream));
        let forged = t.replace("s1", "s2");
        assert_eq!(v(&forged, "/hls/s2/i.m3u8"), Err(TokenError::Forged));
        let t = sign(&format!("exp={}~acl=/hls/s1/*", NOW), None);
        assert_eq!(v(&t, "/hls/s1/i.m3u8"), Err(TokenError::Expired));
        let t = sign(&format!("st={}~exp={}~acl=*", NOW + 5, NOW + 60), None);
        assert_eq!(v(&t, "/hls/s1/i.m3u8"), Err(TokenError::NotYetValid));
        let t = sign(&format!("ip=192.0.2.2~exp={}~acl=*", NOW + 60), None);
        assert_eq!(v(&t, "/hls/s1/i.m3u8"), Err(TokenError::WrongViewer));
        let t = sign("acl=/hls/s1/*", None);
        assert_eq!(v(&t, "/hls/s1/i.m3u8"), Err(TokenError::Malformed));
        let t = sign(&format!("exp={}~acl=/x/*!/hls/s1/*", NOW + 60), None);
        assert!(v(&t, "/hls/s1/i.m3u8").is_ok());
        // a URL token covers exactly its URL
        let t = sign(&format!("exp={}", NOW + 60), Some("/hls/s1/i.m3u8"));
        assert!(v(&t, "/hls/s1/i.m3u8").is_ok());
        assert_eq!(v(&t, "/hls/s1/j.m3u8"), Err(TokenError::Forged));
        for bad in ["", "exp=1", "exp=1~hmac=zz", "bogus=1~hmac=00"] {
            assert_eq!(
                v(bad, "/hls/s1/i.m3u8"),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }
}
