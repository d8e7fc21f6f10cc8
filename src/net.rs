//! Addresses: which are internal (never an origin unless the operator allows them), and the
//! client's IP address as an edge or the admin sees it.
//!
//! The client IP is the TCP peer, or — only when the peer is a configured trusted
//! proxy — the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// Whether `ip` (IPv4-mapped IPv6 taken as IPv4) is in one of `nets`.
pub fn in_nets(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// Whether `host` is a valid request authority (RFC 3986 `host [":" port]`, as a `Host`
/// header or HTTP/2 `:authority` carries it): not empty, at most 255 bytes, and none of
/// `/ ? # @ \\`, spaces or control bytes. A policy is matched against it, so a `Host` such
/// as `edge/hls/1/x` must never reach the matching (SPEC "Grants").
pub fn valid_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\'))
}

/// `peer` is the TCP peer; `xff` every `X-Forwarded-For` header value in order.
pub fn client_ip<'a>(
    peer: IpAddr,
    xff: impl Iterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| in_nets(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&'a [u8]> = xff.flat_map(|v| v.split(|&b| b == b',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = std::str::from_utf8(hop)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
        else {
            break; // garbage: stop at the last address we could trust
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// What per-client budgets count `ip` as: the address for IPv4 (and IPv4 written as IPv6),
/// its /64 for IPv6 (one subscriber usually holds a whole /64, so a per-address budget
/// would be no budget).
pub fn subscriber(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// Loopback, private, link-local (cloud metadata lives at 169.254.169.254), CGNAT,
/// unspecified, multicast, broadcast, documentation/benchmark ranges, and IPv6's
/// equivalents: addresses an edge must not be turned against. IPv6 forms that carry an
/// IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`, Teredo `2001::/32`) are judged by that address; the local-use NAT64
/// prefix `64:ff9b:1::/48` is internal whatever it carries.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let bits = u128::from(v6);
            let low32 = Ipv4Addr::from(bits as u32);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || seg[0] == 0x2001 && seg[1] == 0x0db8 // documentation
                || seg[0] == 0x0064 && seg[1] == 0xff9b && seg[2] == 0x0001 // local NAT64 /48
                || seg[..6] == [0; 6] && is_internal_v4(low32) // IPv4-compatible ::a.b.c.d
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_internal_v4(low32) // NAT64
                || seg[0] == 0x2002 // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
                    && is_internal_v4(Ipv4Addr::from((bits >> 80) as u32))
                || seg[0] == 0x2001 && seg[1] == 0 // Teredo: the client is the last 32 bits, inverted
                    && (is_internal_v4(Ipv4Addr::from(!(bits as u32)))
                        || is_internal_v4(Ipv4Addr::from((bits >> 64) as u32)))
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF 192.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = [b"1.2.3.4".as_slice()];
        assert_eq!(
            client_ip(ip("5.6.7.8"), xff.into_iter(), &trusted),
            ip("5.6.7.8")
        );
        assert_eq!(
            client_ip(ip("5.6.7.8"), xff.into_iter(), &[]),
            ip("5.6.7.8")
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = [b"6.6.6.6, 1.2.3.4".as_slice(), b"10.0.0.2".as_slice()];
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff.into_iter(), &trusted),
            ip("1.2.3.4")
        );
        let bad = [b"1.2.3.4, garbage".as_slice()];
        assert_eq!(
            client_ip(ip("10.0.0.1"), bad.into_iter(), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), std::iter::empty(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::",
            "::127.0.0.1",
            "::10.0.0.1",
            "::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo for client 127.0.0.1
            "2001:0:7f00:1::1",                     // Teredo via server 127.0.0.1
            "64:ff9b:1::808:808",                   // local-use NAT64, whatever it carries
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "64:ff9b::808:808",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
