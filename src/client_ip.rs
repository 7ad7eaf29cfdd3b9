//! Who the client is. The peer address, unless the peer is a configured
//! trusted proxy: only then are `X-Forwarded-For` / `X-Real-IP` believed.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, Ordering};

use axum::http::{HeaderMap, HeaderName};

// Parsed once: a name given as `&str` is validated on every lookup.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
use ipnet::{IpNet, Ipv6Net};

#[derive(Debug)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    /// `client_ip.ipv6_prefix`; a reload may change it (`set_ipv6_prefix`).
    ipv6_prefix: AtomicU8,
}

pub use crate::net::canonical;

impl ClientIpResolver {
    pub fn new(trusted: Vec<IpNet>, ipv6_prefix: u8) -> Self {
        ClientIpResolver {
            trusted,
            ipv6_prefix: AtomicU8::new(ipv6_prefix),
        }
    }

    /// A reload's new `client_ip.ipv6_prefix`: keys of new requests use it.
    pub fn set_ipv6_prefix(&self, prefix: u8) {
        self.ipv6_prefix.store(prefix, Ordering::Relaxed);
    }

    /// Whether `ip` is in `client_ip.trusted_proxies` (mapped IPv4 is IPv4).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request that arrived from `peer`.
    ///
    /// `X-Forwarded-For` is walked from the right (the hop nearest to us):
    /// trusted proxies are skipped and the first other address is the client.
    /// A malformed entry stops the walk at the last address we could verify,
    /// because anything left of it was written by someone we do not trust.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut hops = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        if hops.is_empty() {
            if let Some(real) = headers.get(&X_REAL_IP).and_then(|v| v.to_str().ok()) {
                if let Some(ip) = parse_hop(real.trim()) {
                    return ip;
                }
            }
            return peer;
        }
        let mut last_verified = peer;
        while let Some(hop) = hops.pop() {
            match parse_hop(hop) {
                Some(ip) if self.is_trusted(ip) => last_verified = ip,
                Some(ip) => return ip,
                None => return last_verified,
            }
        }
        // Every hop was a trusted proxy: the leftmost is as far as we can see.
        last_verified
    }

    /// The address a rule's `ip` key part uses: IPv6 clients are keyed by their
    /// network (default /64), since one host usually holds a whole /64.
    pub fn key_ip(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(v6, self.ipv6_prefix.load(Ordering::Relaxed))),
            v4 => v4,
        }
    }
}

fn mask_v6(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    Ipv6Net::new(ip, prefix.min(128))
        .map(|n| n.trunc().addr())
        .unwrap_or(ip)
}

/// An XFF entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = text.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> ClientIpResolver {
        ClientIpResolver::new(
            vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            64,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn xff_from_untrusted_peer_is_ignored() {
        let ip = resolver().resolve(
            "192.0.2.9".parse().unwrap(),
            &headers(&[("x-forwarded-for", "203.0.113.7")]),
        );
        assert_eq!(ip, "192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn xff_walks_right_to_left_past_trusted_hops() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")]);
        let ip = resolver().resolve("127.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn several_xff_headers_are_one_list_and_ports_are_dropped() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "[2001:db8::1]:443"),
        ]);
        let ip = resolver().resolve("127.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7, nonsense, 10.0.0.5")]);
        let ip = resolver().resolve("127.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn x_real_ip_when_no_xff() {
        let h = headers(&[("x-real-ip", "::ffff:198.51.100.4")]);
        let ip = resolver().resolve("127.0.0.1".parse().unwrap(), &h);
        assert_eq!(ip, "198.51.100.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_peer_is_canonical_and_v6_is_keyed_by_64() {
        let r = resolver();
        let ip = r.resolve(
            "::ffff:127.0.0.1".parse().unwrap(),
            &headers(&[("x-forwarded-for", "203.0.113.7")]),
        );
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        let key = r.key_ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap());
        assert_eq!(key, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
