//! The edge's URL grammar and path checker: no panic on any path or query; a path the
//! checker accepts stays below its base however many times an origin percent-decodes it
//! (no `.`/`..`/empty segment, no backslash, no control character, no scheme), checked
//! here by an independent decoder.
#![no_main]

use hlsgate::playback::{check_path, parse, redact, Query, Route, Target};
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode;

/// What every decoding of an accepted relative path must be.
fn below_base(p: &str) {
    let mut text = p.as_bytes().to_vec();
    for _ in 0..8 {
        assert!(!text.is_empty(), "{p:?}: empty");
        assert!(text[0] != b'/', "{p:?}: absolute");
        for seg in text.split(|&b| b == b'/') {
            let name = seg.split(|&b| b == b';').next().unwrap();
            assert!(
                !name.is_empty() && name != b"." && name != b"..",
                "{p:?}: segment {seg:?}"
            );
        }
        assert!(
            !text.iter().any(|&b| b == b'\\' || b < 0x20 || b == 0x7f),
            "{p:?}: bad byte"
        );
        let first = text.split(|&b| b == b'/').next().unwrap();
        assert!(!first.contains(&b':'), "{p:?}: a scheme");
        let next: Vec<u8> = percent_decode(&text).collect();
        if next == text {
            return;
        }
        text = next;
    }
    panic!("{p:?}: still decoding after 8 rounds");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = s.split_once('?').unwrap_or((s, ""));
    if check_path(path).is_ok() {
        below_base(path);
    }
    match parse(path) {
        Ok(
            Route::Hls {
                target: Target::InBase(rel),
                ..
            }
            | Route::Query {
                target: Target::InBase(rel),
                ..
            },
        ) => below_base(rel),
        Ok(
            Route::Hls {
                target: Target::Signed { path: p, .. },
                ..
            }
            | Route::Query {
                target: Target::Signed { path: p, .. },
                ..
            },
        ) => {
            assert!(p.starts_with('/'));
            below_base(&p[1..]);
        }
        _ => {}
    }
    // The log form of a token path starts with the placeholder, never the token.
    if let Ok(Route::Hls { token, .. }) = parse(path) {
        let r = redact(path);
        assert!(r.starts_with("/api/hls/<token>/"), "{r:?}");
        assert_eq!(
            &r["/api/hls/<token>/".len()..],
            &path["/api/hls/".len() + token.len() + 1..]
        );
    }
    let _ = Query::parse(query).map(|q| q.named_text());
});
