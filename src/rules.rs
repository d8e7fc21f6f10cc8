//! Where a stream may be watched from: access rules in Cloudflare Stream's shape, and a
//! stream's allowed referrers.
//!
//! ```json
//! [{"type": "ip.geoip.country", "country": ["US", "MX"], "action": "block"},
//!  {"type": "ip.src", "ip": ["93.184.216.0/24"], "action": "allow"},
//!  {"type": "any", "action": "block"}]
//! ```
//!
//! Evaluated first to last; the first rule that matches the viewer's address decides; when
//! none matches the viewer is allowed (Cloudflare's semantics). The same list is read from
//! the config (`streams.NAME.access_rules`), the store (a user's stream), a JWT's
//! `accessRules` claim and the edge's own cookies' policy. A stream's rules and a
//! credential's rules are both applied, so a credential can narrow what its stream allows,
//! never widen it.
//!
//! A refusal is reason `country` when the deciding rule names countries, `network` when it
//! names networks; an `any` rule's refusal is `country` when every rule before it names
//! countries (the viewer is not in an allowed country), else `network`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An ISO 3166-1 alpha-2 code, upper case.
pub type Country = [u8; 2];

/// The country of an address the database does not know (or when there is no database).
pub const UNKNOWN: Country = *b"XX";

/// Most rules in one list, and most entries (networks or countries) in one rule: a list
/// travels inside every native token a credential is exchanged for.
pub const MAX_RULES: usize = 16;
pub const MAX_ENTRIES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Block,
}

/// One rule as written (config YAML, admin JSON, a JWT claim, a cookie policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RuleDoc {
    #[serde(rename = "any")]
    Any { action: Action },
    #[serde(rename = "ip.src")]
    Network { ip: Vec<String>, action: Action },
    #[serde(rename = "ip.geoip.country")]
    Country {
        country: Vec<String>,
        action: Action,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    Any,
    Network(Vec<IpNet>),
    Country(Vec<Country>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    matches: Match,
    action: Action,
}

/// A checked list of rules. Empty: every address is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    rules: Vec<Rule>,
}

/// Why the rules refuse a viewer: the denial reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Country,
    Network,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Country => "country",
            Refusal::Network => "network",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Country => "not allowed from this country",
            Refusal::Network => "not allowed from this network",
        }
    }
}

/// `US` from `us` or `US`; `None` unless two ASCII letters.
pub fn country_code(s: &str) -> Option<Country> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

