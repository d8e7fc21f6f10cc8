//! Stream origins: where a stream's objects come from, and which origins are allowed at all.
//!
//! A stream is configured by its playlist URL; as in the seed, the URL is split at its last
//! `/` into the origin base (a folder) and the playlist name. `{path}` of an edge request is
//! always resolved below that base.

pub use crate::net::is_internal;
use crate::playlist::OriginSpace;
use crate::stream::OriginPolicy;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Origin {
    /// An HTTP(S) origin server.
    Http {
        tls: bool,
        host: String,
        port: u16,
        /// The rewriter's view: scheme, authority and base folder path (ends in `/`).
        space: Arc<OriginSpace>,
    },
    /// A folder on local disk (VOD, the demo).
    File {
        /// Canonical folder path.
        dir: PathBuf,
        space: Arc<OriginSpace>,
    },
}

impl Origin {
    /// Split a playlist URL into origin and playlist name.
    pub fn from_playlist_url(url: &str) -> Result<(Origin, String), String> {
        if let Some(path) = url.strip_prefix("file://") {
            let (dir, name) = split_last(path).ok_or("no playlist name after the last `/`")?;
            let dir = if dir.is_empty() { "." } else { dir };
            let canonical =
                std::fs::canonicalize(dir).map_err(|e| format!("origin folder {dir:?}: {e}"))?;
            if !canonical.is_dir() {
                return Err(format!("origin folder {dir:?} is not a folder"));
            }
            let mut base = canonical.to_string_lossy().into_owned();
            if !base.ends_with('/') {
                base.push('/');
            }
            let space = Arc::new(OriginSpace {
                scheme: None,
                authority: String::new(),
                base,
            });
            return Ok((
                Origin::File {
                    dir: canonical,
                    space,
                },
                name.to_owned(),
            ));
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{url:?}: unsupported scheme (use http://, https:// or file://)"
            ));
        };
        if rest.contains(['?', '#']) {
            return Err("query strings and fragments are not supported in origin URLs".into());
        }
        let slash = rest
            .find('/')
            .ok_or("no path: expected http://host/path/playlist.m3u8")?;
        let (authority, path) = rest.split_at(slash);
        if authority.contains('@') {
            return Err("credentials in origin URLs are not supported".into());
        }
        let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })?;
        let (dir, name) = split_last(path).ok_or("no playlist name after the last `/`")?;
        if dir.split('/').any(|s| s == ".." || s == ".") {
            return Err("`.` and `..` are not allowed in origin paths".into());
        }
        let default = if tls { 443 } else { 80 };
        let host_in_url = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let authority = if port == default {
            host_in_url
        } else {
            format!("{host_in_url}:{port}")
        };
        let space = Arc::new(OriginSpace {
            scheme: Some(if tls { "https" } else { "http" }),
            authority,
            base: format!("{dir}/"),
        });
        Ok((
            Origin::Http {
                tls,
                host,
                port,
                space,
            },
            name.to_owned(),
        ))
    }

    pub fn space(&self) -> &Arc<OriginSpace> {
        match self {
            Origin::Http { space, .. } | Origin::File { space, .. } => space,
        }
    }

    /// Refuse origins on internal addresses that the allow-list does not name, and
    /// hlsgate's own listeners. Names are resolved now; the edge checks the addresses again
    /// when it connects. The error says no more than "not an allowed origin": a user must
    /// not learn what an internal name resolves to, or whether it resolves at all.
    pub fn check_allowed(&self, policy: &OriginPolicy) -> Result<(), NotAllowed> {
        let Origin::Http { host, port, .. } = self else {
            return Ok(());
        };
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|_| NotAllowed)?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() || addrs.iter().any(|ip| !policy.permits(host, *ip, *port)) {
            return Err(NotAllowed);
        }
        Ok(())
    }
}

/// An origin the policy refuses (or a name that does not resolve).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an allowed origin")]
pub struct NotAllowed;

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.space();
        match s.scheme {
            Some(scheme) => write!(f, "{scheme}://{}{}", s.authority, s.base),
            None => write!(f, "file://{}", s.base),
        }
    }
}

fn split_last(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    let (dir, name) = (&path[..i], &path[i + 1..]);
    (!name.is_empty()).then_some((dir, name))
}

fn split_host_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    let bad = || format!("invalid host[:port] {authority:?}");
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        let host = &rest[..end];
        host.parse::<Ipv6Addr>().map_err(|_| bad())?;
        let port = match &rest[end + 1..] {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        None => default,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    if host.parse::<IpAddr>().is_err() && !valid_hostname(&host) {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// A DNS name of letters, digits, `-` and `.`.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_urls_as_the_seed_does() {
        let (o, p) =
            Origin::from_playlist_url("http://Origin.example:8080/live/s1/index.m3u8").unwrap();
        assert_eq!(p, "index.m3u8");
        assert_eq!(o.to_string(), "http://origin.example:8080/live/s1/");
        let (o, _) = Origin::from_playlist_url("https://[2001:db8::1]/a.m3u8").unwrap();
        assert_eq!(o.space().authority, "[2001:db8::1]");
        assert_eq!(o.space().base, "/");
        for bad in [
            "ftp://x/a.m3u8",
            "http://x",
            "http://x/",
            "http://x:0/a.m3u8",
            "http://x:99999/a.m3u8",
            "http://u:p@x/a.m3u8",
            "http://x/a/../b.m3u8",
            "http://x/a.m3u8?t=1",
            "http://bad host/a.m3u8",
            "file://conf/",
        ] {
            assert!(Origin::from_playlist_url(bad).is_err(), "{bad}");
        }
    }
}
