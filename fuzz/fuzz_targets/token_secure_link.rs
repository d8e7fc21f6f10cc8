//! nginx secure_link tokens. Input: `MD5\nEXPIRES\nURI\nOTHER_URI\nNOW`. The fuzzer's MD5 is
//! refused unless it is the real hash; the hash nginx would compute verifies for its own
//! URI and a future, all-digit expiry only; never a panic.
#![no_main]

use hlsgate::token::secure_link::{hash, verify};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut l = s.splitn(5, '\n');
    let md5 = l.next().unwrap_or("");
    let expires = l.next().filter(|e| !e.is_empty());
    let uri = l.next().unwrap_or("/hls/s1/index.m3u8");
    let other = l.next().unwrap_or("/hls/s2/index.m3u8");
    let now: u32 = l
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1_700_000_000);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let secret = "fuzz secret";
    if let Ok(g) = verify(secret, md5, expires, uri, ip, now) {
        assert_eq!(
            md5,
            hash(secret, expires.unwrap(), uri, ip),
            "a fuzzed hash verified"
        );
        assert!(g.exp > now);
    }
    if let Some(exp) = expires {
        let h = hash(secret, exp, uri, ip);
        if let Ok(g) = verify(secret, &h, Some(exp), uri, ip, now) {
            assert!(
                g.exp > now && exp.bytes().all(|b| b.is_ascii_digit()),
                "{exp:?}"
            );
        }
        if other != uri {
            assert!(
                verify(secret, &h, Some(exp), other, ip, now).is_err(),
                "another URI admitted"
            );
        }
    }
});
