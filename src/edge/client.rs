//! The viewer's IP address: the TCP peer, or — only when the peer is a configured trusted
//! proxy — the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.

use ipnet::IpNet;
use std::net::IpAddr;

/// Whether `ip` (IPv4-mapped IPv6 taken as IPv4) is in one of `nets`.
pub fn in_nets(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
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
}
