//! JWT playback tokens (IVS ES384, ES256, RS256). Input: `STREAM\nTEXT`. TEXT starting
//! with `{` is a payload: the claims half (what a token whose signature checked out grants)
//! takes any JSON without a panic and grants only the stream it names. Otherwise TEXT is a
//! token: refused (the fuzzer holds no private key), never a panic.
#![no_main]

use hlsgate::token::jwt::{grant_of_payload, native_public, JwtKeys, NATIVE_LABEL};
use hlsgate::token::Keyring;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

const P384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEfE7EmMIrYXAf6EJhLCjNWrjhUJjBGnk8
7cf7UvYEDCHbhQRBtueUhR7UngNyLlZJEgh/XLag9cOI4X1kX+OC4xV2f6AsqSoe
RCW8PY/TqwyPe3b1zGpG8MI1HyYfWXQV
-----END PUBLIC KEY-----";

static KEYS: LazyLock<JwtKeys> = LazyLock::new(|| {
    let ring =
        Keyring::from_text("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n")
            .unwrap();
    let ivs = JwtKeys::from_pems(&[("ivs".to_owned(), P384_PUB.to_owned())].into()).unwrap();
    ivs.merged(&native_public(&ring.derive(NATIVE_LABEL)))
});

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (stream, text) = s.split_once('\n').unwrap_or(("s1", s));
    if text.starts_with('{') {
        if let Ok(g) = grant_of_payload(text.as_bytes(), stream) {
            // The stream is named in the payload (escapes aside).
            assert!(
                text.contains(stream) || text.contains('\\'),
                "granted another stream"
            );
            if let Some(r) = &g.rules {
                assert!(r
                    .viewer_id
                    .as_ref()
                    .is_none_or(|v| !v.is_empty() && v.len() <= 40));
            }
        }
    } else {
        let _ = JwtKeys::kid_of(text);
        assert!(KEYS.verify(text, stream).is_err(), "a fuzzed JWT verified");
    }
});
