//! A stream and the rules for where a stream's origin may point: shared by the config
//! (static streams), the store (users' streams), the admin (checking a user's URL) and the
//! edge (checking again at every connection).

use crate::origin::Origin;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// One `origins.allow` entry: a host name, an address or a CIDR, optionally with a port
/// (`127.0.0.1:9000`, `10.0.0.0/8:8080`, `[::1]:9000`, `origin.internal:443`). Without a
/// port it allows every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub target: AllowTarget,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowTarget {
    Net(IpNet),
    /// Lower-case DNS name.
    Host(String),
}

impl AllowEntry {
    /// Parse `host`, `ip`, `cidr`, each optionally followed by `:port` (IPv6 in brackets
    /// when a port follows: `[::1]:9000`, `[fd00::/8]:443`).
    pub fn parse(s: &str) -> Option<AllowEntry> {
        let s = s.trim();
        let net = |t: &str| {
            t.parse::<IpNet>()
                .ok()
                .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from))
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
        if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(port(p.strip_prefix(':')?)?),
            };
            let n = net(inner).filter(|n| matches!(n, IpNet::V6(_)))?;
            return Some(AllowEntry {
                target: AllowTarget::Net(n),
                port,
            });
        }
        if let Some(n) = net(s) {
            return Some(AllowEntry {
                target: AllowTarget::Net(n),
                port: None,
            });
        }
        let (t, p) = match s.rsplit_once(':') {
            Some((t, p)) if !t.contains(':') => (t, Some(port(p)?)),
            Some(_) => return None,
            None => (s, None),
        };
        let target = match net(t) {
            Some(n) => AllowTarget::Net(n),
            None if crate::origin::valid_hostname(t) => AllowTarget::Host(t.to_ascii_lowercase()),
            None => return None,
        };
        Some(AllowEntry { target, port: p })
    }

    fn matches(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.target {
            AllowTarget::Net(n) => n.contains(&ip),
            AllowTarget::Host(h) => h.eq_ignore_ascii_case(host),
        }
    }
}

/// Where origins may point. Users of the admin are not trusted, so:
/// - internal addresses ([`crate::net::is_internal`]) only when `allow` names them (with
///   the port, when the entry has one);
/// - never one of hlsgate's own listeners (edge, admin, metrics), whatever `allow` says;
/// - a user's stream URL must start with one of `users` when that list is set.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    pub allow: Vec<AllowEntry>,
    /// hlsgate's own listening addresses.
    pub own: Vec<std::net::SocketAddr>,
    /// `origins.users`: URL prefixes users' stream URLs must start with (empty: any).
    pub users: Vec<String>,
    /// `origins.media_types`: response content types the edge passes (lower case; an
    /// entry ending in `/*` allows the whole top-level type).
    pub media_types: Vec<String>,
    /// `origins.ca_file`: the CAs HTTPS origins must chain to (none: the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// `origins.shield`: the hlsgate that misses of HTTP origins are fetched from.
    pub shield: Option<Shield>,
}

/// `origins.shield`: another hlsgate, trusted (the operator names it) and sharing the token
/// key, that this edge asks for the objects it misses (see `edge::shield`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shield {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]` as the `Host` header names it.
    pub authority: String,
}

impl Shield {
    /// `http(s)://host[:port]`, optionally with a trailing `/`; no path, query or credentials.
    pub fn parse(url: &str) -> Result<Shield, String> {
        let bare = url.strip_suffix('/').unwrap_or(url);
        if !(bare.starts_with("http://") || bare.starts_with("https://"))
            || bare.matches('/').count() != 2
        {
            return Err(format!(
                "{url:?} must be http(s)://HOST[:PORT], with no path"
            ));
        }
        match crate::origin::Origin::from_playlist_url(&format!("{bare}/x"))? {
            (
                crate::origin::Origin::Http {
                    tls,
                    host,
                    port,
                    space,
                },
                _,
            ) => Ok(Shield {
                tls,
                host,
                port,
                authority: space.authority.clone(),
            }),
            _ => Err(format!("{url:?} must be http(s)://HOST[:PORT]")),
        }
    }
}

/// The media types an edge passes when `origins.media_types` is not set.
pub const DEFAULT_MEDIA_TYPES: &[&str] = &[
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
    "video/*",
    "audio/*",
    "application/mp4",
    "application/octet-stream",
    "text/vtt",
    "image/jpeg",
    "image/png",
    "image/webp",
];

impl OriginPolicy {
    /// Whether an origin at `ip:port` (reached by the name `host`) may be fetched from.
    pub fn permits(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        if self.is_own(ip, port) {
            return false;
        }
        !crate::net::is_internal(ip) || self.allow.iter().any(|a| a.matches(host, ip, port))
    }

