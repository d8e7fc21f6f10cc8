//! Akamai EdgeAuth tokens. Input: `TOKEN\nFIELDS\nPATH\nNOW`. TOKEN (the fuzzer's own) is
//! refused: it holds no key. FIELDS signed with the key (as EdgeAuth does) verify only
//! before their `exp`, for a PATH the `acl` covers, from the `ip` they name; never a panic.
#![no_main]

use hlsgate::token::akamai::verify;
use hlsgate::token::cloudfront::wildcard_match;
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

const KEY: &[u8] = b"0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut l = s.splitn(4, '\n');
    let (token, fields, path) = (
        l.next().unwrap_or(""),
        l.next().unwrap_or(""),
        l.next().unwrap_or("/hls/s1/i.m3u8"),
    );
    let now: u32 = l
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1_700_000_000);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert!(
        verify(KEY, token, path, ip, now).is_err(),
        "a fuzzed token verified"
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY);
    let mac: String = ring::hmac::sign(&k, fields.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signed = format!("{fields}~hmac={mac}");
    if let Ok(g) = verify(KEY, &signed, path, ip, now) {
        assert!(g.exp > now, "expired token admitted");
        let field = |n: &str| {
            fields
                .split('~')
                .find_map(|f| f.strip_prefix(n)?.strip_prefix('='))
        };
        let acl = field("acl").expect("fields without an acl verify only through url=");
        assert!(
            acl.split('!').any(|p| wildcard_match(p, path)),
            "path outside the ACL"
        );
        if let Some(b) = field("ip") {
            assert_eq!(b.parse::<IpAddr>().ok(), Some(ip), "another IP admitted");
        }
    }
});
