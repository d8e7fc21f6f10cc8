//! Query-JWT mode (AWS IVS private channels): tokens signed by PyJWT (Debian's
//! python3-jwt, not the code under test) with keys openssl made, played by ffmpeg through
//! `hlsgate edge` in front of a loopback origin serving ffmpeg-made HLS.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const UA: &str = "hlsgate-jwt-player/1.0";

struct Harness {
    edge: Hlsgate,
    metrics: u16,
    keys: PathBuf,
    _origin: Origin,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let origin = Origin::with_streams(dir.join("origin"));
        let keys = dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        openssl(&keys, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "es384.pem"]);
        openssl(&keys, &["ec", "-in", "es384.pem", "-pubout", "-out", "es384.pub"]);
        openssl(&keys, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "es256.pem"]);
        openssl(&keys, &["ec", "-in", "es256.pem", "-pubout", "-out", "es256.pub"]);
        openssl(&keys, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
        openssl(&keys, &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub"]);
        // an ES384 key nobody registered
        openssl(&keys, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "rogue.pem"]);
        let (config, ports) = write_config(
            &dir,
            "2s",
            &format!("streams:\n{}", origin.streams_yaml()),
        );
        let k = keys.display();
        add_config_keys(
            &config,
            "tokens",
            &format!("  jwt:\n    keys:\n      ivs: \"{k}/es384.pub\"\n      k256: \"{k}/es256.pub\"\n      rsa: \"{k}/rsa.pub\"\n"),
        );
        // the forged-credential test floods as an address of its own (X-Forwarded-For)
        add_config_keys(&config, "edge", "  trusted_proxies: [\"127.0.0.1\"]\n");
        let edge = Hlsgate::start("edge", &config, ports.edge);
        Harness {
            edge,
            metrics: ports.metrics,
            keys,
            _origin: origin,
        }
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT made by PyJWT.
fn sign(h: &Harness, key: &str, alg: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/sign_jwt.py");
    let out = Command::new("/usr/bin/python3")
        .arg(helper)
        .arg(h.keys.join(key))
        .arg(alg)
        .arg(kid.unwrap_or("-"))
        .arg(claims.to_string())
        .output()
        .expect("python3 with python3-jwt (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An IVS-style playback token: ES384, no `kid`, the stream in `aws:channel-arn`.
fn ivs(h: &Harness, stream: &str, exp: u64) -> String {
    sign(
        h,
        "es384.pem",
        "ES384",
        None,
        json!({
            "aws:channel-arn": format!("arn:aws:ivs:us-west-2:123456789012:channel/{stream}"),
            "aws:access-control-allow-origin": "*",
            "exp": exp,
        }),
    )
}

fn path(stream: &str, object: &str, jwt: &str) -> String {
    format!("/hls/{stream}/{object}?token={jwt}")
}

fn status(h: &Harness, p: &str) -> (u16, String) {
    let r = get(h.edge.port, p, &[("User-Agent", UA)]).unwrap();
    (r.status, r.text())
}

#[test]
fn ffmpeg_plays_every_variant_with_an_ivs_token() {
    let h = harness();
    for (stream, playlist) in [
        ("ts", "index.m3u8"),
        ("fmp4", "index.m3u8"),
        ("aes", "index.m3u8"),
        ("single", "index.m3u8"),
        ("ladder", "master.m3u8"),
    ] {
        let jwt = ivs(h, stream, now() + 300);
        let url = format!(
            "http://127.0.0.1:{}{}",
            h.edge.port,
            path(stream, playlist, &jwt)
        );
        let (ok, err) = ffmpeg_play(&url, UA);
        assert!(ok, "{stream}: {err}");
    }
}

#[test]
fn the_jwt_is_exchanged_for_a_native_token_bound_to_the_viewer() {
    let h = harness();
    let jwt = ivs(h, "ts", now() + 300);
    let r = get(
        h.edge.port,
        &path("ts", "index.m3u8", &jwt),
        &[("User-Agent", UA)],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let native = r.header("X-New-Token").unwrap().to_owned();
    let text = r.text();
    let uris: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(!uris.is_empty());
    for u in &uris {
        assert!(u.starts_with(&format!("/api/hls/{native}/ts/")), "{u}");
        assert!(!u.contains(&jwt), "the JWT must not travel on: {u}");
    }
    assert_eq!(
        get(h.edge.port, uris[0], &[("User-Agent", UA)])
            .unwrap()
            .status,
        200
    );
    // the exchanged token is this viewer's: another User-Agent is refused
    assert_eq!(
        get(h.edge.port, uris[0], &[("User-Agent", "someone-else")])
            .unwrap()
            .status,
        403
    );
}

#[test]
fn every_refusal_of_a_jwt() {
    let h = harness();
    let t = now();
    let claims = |stream: &str, exp: u64| json!({"stream": stream, "exp": exp});
    // accepted: the `stream` claim; RS256 with and without kid; ES256 with its kid
    for jwt in [
        sign(h, "es384.pem", "ES384", None, claims("ts", t + 300)),
        sign(h, "rsa.pem", "RS256", Some("rsa"), claims("ts", t + 300)),
        sign(h, "rsa.pem", "RS256", None, claims("ts", t + 300)),
        sign(h, "es256.pem", "ES256", Some("k256"), claims("ts", t + 300)),
        sign(
            h,
            "es384.pem",
            "ES384",
            Some("ivs"),
            json!({"stream": "ts", "exp": t + 300, "nbf": t - 5}),
        ),
    ] {
        let (s, body) = status(h, &path("ts", "index.m3u8", &jwt));
        assert_eq!(s, 200, "{jwt}: {body}");
    }
    let good = ivs(h, "ts", t + 300);
    let mut forged = good.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for (jwt, want, what) in [
        (
            forged,
            (401, "invalid token signature"),
            "one signature character changed",
        ),
        (
            sign(h, "rogue.pem", "ES384", None, claims("ts", t + 300)),
            (401, "invalid token signature"),
            "an unregistered key",
        ),
        (ivs(h, "ts", t - 10), (401, "token expired"), "expired"),
        (
            sign(
                h,
                "es384.pem",
                "ES384",
                None,
                json!({"stream": "ts", "exp": t + 300, "nbf": t + 120}),
            ),
            (401, "token not yet valid"),
            "nbf in the future",
        ),
        (
            sign(h, "es384.pem", "ES384", None, json!({"stream": "ts"})),
            (401, "malformed token"),
            "no exp",
        ),
        (
            ivs(h, "fmp4", t + 300),
            (403, "token is for another stream"),
            "another stream",
        ),
        (
            sign(h, "es384.pem", "none", None, claims("ts", t + 300)),
            (401, "malformed token"),
            "alg none",
        ),
        (
            sign(h, "es384.pub", "HS256-PUBKEY", None, claims("ts", t + 300)),
            (401, "invalid token signature"),
            "HS256 keyed with the public key",
        ),
        (
            sign(h, "es256.pem", "ES256", Some("ivs"), claims("ts", t + 300)),
            (401, "invalid token signature"),
            "ES256 naming the ES384 key",
        ),
        (
            sign(h, "es384.pem", "ES384", Some("nope"), claims("ts", t + 300)),
            (401, "invalid token signature"),
            "unknown kid",
        ),
        ("not.a.jwt".to_owned(), (401, "malformed token"), "garbage"),
    ] {
        let (s, body) = status(h, &path("ts", "index.m3u8", &jwt));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!((s, v["error"].as_str().unwrap_or(&body)), want, "{what}");
    }
    let (s, _) = status(h, "/hls/ts/index.m3u8");
    assert_eq!(s, 401, "no token at all");
    let (s, _) = status(h, &path("ts", "../x.m3u8", &good));
    assert_eq!(s, 400);
}

#[test]
fn a_verified_jwt_is_remembered_but_still_expires_and_stays_on_its_stream() {
    let h = harness();
    let jwt = ivs(h, "ts", now() + 2);
    assert_eq!(status(h, &path("ts", "index.m3u8", &jwt)).0, 200);
    assert_eq!(
        status(h, &path("ts", "index.m3u8", &jwt)).0,
        200,
        "remembered"
    );
    assert_eq!(
        status(h, &path("fmp4", "index.m3u8", &jwt)).0,
        403,
        "another stream"
    );
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let (s, body) = status(h, &path("ts", "index.m3u8", &jwt));
    assert_eq!((s, body.as_str()), (401, "{\"error\":\"token expired\"}"));
}

/// The flooding client's address, through the trusted loopback proxy.
const FLOODER: (&str, &str) = ("X-Forwarded-For", "203.0.113.66");

/// [`status`] as the flooding client.
fn flooder(h: &Harness, p: &str) -> (u16, String) {
    let r = get(h.edge.port, p, &[("User-Agent", UA), FLOODER]).unwrap();
    (r.status, r.text())
}

/// A metric's value summed over the series whose text contains `filter`.
fn metric(h: &Harness, name: &str, filter: &str) -> f64 {
    let text = get(h.metrics, "/metrics", &[]).unwrap().text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn forged_credentials_are_bounded_per_address_and_made_up_kids_cost_no_query() {
    let h = harness();
    let good = ivs(h, "ts", now() + 300);
    // a flood of JWTs signed with a key nobody registered, under the registered kid: each
    // would cost an ES384 check; past edge.max_failed_verifications (20) a second, 429
    let forged = sign(
        h,
        "rogue.pem",
        "ES384",
        Some("ivs"),
        json!({"stream": "ts", "exp": now() + 300}),
    );
    let p = path("ts", "index.m3u8", &forged);
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let (s, _) = flooder(h, &p);
        statuses.push(s);
        if s == 429 {
            break;
        }
    }
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        (20..=40).contains(&refused),
        "{refused} checks before 429: {statuses:?}"
    );
    let r = get(h.edge.port, &p, &[("User-Agent", UA), FLOODER]).unwrap();
    if r.status == 429 {
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert_eq!(
            r.text(),
            r#"{"error":"too many failed credentials from this address"}"#
        );
    }
    // Past the bound each answer waits for the next second: a flooding connection gets
    // about the bound's worth of checks and one 429 a second, not as many as it can ask.
    let started = std::time::Instant::now();
    let mut answers = (0, 0);
    while started.elapsed() < std::time::Duration::from_secs(2) {
        match flooder(h, &p).0 {
            401 => answers.0 += 1,
            429 => answers.1 += 1,
            s => panic!("{s}"),
        }
    }
    assert!(
        answers.0 <= 3 * 20 && (1..=4).contains(&answers.1),
        "2 s of flooding: (401s, 429s) {answers:?}"
    );
    // the next second the address is checked again, and a good token plays
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_eq!(flooder(h, &path("ts", "index.m3u8", &good)).0, 200);
    assert!(metric(h, "hlsgate_auth_denials_total", "verify_rate") >= 1.0);

    // JWTs naming kids nobody registered: none is looked up in the store one by one
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let before = metric(h, "hlsgate_store_queries_total", "what=\"playback_key\"");
    for i in 0..15 {
        let kid = format!("pk_{i:032x}");
        let t = sign(
            h,
            "rogue.pem",
            "ES384",
            Some(&kid),
            json!({"stream": "ts", "exp": now() + 300}),
        );
        assert_eq!(flooder(h, &path("ts", "index.m3u8", &t)).0, 401);
    }
    let after = metric(h, "hlsgate_store_queries_total", "what=\"playback_key\"");
    assert_eq!(after, before, "a store query per made-up kid");
    assert!(metric(h, "hlsgate_store_queries_total", "what=\"playback_kids\"") >= 1.0);
}
