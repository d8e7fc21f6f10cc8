//! Token costs: verify (the per-request check), issue, and the per-URI path signature.
//! `cargo bench --bench token`
use criterion::{criterion_group, criterion_main, Criterion};
use hlsgate::token::jwt::JwtKeys;
use hlsgate::token::{Binding, Grant, Keyring, Viewer};

/// A throwaway P-384 key pair for the JWT bench (no secret: made for this file).
const ES384_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBDDxlnXtOUIIkbYV3e
JflEunGFd2E487XbBUTqfTMLLRH+C+zxHvgXwf892yTS6S2hZANiAAR8TsSYwith
cB/oQmEsKM1auOFQmMEaeTztx/tS9gQMIduFBEG255SFHtSeA3IuVkkSCH9ctqD1
w4jhfWRf44LjFXZ/oCypKh5EJbw9j9OrDI97dvXMakbwwjUfJh9ZdBU=
-----END PRIVATE KEY-----";
const ES384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEfE7EmMIrYXAf6EJhLCjNWrjhUJjBGnk8
7cf7UvYEDCHbhQRBtueUhR7UngNyLlZJEgh/XLag9cOI4X1kX+OC4xV2f6AsqSoe
RCW8PY/TqwyPe3b1zGpG8MI1HyYfWXQV
-----END PUBLIC KEY-----";

fn bench(c: &mut Criterion) {
    let k =
        Keyring::from_text("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n")
            .unwrap();
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    let grant = Grant {
        stream: "channel-42".into(),
        session: [9; 16],
        exp: 2_000_000_000,
        session_exp: 2_000_100_000,
        binding: Binding {
            ip: Some(("203.0.113.9".parse().unwrap(), 32)),
            ua: Some(ua.into()),
        },
        stored_session: true,
        exchanged: false,
    };
    let token = k.issue(&grant);
    let viewer = Viewer {
        stream: "channel-42",
        ip: "203.0.113.9".parse().unwrap(),
        ua,
        now: 1_900_000_000,
    };
    assert!(k.verify(&token, &viewer).is_ok());
    c.bench_function("token/verify_bound_ip_ua", |b| {
        b.iter(|| k.verify(criterion::black_box(&token), criterion::black_box(&viewer)))
    });
    let mut forged = token.clone().into_bytes();
    forged[20] ^= 1;
    let forged = String::from_utf8(forged).unwrap();
    c.bench_function("token/verify_forged", |b| {
        b.iter(|| k.verify(criterion::black_box(&forged), &viewer))
    });
    c.bench_function("token/issue_bound_ip_ua", |b| {
        b.iter(|| k.issue(criterion::black_box(&grant)))
    });
    // An IVS-style playback token: ES384, verified once per playlist request (segments
    // then use the exchanged native token).
    let keys = JwtKeys::from_pems(&[("ivs".to_owned(), ES384_PUBLIC.to_owned())].into()).unwrap();
    let claims = serde_json::json!({
        "aws:channel-arn": "arn:aws:ivs:us-west-2:123456789012:channel/channel-42",
        "exp": 4_000_000_000u64,
    });
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(ES384_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(keys.verify(&jwt, "channel-42").is_ok());
    c.bench_function("token/jwt_verify_es384", |b| {
        b.iter(|| keys.verify(criterion::black_box(&jwt), "channel-42"))
    });
    c.bench_function("token/sign_path", |b| {
        b.iter(|| k.sign_path("channel-42", criterion::black_box("/keys/2026/k1.bin")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
