//! TLS for the edge and the admin (rustls, the provider Pingora uses): certificate/key pairs
//! chosen by SNI from the names in each certificate, and picked up again when their files
//! change (a renewed certificate needs no restart).
//!
//! ```yaml
//! edge:
//!   tls:
//!     listen: "0.0.0.0:8443"
//!     cert: /etc/hlsgate/tls/edge.crt      # the default (and the names it holds)
//!     key: /etc/hlsgate/tls/edge.key
//!     certs:                               # more pairs, by SNI
//!       - { cert: /etc/hlsgate/tls/other.crt, key: /etc/hlsgate/tls/other.key }
//! ```

use crate::config::Tls;
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::ALPN;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One certificate chain with its key and the DNS names it is for (lower case; a
/// wildcard `*.example.com` kept as `.example.com`).
#[derive(Debug)]
pub struct Pair {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// Check that `path` holds at least one PEM certificate (`origins.ca_file`).
pub fn read_ca(path: &Path) -> Result<(), String> {
    read_certs(path).map(drop)
}

/// Read a certificate chain and its private key; the key must be one rustls can sign with
/// and must match the certificate.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Pair, String> {
    let certs = read_certs(cert)?;
    let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: not PEM ({e})", key.display()))?
        .ok_or_else(|| format!("{}: no private key in it", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("{}: unusable key ({e})", key.display()))?;
    let names = names_of(&certs[0]).map_err(|e| format!("{}: {e}", cert.display()))?;
    let pair = CertifiedKey::new(certs, signer);
    pair.keys_match()
        .map_err(|e| format!("{} does not match {} ({e})", key.display(), cert.display()))?;
    Ok(Pair {
        key: Arc::new(pair),
        names,
    })
}

/// The DNS names a certificate is for: its subjectAltName DNS entries, or its subject CN.
fn names_of(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in x.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names
        .into_iter()
        .map(|n| match n.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') => rest.to_owned(),
            _ => n,
        })
        .collect())
}

/// The pairs of one listener, as last read.
#[derive(Debug)]
struct Loaded {
    pairs: Vec<Pair>,
    /// Each file and its modification time when read.
    stamps: Vec<(PathBuf, Option<SystemTime>)>,
}

/// Chooses a listener's certificate by SNI: a name in a pair's certificate, exactly or
/// under one of its wildcards; the first pair otherwise (and without SNI).
#[derive(Debug)]
pub struct Certs {
    files: Vec<(PathBuf, PathBuf)>,
    what: String,
    loaded: ArcSwap<Loaded>,
}

fn stamp(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Certs {
    /// Read every pair of `tls` (`what` names the listener in logs).
    pub fn load(tls: &Tls, what: &str) -> Result<Arc<Certs>, String> {
        let loaded = Self::read(&tls.pairs)?;
        Ok(Arc::new(Certs {
            files: tls.pairs.clone(),
            what: what.to_owned(),
            loaded: ArcSwap::from_pointee(loaded),
        }))
    }

    fn read(files: &[(PathBuf, PathBuf)]) -> Result<Loaded, String> {
        let mut stamps = Vec::new();
        let mut pairs = Vec::new();
        for (c, k) in files {
            stamps.push((c.clone(), stamp(c)));
            stamps.push((k.clone(), stamp(k)));
            pairs.push(load_pair(c, k)?);
        }
        Ok(Loaded { pairs, stamps })
    }

    /// Read the files again if any changed since last read. A pair that no longer loads
    /// (a half-written renewal) leaves the old ones serving, and is tried again next time.
    pub fn refresh(&self) {
        let changed = self
            .loaded
            .load()
            .stamps
            .iter()
            .any(|(p, t)| stamp(p) != *t);
        if !changed {
            return;
        }
        match Self::read(&self.files) {
            Ok(l) => {
                tracing::info!(listener = %self.what, pairs = l.pairs.len(), "TLS certificates reloaded");
                self.loaded.store(Arc::new(l));
            }
            Err(e) => {
                tracing::warn!(listener = %self.what, error = %e, "TLS certificates changed but do not load; still serving the old ones")
            }
        }
    }

    /// Look at the files every `every` on a thread of its own, for as long as the process
    /// runs.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("hlsgate-certs".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                match me.upgrade() {
                    Some(c) => c.refresh(),
                    None => return,
                }
            });
    }

    /// Pingora's TLS settings for a listener with these certificates: ALPN h2 then
    /// http/1.1 (`h2`), or http/1.1 alone.
    pub fn settings(self: &Arc<Self>, h2: bool) -> TlsSettings {
        let mut s = TlsSettings::with_callbacks(Box::new(NoCallbacks))
            .expect("TLS settings without files cannot fail");
        s.set_cert_resolver(self.clone());
        s.set_alpn(if h2 { ALPN::H2H1 } else { ALPN::H1 });
        s
    }

    /// The pair for a server name (None: no SNI).
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            let parent = name.find('.').map(|i| &name[i..]);
            for p in &loaded.pairs {
                if p.names
                    .iter()
                    .any(|n| *n == name || (n.starts_with('.') && Some(n.as_str()) == parent))
                {
                    return Some(p.key.clone());
                }
            }
        }
        loaded.pairs.first().map(|p| p.key.clone())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// `TlsSettings::with_callbacks` is the constructor that takes no files.
struct NoCallbacks;

#[async_trait::async_trait]
impl pingora_core::listeners::TlsAccept for NoCallbacks {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_defaults() {
        let mk = |names: &[&str]| Pair {
            key: Arc::new(CertifiedKey::new(
                vec![],
                rustls::crypto::ring::sign::any_supported_type(&test_key()).unwrap(),
            )),
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        let c = Certs {
            files: vec![],
            what: "t".into(),
            loaded: ArcSwap::from_pointee(Loaded {
                pairs: vec![mk(&["a.example"]), mk(&[".b.example", "b.example"])],
                stamps: vec![],
            }),
        };
        let first = Arc::as_ptr(&c.loaded.load().pairs[0].key);
        let second = Arc::as_ptr(&c.loaded.load().pairs[1].key);
        let pick = |n: Option<&str>| Arc::as_ptr(&c.choose(n).unwrap());
        assert_eq!(pick(Some("a.example")), first);
        assert_eq!(pick(Some("A.Example")), first);
        assert_eq!(pick(Some("x.b.example")), second);
        assert_eq!(pick(Some("b.example")), second);
        // a wildcard covers one label only
        assert_eq!(pick(Some("y.x.b.example")), first);
        assert_eq!(pick(Some("other.example")), first);
        assert_eq!(pick(None), first);
    }

    fn test_key() -> PrivateKeyDer<'static> {
        let doc = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&doc).unwrap();
        PrivateKeyDer::Pkcs8(der.as_bytes().to_vec().into())
    }
}
