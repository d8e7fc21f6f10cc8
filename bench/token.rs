//! Token costs: verify (the per-request check), issue, and the per-URI path signature.
//! `cargo bench --bench token`
use criterion::{criterion_group, criterion_main, Criterion};
use hlsgate::token::cloudfront::{self, CloudFrontKeys};
use hlsgate::token::jwt::JwtKeys;
use hlsgate::token::rsa2048::Hash;
use hlsgate::token::{akamai, secure_link};
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

include!("../tests/fixtures/botocore_cloudfront.rs");

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
        scope: hlsgate::token::Scope::path(),
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
    // CloudFront: the policy of botocore's cookies (RSA-2048, SHA-1), then the edge's own
    // HMAC cookies; Akamai EdgeAuth; nginx secure_link. Each is checked once per viewer
    // session (the first playlist request), then exchanged for a native token.
    let cf =
        CloudFrontKeys::from_pems(&[("KBENCH".to_owned(), CF_PUBLIC.to_owned())].into()).unwrap();
    let signed = cloudfront::Signed {
        policy: Some(CF_POLICY),
        signature: CF_SIGNATURE,
        key_pair_id: "KBENCH",
        ..Default::default()
    };
    let target = cloudfront::Target {
        host: "edge.example",
        path: "/hls/channel-42/index.m3u8",
        rest_query: "",
        ip: "203.0.113.9".parse().unwrap(),
        now: 1_900_000_000,
    };
    assert!(cf.verify(&signed, &target, &[]).is_ok());
    c.bench_function("token/cloudfront_verify_rsa2048_custom", |b| {
        b.iter(|| cf.verify(criterion::black_box(&signed), &target, &[]))
    });
    // The library's part of it alone: AWS-LC's RSA-2048 PKCS#1 SHA-1 check of the decoded
    // policy, with the key parsed once (as `CloudFrontKeys` keeps it).
    let der = pem_der(CF_PUBLIC);
    let spki = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        &der,
    )
    .unwrap();
    let (msg, sig) = (
        cloudfront::decode(CF_POLICY).unwrap(),
        cloudfront::decode(CF_SIGNATURE).unwrap(),
    );
    assert!(spki.verify_sig(&msg, &sig).is_ok());
    c.bench_function("token/rsa2048_sha1_aws_lc_alone", |b| {
        b.iter(|| spki.verify_sig(criterion::black_box(&msg), &sig))
    });
    // The same check on AVX-512 IFMA (what `CloudFrontKeys` uses where the CPU has it).
    // A 2,048-bit SPKI with e = 65537 has the modulus at 33..289, the exponent at 291..
    assert_eq!(
        (der.len(), &der[28..33]),
        (294, &[0x02, 0x82, 0x01, 0x01, 0x00][..])
    );
    if let Some(ifma) = hlsgate::token::rsa2048::Rsa2048::new(&der[33..289], &der[291..]) {
        assert!(ifma.verify(Hash::Sha1, &msg, &sig));
        c.bench_function("token/rsa2048_sha1_ifma_alone", |b| {
            b.iter(|| ifma.verify(Hash::Sha1, criterion::black_box(&msg), &sig))
        });
    }
    let native = k.derive(cloudfront::NATIVE_LABEL);
    let policy = cloudfront::custom_policy("http*://edge.example/hls/channel-42/*", 4_000_000_000);
    let (p, sig, kp) = cloudfront::sign_native(&policy, native[0].0, &native[0].1);
    let own = cloudfront::Signed {
        policy: Some(&p),
        signature: &sig,
        key_pair_id: &kp,
        ..Default::default()
    };
    assert!(cf.verify(&own, &target, &native).is_ok());
    c.bench_function("token/cloudfront_verify_native_hmac", |b| {
        b.iter(|| cf.verify(criterion::black_box(&own), &target, &native))
    });
    let ak_key = akamai::key_from_hex("4f2b1c9d8e7a6b5c4d3e2f1a0b9c8d7e").unwrap();
    let fields = "st=1800000000~exp=4000000000~acl=/hls/channel-42/*";
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &ak_key),
        fields.as_bytes(),
    );
    let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let ak = format!("{fields}~hmac={hex}");
    let ip = "203.0.113.9".parse().unwrap();
    assert!(akamai::verify(
        &ak_key,
        &ak,
        "/hls/channel-42/index.m3u8",
        ip,
        1_900_000_000
    )
    .is_ok());
    c.bench_function("token/akamai_verify", |b| {
        b.iter(|| {
            akamai::verify(
                &ak_key,
                criterion::black_box(&ak),
                "/hls/channel-42/index.m3u8",
                ip,
                1_900_000_000,
            )
        })
    });
    let md5 = secure_link::hash(
        "nginx-secret-123",
        "4000000000",
        "/hls/channel-42/index.m3u8",
        ip,
    );
    c.bench_function("token/secure_link_verify", |b| {
        b.iter(|| {
            secure_link::verify(
                "nginx-secret-123",
                criterion::black_box(&md5),
                Some("4000000000"),
                "/hls/channel-42/index.m3u8",
                ip,
                1_900_000_000,
            )
        })
    });
    c.bench_function("token/sign_path", |b| {
        b.iter(|| k.sign_path("channel-42", criterion::black_box("/keys/2026/k1.bin")))
    });
}

/// A PEM block's DER bytes.
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

criterion_group!(benches, bench);
criterion_main!(benches);
