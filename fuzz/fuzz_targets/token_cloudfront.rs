//! CloudFront signed URLs and cookies. Input: `KIND TEXT\nPATH\nNOW`, KIND one byte:
//! `q` TEXT is a query, `c` a Cookie header: nothing the fuzzer makes verifies (it holds no
//! key), nothing panics; `p` TEXT is a custom policy of any bytes, signed with the edge's
//! own cookie key: parsed without a panic, never admitting after its `DateLessThan`; `w`
//! TEXT is `PATTERN\tSUBJECT`: the wildcard matcher agrees with a plain recursive one.
#![no_main]

use hlsgate::token::cloudfront::{sign_native, wildcard_match, CloudFrontKeys, Signed, Target};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

const SECRET: [u8; 32] = [7; 32];
static KEYS: LazyLock<CloudFrontKeys> =
    LazyLock::new(|| CloudFrontKeys::from_pems(&Default::default()).unwrap());

/// `*` any run of bytes, `?` one byte: the obvious recursion (inputs kept short).
fn naive(p: &[u8], t: &[u8]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(b'*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
        (Some(&c), Some(&d)) if c == b'?' || c == d => naive(&p[1..], &t[1..]),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = s.splitn(3, '\n');
    let first = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("/hls/s1/index.m3u8");
    let now: u32 = lines
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1_700_000_000);
    let Some(kind) = first.chars().next() else {
        return;
    };
    let text = &first[kind.len_utf8()..];
    let (path, rest_query) = path.split_once('?').unwrap_or((path, ""));
    let t = Target {
        host: "edge.example.com",
        path,
        rest_query,
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        now,
    };
    let native = [(3u8, SECRET)];
    match kind {
        'q' => {
            if let Some((s, _rest)) = Signed::from_query(text) {
                assert!(
                    KEYS.verify(&s, &t, &native).is_err(),
                    "a fuzzed URL verified"
                );
            }
        }
        'c' => {
            let pairs = text.split(';').filter_map(|c| c.trim().split_once('='));
            if let Some(s) = Signed::from_cookies(pairs) {
                assert!(
                    KEYS.verify(&s, &t, &native).is_err(),
                    "fuzzed cookies verified"
                );
            }
        }
        'p' => {
            let (p, sig, kp) = sign_native(text, 3, &SECRET);
            let s = Signed {
                policy: Some(&p),
                expires: None,
                signature: &sig,
                key_pair_id: &kp,
                sha256: false,
                in_query: false,
            };
            if let Ok(g) = KEYS.verify(&s, &t, &native) {
                assert!(g.exp > now, "an expired policy admitted");
                assert!(text.contains("DateLessThan"));
            }
        }
        'w' => {
            let (p, subject) = text.split_once('\t').unwrap_or((text, path));
            if p.len() <= 12 && subject.len() <= 24 {
                assert_eq!(
                    wildcard_match(p, subject),
                    naive(p.as_bytes(), subject.as_bytes()),
                    "{p:?} {subject:?}"
                );
            } else {
                let _ = wildcard_match(p, subject);
            }
        }
        _ => {}
    }
});