impl AccessRules {
    /// Check written rules: CIDRs or addresses, two-letter countries, the bounds.
    pub fn from_docs(docs: &[RuleDoc]) -> Result<AccessRules, String> {
        if docs.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} access rules"));
        }
        let mut rules = Vec::with_capacity(docs.len());
        for (i, d) in docs.iter().enumerate() {
            let (matches, action) = match d {
                RuleDoc::Any { action } => (Match::Any, *action),
                RuleDoc::Network { ip, action } => {
                    let nets = ip
                        .iter()
                        .map(|s| {
                            let s = s.trim();
                            s.parse::<IpNet>()
                                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                                .map(|n| n.trunc())
                                .map_err(|_| format!("rule {i}: {s:?} is not an address or CIDR"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    (Match::Network(nets), *action)
                }
                RuleDoc::Country { country, action } => {
                    let cs = country
                        .iter()
                        .map(|s| {
                            country_code(s.trim()).ok_or_else(|| {
                                format!("rule {i}: {s:?} is not a two-letter country code")
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    (Match::Country(cs), *action)
                }
            };
            let n = match &matches {
                Match::Any => 1,
                Match::Network(v) => v.len(),
                Match::Country(v) => v.len(),
            };
            if n == 0 || n > MAX_ENTRIES {
                return Err(format!("rule {i}: 1 to {MAX_ENTRIES} entries"));
            }
            rules.push(Rule { matches, action });
        }
        Ok(AccessRules { rules })
    }

    /// Parse a JSON list of rules (the admin API, a JWT claim).
    pub fn from_json(v: &serde_json::Value) -> Result<AccessRules, String> {
        let docs = Vec::<RuleDoc>::deserialize(v).map_err(|e| format!("access rules: {e}"))?;
        AccessRules::from_docs(&docs)
    }

    /// The rules as written (normalised: CIDRs, upper-case countries).
    pub fn to_docs(&self) -> Vec<RuleDoc> {
        self.rules
            .iter()
            .map(|r| match &r.matches {
                Match::Any => RuleDoc::Any { action: r.action },
                Match::Network(n) => RuleDoc::Network {
                    ip: n.iter().map(|n| n.to_string()).collect(),
                    action: r.action,
                },
                Match::Country(c) => RuleDoc::Country {
                    country: c
                        .iter()
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect(),
                    action: r.action,
                },
            })
            .collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.to_docs()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether deciding needs the viewer's country (a rule names countries).
    pub fn needs_country(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.matches, Match::Country(_)))
    }

    /// The first matching rule's verdict for a viewer at `ip`; `country` is asked only when
    /// a country rule is reached.
    pub fn check(&self, ip: IpAddr, country: &mut impl FnMut() -> Country) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        let mut only_countries = false;
        for (i, r) in self.rules.iter().enumerate() {
            let (hit, why) = match &r.matches {
                Match::Any => {
                    let why = if only_countries {
                        Refusal::Country
                    } else {
                        Refusal::Network
                    };
                    (true, why)
                }
                Match::Network(nets) => (nets.iter().any(|n| n.contains(&ip)), Refusal::Network),
                Match::Country(cs) => {
                    let c = country();
                    (cs.contains(&c), Refusal::Country)
                }
            };
            if hit {
                return match r.action {
                    Action::Allow => Ok(()),
                    Action::Block => Err(why),
                };
            }
            only_countries = match r.matches {
                Match::Country(_) => i == 0 || only_countries,
                _ => false,
            };
        }
        Ok(())
    }

    /// The compact form native tokens carry: a byte per rule (kind, action), an entry
    /// count, then the entries (IPv4: 4 bytes + prefix, IPv6: 16 + prefix, a country: 2).
    pub fn encode(&self, out: &mut Vec<u8>) {
        for r in &self.rules {
            let action = u8::from(r.action == Action::Block) << 4;
            match &r.matches {
                Match::Any => out.extend_from_slice(&[action, 0]),
                Match::Network(nets) => {
                    out.extend_from_slice(&[action | 1, nets.len() as u8]);
                    for n in nets {
                        match n {
                            IpNet::V4(n) => {
                                out.push(4);
                                out.extend_from_slice(&n.addr().octets());
                            }
                            IpNet::V6(n) => {
                                out.push(6);
                                out.extend_from_slice(&n.addr().octets());
                            }
                        }
                        out.push(n.prefix_len());
                    }
                }
                Match::Country(cs) => {
                    out.extend_from_slice(&[action | 2, cs.len() as u8]);
                    for c in cs {
                        out.extend_from_slice(c);
                    }
                }
            }
        }
    }

    /// The inverse of [`AccessRules::encode`]; `None` for anything it would not write.
    pub fn decode(mut b: &[u8]) -> Option<AccessRules> {
        let mut rules = Vec::new();
        while let [head, n, rest @ ..] = b {
            let action = match head >> 4 {
                0 => Action::Allow,
                1 => Action::Block,
                _ => return None,
            };
            let n = *n as usize;
            b = rest;
            let matches = match head & 0xf {
                0 if n == 0 => Match::Any,
                1 if (1..=MAX_ENTRIES).contains(&n) => {
                    let mut nets = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (net, rest) = match b {
                            [4, a, b1, c, d, p, rest @ ..] => {
                                (IpNet::new(IpAddr::from([*a, *b1, *c, *d]), *p).ok()?, rest)
                            }
                            [6, rest @ ..] if rest.len() >= 17 => {
                                let (addr, rest) = rest.split_at(16);
                                let a: [u8; 16] = addr.try_into().ok()?;
                                (IpNet::new(IpAddr::from(a), rest[0]).ok()?, &rest[1..])
                            }
                            _ => return None,
                        };
                        nets.push(net);
                        b = rest;
                    }
                    Match::Network(nets)
                }
                2 if (1..=MAX_ENTRIES).contains(&n) => {
                    let (cs, rest) = b.split_at_checked(2 * n)?;
                    b = rest;
                    let cs: Vec<Country> = cs.chunks(2).map(|c| [c[0], c[1]]).collect();
                    if !cs.iter().flatten().all(u8::is_ascii_uppercase) {
                        return None;
                    }
                    Match::Country(cs)
                }
                _ => return None,
            };
            rules.push(Rule { matches, action });
        }
        (b.is_empty() && rules.len() <= MAX_RULES).then_some(AccessRules { rules })
    }
}

/// A stream's `referers`: the pages its players may be embedded in, nginx `valid_referers`
/// style. Each entry is a host pattern (`*.example.com`, `player.example.com`), matched
/// against the `Referer`'s host (port left out), or, when it holds a `/`, a pattern matched
/// against the `Referer` without its scheme (`example.com/embed/*`); `none` lets requests
/// without a `Referer` (or with an empty one) in. `*` is the only wildcard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Referers {
    patterns: Vec<String>,
    none: bool,
}

/// Most `referers` entries.
pub const MAX_REFERERS: usize = 64;

impl Referers {
    /// Check a stream's list; `None` for an empty list (no referrer check).
    pub fn parse(list: &[String]) -> Result<Option<Referers>, String> {
        if list.is_empty() {
            return Ok(None);
        }
        if list.len() > MAX_REFERERS {
            return Err(format!("at most {MAX_REFERERS} referers"));
        }
        let mut r = Referers::default();
        for p in list {
            let p = p.trim();
            if p == "none" {
                r.none = true;
                continue;
            }
            let (host, path) = p.split_at(p.find('/').unwrap_or(p.len()));
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b));
            if !host_ok || p.contains("://") || path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
                return Err(format!(
                    "referer {p:?}: a host pattern (*.example.com; no scheme or port), host/path, or none"
                ));
            }
            r.patterns
                .push(format!("{}{path}", host.to_ascii_lowercase()));
        }
        Ok(Some(r))
    }

    pub fn to_list(&self) -> Vec<String> {
        let mut v = self.patterns.clone();
        if self.none {
            v.push("none".into());
        }
        v
    }

    /// Whether a request with this `Referer` (empty: none sent) may play.
    pub fn allows(&self, referer: &str) -> bool {
        let referer = referer.trim();
        if referer.is_empty() {
            return self.none;
        }
        let Some(rest) = referer
            .strip_prefix("https://")
            .or_else(|| referer.strip_prefix("http://"))
        else {
            return false;
        };
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
        .to_ascii_lowercase();
        let with_path = format!("{host}{path}");
        self.patterns.iter().any(|p| {
            if p.contains('/') {
                crate::token::cloudfront::wildcard_match(p, &with_path)
            } else {
                crate::token::cloudfront::wildcard_match(p, &host)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> AccessRules {
        AccessRules::from_json(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn verdict(r: &AccessRules, ip: &str, country: &str) -> Result<(), Refusal> {
        let c = country_code(country).unwrap();
        r.check(ip.parse().unwrap(), &mut || c)
    }

    const CLOUDFLARE: &str = r#"[{"type":"ip.geoip.country","country":["US","MX"],"action":"block"},
        {"type":"ip.src","ip":["93.184.216.0/24"],"action":"allow"},
        {"type":"any","action":"block"}]"#;

    #[test]
    fn the_first_matching_rule_decides() {
        let r = rules(CLOUDFLARE);
        // Blocked by country even from the allowed network: the country rule comes first.
        assert_eq!(verdict(&r, "93.184.216.34", "US"), Err(Refusal::Country));
        assert_eq!(verdict(&r, "93.184.216.34", "DE"), Ok(()));
        assert_eq!(verdict(&r, "::ffff:93.184.216.34", "DE"), Ok(()));
        assert_eq!(verdict(&r, "10.0.0.1", "DE"), Err(Refusal::Network));
        // No rule matches: allowed.
        let r = rules(r#"[{"type":"ip.src","ip":["10.0.0.0/8"],"action":"block"}]"#);
        assert_eq!(verdict(&r, "11.0.0.1", "US"), Ok(()));
        assert_eq!(verdict(&r, "10.9.0.1", "US"), Err(Refusal::Network));
        assert_eq!(verdict(&AccessRules::default(), "10.0.0.1", "US"), Ok(()));
        // An allow list of countries: the `any` refusal says country.
        let r = rules(
            r#"[{"type":"ip.geoip.country","country":["de","at"],"action":"allow"},
                {"type":"any","action":"block"}]"#,
        );
        assert_eq!(verdict(&r, "1.2.3.4", "AT"), Ok(()));
        assert_eq!(verdict(&r, "1.2.3.4", "XX"), Err(Refusal::Country));
    }

    #[test]
    fn the_country_is_looked_up_only_when_a_country_rule_is_reached() {
        let r = rules(CLOUDFLARE);
        let mut asked = 0;
        let ok = r.check("10.0.0.1".parse().unwrap(), &mut || {
            asked += 1;
            *b"DE"
        });
        assert_eq!((ok, asked), (Err(Refusal::Network), 1));
        let r = rules(
            r#"[{"type":"ip.src","ip":["10.0.0.1"],"action":"allow"},{"type":"ip.geoip.country","country":["US"],"action":"block"}]"#,
        );
        let mut asked = 0;
        let ok = r.check("10.0.0.1".parse().unwrap(), &mut || {
            asked += 1;
            *b"US"
        });
        assert_eq!((ok, asked), (Ok(()), 0));
        assert!(r.needs_country());
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            r#"[{"type":"ip.src","ip":["10.0.0.0/33"],"action":"allow"}]"#,
            r#"[{"type":"ip.src","ip":[],"action":"allow"}]"#,
            r#"[{"type":"ip.geoip.country","country":["USA"],"action":"block"}]"#,
            r#"[{"type":"ip.geoip.country","country":["U1"],"action":"block"}]"#,
            r#"[{"type":"any","action":"deny"}]"#,
            r#"[{"type":"asn","action":"block"}]"#,
            r#"[{"type":"any","action":"block","ip":["1.2.3.4"]}]"#,
            r#"{"type":"any","action":"block"}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert!(AccessRules::from_json(&v).is_err(), "{bad}");
        }
        let many = format!(
            "[{}]",
            vec![r#"{"type":"any","action":"allow"}"#; 17].join(",")
        );
        assert!(AccessRules::from_json(&serde_json::from_str(&many).unwrap()).is_err());
    }

    #[test]
    fn rules_round_trip_through_tokens_and_json() {
        let r = rules(
            r#"[{"type":"ip.geoip.country","country":["US","MX"],"action":"block"},
                {"type":"ip.src","ip":["93.184.216.7/24","2001:db8::/32","::1"],"action":"allow"},
                {"type":"any","action":"block"}]"#,
        );
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(AccessRules::decode(&b), Some(r.clone()));
        assert_eq!(AccessRules::from_json(&r.to_json()), Ok(r.clone()));
        assert_eq!(
            r.to_docs()[1],
            RuleDoc::Network {
                ip: vec![
                    "93.184.216.0/24".into(),
                    "2001:db8::/32".into(),
                    "::1/128".into()
                ],
                action: Action::Allow,
            }
        );
        // Truncated or altered bytes are refused, never misread.
        for cut in 1..b.len() {
            if let Some(d) = AccessRules::decode(&b[..cut]) {
                assert_ne!(d, r);
            }
        }
        let mut bad = b.clone();
        bad[0] = 0x23;
        assert_eq!(AccessRules::decode(&bad), None);
        assert_eq!(AccessRules::decode(&[0x02, 1, b'u', b's']), None);
    }

    #[test]
    fn referers_match_hosts_paths_and_none() {
        let list = |v: &[&str]| {
            Referers::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .unwrap()
        };
        let r = list(&["*.example.com", "player.test", "site.org/embed/*"]);
        assert!(r.allows("https://www.example.com/watch?v=1"));
        assert!(r.allows("http://a.b.EXAMPLE.com:8443/"));
        assert!(r.allows("https://player.test"));
        assert!(r.allows("https://site.org/embed/9"));
        assert!(!r.allows("https://site.org/other"));
        assert!(!r.allows("https://example.com.evil.test/"));
        assert!(!r.allows("https://evil.test/?x=www.example.com"));
        assert!(!r.allows("https://www.example.com@evil.test/"));
        assert!(!r.allows("android-app://x"));
        assert!(!r.allows(""));
        assert!(list(&["none"]).allows(""));
        assert!(!list(&["none"]).allows("https://a.test/"));
        assert_eq!(Referers::parse(&[]), Ok(None));
        for bad in ["https://a.test", "a b", "", "a.test/\u{7f}", "a.test:8443"] {
            assert!(Referers::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
