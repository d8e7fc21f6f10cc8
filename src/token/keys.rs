//! The keyring: HMAC keys with ids, read from `tokens.secret_file`.
//!
//! File format, one key a line, `#` comments allowed:
//!
//! ```text
//! # ID KEY  (ID 0..=255; KEY URL-safe base64 of at least 32 random bytes)
//! 2 q1wG...   <- the first key signs new tokens
//! 1 Zx9a...   <- later keys only verify: rotation keeps old tokens valid
//! ```
//!
//! When the file is missing it is created with one fresh key, mode 0600.

use super::hmac::HmacSha256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::path::Path;

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {problem}")]
    Parse { line: usize, problem: String },
    #[error("no key in the file")]
    Empty,
}

/// One key: the HMAC-SHA256 key (its inner and outer pads pre-hashed, the CPU's SHA
/// extensions used: see `token::hmac`) and the SipHash key for binding tags, derived from it.
#[derive(Clone)]
pub(crate) struct Key {
    hmac: HmacSha256,
    sip: (u64, u64),
}

impl Key {
    fn new(secret: &[u8]) -> Key {
        let hmac = HmacSha256::new(secret);
        let d = hmac.mac(&[b"hlsgate binding tag key"]);
        let sip = (
            u64::from_le_bytes(d[0..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(d[8..16].try_into().expect("8 bytes")),
        );
        Key { hmac, sip }
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.hmac.mac(parts)
    }

    pub(crate) fn tag(&self, data: &[u8]) -> [u8; 8] {
        let mut h = SipHasher13::new_with_keys(self.sip.0, self.sip.1);
        h.write(data);
        h.finish().to_be_bytes()
    }
}

/// Every key by id; the active one signs.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<Option<Key>>,
    active: u8,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let ids: Vec<usize> = (0..self.keys.len())
            .filter(|i| self.keys[*i].is_some())
            .collect();
        f.debug_struct("Keyring")
            .field("ids", &ids)
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// Parse the key file's text.
    pub fn from_text(text: &str) -> Result<Keyring, KeyError> {
        let mut keys: Vec<Option<Key>> = vec![None; 256];
        let mut active = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let problem = |p: &str| KeyError::Parse {
                line: i + 1,
                problem: p.to_owned(),
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(problem("expected `ID KEY`"));
            };
            let id: u8 = id
                .parse()
                .map_err(|_| problem("key id must be a number 0..=255"))?;
            let secret = URL_SAFE_NO_PAD
                .decode(secret.trim_end_matches('='))
                .map_err(|_| problem("key is not URL-safe base64"))?;
            if secret.len() < MIN_KEY_BYTES {
                return Err(problem("key is shorter than 32 bytes"));
            }
            if keys[id as usize].is_some() {
                return Err(problem("duplicate key id"));
            }
            keys[id as usize] = Some(Key::new(&secret));
            active.get_or_insert(id);
        }
        let active = active.ok_or(KeyError::Empty)?;
        Ok(Keyring { keys, active })
    }

    /// Read the key file; a missing one is an error (a reload never creates key files: a
    /// fresh key would make every outstanding token fail).
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Keyring::from_text(&text)
    }

    /// Read the key file, creating it (mode 0600, parent folders too) with one fresh key when
    /// it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Keyring, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Keyring::from_text(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; MIN_KEY_BYTES];
                getrandom::getrandom(&mut secret).map_err(|e| io(std::io::Error::other(e)))?;
                let text = format!(
                    "# hlsgate token keys: `ID KEY` a line; the first signs, all verify.\n1 {}\n",
                    URL_SAFE_NO_PAD.encode(secret)
                );
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::private::create_dir(dir).map_err(io)?;
                }
                write_private(path, text.as_bytes()).map_err(io)?;
                Keyring::from_text(&text)
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn active_kid(&self) -> u8 {
        self.active
    }

    /// A 32-byte secret for another purpose (`label`), derived from each key: the admin's
    /// JWT keys, so one key file holds every secret. `(kid, secret)`, the active key first.
    pub fn derive(&self, label: &str) -> Vec<(u8, [u8; 32])> {
        let mut out: Vec<(u8, [u8; 32])> = (0..=255u8)
            .filter_map(|kid| {
                let key = self.key(kid)?;
                Some((kid, key.mac(&[b"derive\0", label.as_bytes()])))
            })
            .collect();
        out.sort_by_key(|(kid, _)| *kid != self.active);
        out
    }

    pub(crate) fn key(&self, kid: u8) -> Option<&Key> {
        self.keys[kid as usize].as_ref()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_key_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let a = Keyring::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = Keyring::load_or_create(&path).unwrap();
        assert_eq!(a.active_kid(), b.active_kid());
        let text = std::fs::read_to_string(&path).unwrap();
        let again = Keyring::from_text(&text).unwrap();
        assert_eq!(
            again.key(1).unwrap().mac(&[b"x"]),
            b.key(1).unwrap().mac(&[b"x"])
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, want) in [
            ("", "no key"),
            ("1\n", "line 1"),
            ("# c\nx AAAA\n", "line 2"),
            ("1 AAAA\n", "shorter than 32"),
            ("1 !!!!\n", "base64"),
        ] {
            let err = Keyring::from_text(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let k = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v";
        let dup = format!("1 {k}\n1 {k}\n");
        assert!(Keyring::from_text(&dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
    }

    #[test]
    fn debug_hides_key_material() {
        let k = Keyring::from_text(
            "7 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n",
        )
        .unwrap();
        let s = format!("{k:?}");
        assert!(s.contains("active: 7") && !s.contains("AAEC"), "{s}");
    }
}
