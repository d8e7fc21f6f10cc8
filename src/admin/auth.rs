//! Passwords (argon2id), login JWTs (HS256) and the login rate limiter.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// argon2id, version 0x13, the crate's (OWASP's) parameters: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

/// A PHC string for `password`. CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters and a fresh salt")
        .to_string()
}

/// Whether `password` matches the PHC string (constant-time inside argon2). A hash that
/// does not parse matches nothing. CPU-heavy: call from a blocking thread.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// What a login JWT says. `sessionID` and `username` are the seed's claims.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub username: String,
    /// The server-side session (32 hex digits).
    #[serde(rename = "sessionID")]
    pub session_id: String,
    pub iat: u64,
    pub exp: u64,
}

/// HS256 keys derived from the token key file (one per key id, the active one signs).
pub struct JwtKeys {
    sign: (String, EncodingKey),
    verify: Vec<(String, DecodingKey)>,
}

impl JwtKeys {
    pub fn new(keyring: &crate::token::Keyring) -> JwtKeys {
        let derived = keyring.derive("hlsgate admin jwt v1");
        let (kid, secret) = derived[0];
        JwtKeys {
            sign: (kid.to_string(), EncodingKey::from_secret(&secret)),
            verify: derived
                .iter()
                .map(|(kid, s)| (kid.to_string(), DecodingKey::from_secret(s)))
                .collect(),
        }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.sign.0.clone());
        jsonwebtoken::encode(&header, claims, &self.sign.1).expect("HS256 encoding")
    }

    /// The claims of a JWT we signed that has not expired; `None` otherwise. Only HS256 is
    /// accepted (no `none`, no algorithm confusion).
    pub fn verify(&self, jwt: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(jwt).ok()?;
        if header.alg != Algorithm::HS256 {
            return None;
        }
        let kid = header.kid?;
        let (_, key) = self.verify.iter().find(|(k, _)| *k == kid)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(jwt, key, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// At most `limit` attempts a minute per key (fixed one-minute windows).
pub struct RateLimiter {
    limit: u32,
    windows: moka::sync::Cache<String, Arc<Mutex<(Instant, u32)>>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RateLimiter {
    /// `limit == 0`: no limit.
    pub fn new(limit: u32) -> RateLimiter {
        RateLimiter {
            limit,
            windows: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(WINDOW)
                .build(),
        }
    }

    /// Count one attempt for `key`; `Err(seconds)` to wait when over the limit.
    /// Attempts counted for `key` in its current window (nothing is stored).
    pub fn count(&self, key: &str) -> u32 {
        self.current(key).map_or(0, |(n, _)| n)
    }

    /// Whether `key` has used its budget; `Err(seconds)` until its window ends.
    pub fn exhausted(&self, key: &str) -> Result<(), u64> {
        match self.current(key) {
            Some((n, left)) if n >= self.limit => Err(left.as_secs().max(1)),
            _ => Ok(()),
        }
    }

    /// `key`'s attempts in its live window and the time that window has left (nothing
    /// is stored; `None` without a limit or a live window).
    fn current(&self, key: &str) -> Option<(u32, Duration)> {
        if self.limit == 0 {
            return None;
        }
        let w = self.windows.get(key)?;
        let w = w.lock();
        let age = Instant::now().duration_since(w.0);
        (age < WINDOW).then(|| (w.1, WINDOW - age))
    }

    /// Count one attempt for `key`, whatever the budget says.
    pub fn record(&self, key: &str) {
        if self.limit != 0 {
            self.with_window(key, |w, _| w.1 = w.1.saturating_add(1));
        }
    }

    /// Check `key`'s budget and count this attempt against it.
    pub fn attempt(&self, key: &str) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        self.with_window(key, |w, now| {
            if w.1 >= self.limit {
                let left = WINDOW.saturating_sub(now.duration_since(w.0));
                return Err(left.as_secs().max(1));
            }
            w.1 += 1;
            Ok(())
        })
    }

    /// Run `f` on `key`'s current window (a new one when the last has run out).
    fn with_window<R>(&self, key: &str, f: impl FnOnce(&mut (Instant, u32), Instant) -> R) -> R {
        let now = Instant::now();
        let w = self
            .windows
            .get_with(key.to_owned(), || Arc::new(Mutex::new((now, 0))));
        let mut w = w.lock();
        if now.duration_since(w.0) >= WINDOW {
            *w = (now, 0);
        }
        f(&mut w, now)
    }
}

/// The limiter key of a client address (see [`crate::net::subscriber`]).
pub fn client_key(ip: std::net::IpAddr) -> String {
    match crate::net::subscriber(ip) {
        std::net::IpAddr::V4(v4) => format!("ip {v4}"),
        std::net::IpAddr::V6(net) => format!("ip {net}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Keyring;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &Keyring::from_text(
                "1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n",
            )
            .unwrap(),
        )
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "7".into(),
            username: "alice".into(),
            session_id: "00".repeat(16),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "ip 192.0.2.1"
        );
    }

    #[test]
    fn count_and_record_do_not_lock_a_fresh_key() {
        let l = RateLimiter::new(2);
        assert_eq!(l.count("k"), 0);
        assert!(l.exhausted("k").is_ok());
        l.record("k");
        l.record("k");
        assert_eq!(l.count("k"), 2);
        assert!(l.exhausted("k").is_err());
        assert!(l.exhausted("other").is_ok());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn jwts_verify_only_when_ours_and_unexpired() {
        let k = keys();
        let now = crate::token::unix_now() as u64;
        let t = k.issue(&claims(now + 60));
        assert_eq!(k.verify(&t).unwrap().username, "alice");
        assert!(k.verify(&k.issue(&claims(now - 1))).is_none(), "expired");
        // Another key's signature.
        let other = JwtKeys::new(
            &Keyring::from_text(
                "1 LywrKikoJyYlJCMiISAfHh0cGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA\n",
            )
            .unwrap(),
        );
        assert!(k.verify(&other.issue(&claims(now + 60))).is_none());
        // alg "none" with the same claims.
        let body = t.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiMSJ9.{body}.");
        assert!(k.verify(&none).is_none());
        assert!(k.verify("garbage").is_none());
    }

    #[test]
    fn the_rate_limiter_counts_per_key_and_says_how_long_to_wait() {
        let r = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(r.attempt("a").is_ok());
        }
        let wait = r.attempt("a").unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(r.attempt("b").is_ok(), "other keys are not affected");
        assert!(RateLimiter::new(0).attempt("a").is_ok());
    }
}