    /// One of hlsgate's own listeners. A listener on `0.0.0.0`/`::` answers on every
    /// address of the machine: its port is refused on every internal address (the
    /// machine's public addresses are not known here; see README "Security model").
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|l| {
            l.port() == port
                && (l.ip().to_canonical() == ip
                    || (l.ip().is_unspecified() && crate::net::is_internal(ip)))
        })
    }

    /// A user's stream URL starts with one of `origins.users` (when set).
    pub fn user_url_allowed(&self, url: &str) -> bool {
        self.users.is_empty() || self.users.iter().any(|p| url.starts_with(p.as_str()))
    }

    /// Whether a response `Content-Type` is media the edge passes. No content type at all
    /// is taken as `application/octet-stream`.
    pub fn is_media(&self, content_type: Option<&[u8]>) -> bool {
        let ct = content_type.unwrap_or(b"application/octet-stream");
        let ct = ct.split(|&b| b == b';').next().unwrap_or(ct).trim_ascii();
        let Ok(ct) = std::str::from_utf8(ct) else {
            return false;
        };
        let matches = |t: &str| match t.strip_suffix("/*") {
            Some(top) => ct
                .split_once('/')
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(top) && !b.is_empty()),
            None => ct.eq_ignore_ascii_case(t),
        };
        if self.media_types.is_empty() {
            DEFAULT_MEDIA_TYPES.iter().any(|t| matches(t))
        } else {
            self.media_types.iter().any(|t| matches(t))
        }
    }
}

/// A stream: its id, its origin and its playlist's file name.
#[derive(Debug, Clone)]
pub struct Stream {
    pub id: String,
    pub origin: Origin,
    /// Path of the playlist below the origin base (the part after the last `/`).
    pub playlist: String,
    /// The user a stream from the store belongs to (`None`: a static stream).
    pub owner: Option<i64>,
    /// `streams.NAME.auth`: the token modes admitted (`None`: every configured one).
    pub auth: Option<Vec<crate::token::Mode>>,
    /// `streams.NAME.max_viewers`: most viewer sessions at once across the edges (0: no cap).
    pub max_viewers: u32,
    /// `access_rules`: where viewers may watch from (`None`: anywhere).
    pub access: Option<std::sync::Arc<crate::rules::AccessRules>>,
    /// `referers`: the pages its players may be embedded in (`None`: any).
    pub referers: Option<std::sync::Arc<crate::rules::Referers>>,
}

impl Stream {
    /// Whether `mode` may admit viewers of this stream.
    pub fn admits(&self, mode: crate::token::Mode) -> bool {
        self.auth.as_ref().is_none_or(|a| a.contains(&mode))
    }
}

/// Stream ids appear in URLs and tokens: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_stream_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= crate::token::MAX_STREAM_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}{}", self.id, self.origin, self.playlist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> OriginPolicy {
        OriginPolicy {
            allow: allow
                .iter()
                .map(|a| AllowEntry::parse(a).unwrap())
                .collect(),
            own: vec![
                "127.0.0.1:8080".parse().unwrap(),
                "0.0.0.0:9100".parse().unwrap(),
            ],
            ..OriginPolicy::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_entries_parse_with_and_without_ports() {
        for (s, port) in [
            ("127.0.0.1", None),
            ("127.0.0.1:9000", Some(9000)),
            ("10.0.0.0/8", None),
            ("10.0.0.0/8:8080", Some(8080)),
            ("[::1]:9000", Some(9000)),
            ("::1", None),
            ("[fd00::/8]:443", Some(443)),
            ("origin.internal", None),
            ("origin.internal:443", Some(443)),
        ] {
            assert_eq!(AllowEntry::parse(s).map(|e| e.port), Some(port), "{s}");
        }
        for bad in [
            "",
            "a b",
            "127.0.0.1:0",
            "x:99999",
            "[::1",
            "[1.2.3.4]:80",
            "h:p",
        ] {
            assert_eq!(AllowEntry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ports_narrow_the_allow_list() {
        let p = policy(&["127.0.0.1:9000", "10.0.0.0/8:8080", "origin.internal:443"]);
        assert!(p.permits("127.0.0.1", ip("127.0.0.1"), 9000));
        assert!(!p.permits("127.0.0.1", ip("127.0.0.1"), 9001));
        assert!(p.permits("10.1.2.3", ip("10.1.2.3"), 8080));
        assert!(!p.permits("10.1.2.3", ip("10.1.2.3"), 80));
        assert!(p.permits("origin.internal", ip("10.9.9.9"), 443));
        assert!(!p.permits("origin.internal", ip("10.9.9.9"), 80));
        assert!(p.permits("example.com", ip("93.184.216.34"), 80));
    }

    #[test]
    fn own_listeners_are_never_origins() {
        let p = policy(&["127.0.0.1", "0.0.0.0/0"]);
        assert!(!p.permits("127.0.0.1", ip("127.0.0.1"), 8080));
        // 0.0.0.0:9100 answers on every local address
        assert!(!p.permits("127.0.0.1", ip("127.0.0.1"), 9100));
        assert!(!p.permits("127.0.0.2", ip("127.0.0.2"), 9100));
        assert!(!p.permits("x", ip("::ffff:127.0.0.1"), 9100));
        assert!(p.permits("127.0.0.1", ip("127.0.0.1"), 8081));
    }

    #[test]
    fn media_types() {
        let p = OriginPolicy::default();
        for ok in [
            &b"video/mp2t"[..],
            b"application/vnd.apple.mpegurl; charset=utf-8",
            b"audio/aac",
            b"application/octet-stream",
            b"text/vtt",
            b"image/jpeg",
            b"VIDEO/MP4",
        ] {
            assert!(p.is_media(Some(ok)), "{}", String::from_utf8_lossy(ok));
        }
        assert!(p.is_media(None));
        for bad in [
            &b"text/html"[..],
            b"image/svg+xml",
            b"application/json",
            b"application/javascript",
            b"text/css",
            b"text/plain",
            b"application/xml",
            b"video/",
            b"\xff",
        ] {
            assert!(!p.is_media(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
    }
}
