//! Who the client is. The peer address, unless the peer is a configured
//! trusted proxy: only then are `X-Forwarded-For` / `X-Real-IP` believed.
//!
//! The walk, from a trusted peer. Every `X-Forwarded-For` line, in order, is
//! one list; each line is read as bytes and split at `,`, each element
//! trimmed of spaces and tabs, empty elements skipped. From the right (the
//! hop nearest to us):
//! - a trusted proxy's address: remembered as the last verified address, and
//!   the walk goes on;
//! - any other address: the client;
//! - anything else (a byte that is not ASCII, `unknown`, a bad port, ...):
//!   the walk stops, and the client is the last verified address, i.e. the
//!   one a trusted proxy appended to its right, or the peer itself.
//!
//! Ending on a trusted proxy, the leftmost one is the client. `X-Real-IP` is
//! read only when no `X-Forwarded-For` line is present at all: a proxy that
//! appends to the client's own line must not let what the client wrote
//! there choose between two headers. `Forwarded` (RFC 7239) is not read.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

// Parsed once: a name given as `&str` is validated on every lookup.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
use ipnet::{IpNet, Ipv6Net};

#[cfg(test)]
mod properties;

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

    /// `client_ip.ipv6_prefix` now.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix.load(Ordering::Relaxed)
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

    /// The client address for a request that arrived from `peer` (the
    /// walk in the module comment). Every surface calls this one function:
    /// `/check`, `/check/nginx`, `/check/<path>` and ext_authz (whose peer is
    /// `source.address`).
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        if headers.contains_key(&X_FORWARDED_FOR) {
            return self.walk(peer, headers.get_all(&X_FORWARDED_FOR).iter());
        }
        // Not a list: one address, or the peer. Of several lines the last,
        // as a proxy that adds rather than replaces puts its own last.
        headers
            .get_all(&X_REAL_IP)
            .iter()
            .next_back()
            .and_then(|v| parse_hop(v.as_bytes().trim_ascii()))
            .unwrap_or(peer)
    }

    /// `X-Forwarded-For` from the right, without allocating: the lines
    /// last to first, each line's elements last to first.
    fn walk<'a>(
        &self,
        peer: IpAddr,
        lines: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    ) -> IpAddr {
        let elements = lines
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|e| !e.is_empty());
        let mut last_verified = peer;
        for element in elements {
            match parse_hop(element) {
                Some(ip) if self.is_trusted(ip) => last_verified = ip,
                Some(ip) => return ip,
                // Left of here is whatever the client wrote.
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

/// An XFF element: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:443`. Not ASCII is not an address.
fn parse_hop(element: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(element).ok()?;
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match text.parse::<std::net::SocketAddr>() {
            Ok(sock) => sock.ip(),
            Err(_) => IpAddr::V6(text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?),
        },
    };
    Some(canonical(ip))
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

    /// Header lines given as bytes (any a header value may hold: tab, visible ASCII, 0x80..=0xff).
    fn raw(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const PROXY: &str = "127.0.0.1";

    #[test]
    fn a_byte_the_client_wrote_left_of_the_appended_address_moves_nothing() {
        // The case: nginx's `$proxy_add_x_forwarded_for` appended the
        // real 203.0.113.9 to the client's own line, which held a 0xff.
        for line in [
            &b"\xff, 203.0.113.9"[..],
            b"\xc3\xa9, 203.0.113.9",
            b"\xff\xfe,203.0.113.9 ,",
        ] {
            let h = raw(&[("x-forwarded-for", line), ("x-real-ip", b"198.51.100.7")]);
            assert_eq!(
                resolver().resolve(ip(PROXY), &h),
                ip("203.0.113.9"),
                "{line:?}"
            );
            let h = raw(&[("x-forwarded-for", line)]);
            assert_eq!(
                resolver().resolve(ip(PROXY), &h),
                ip("203.0.113.9"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn an_unparseable_element_stops_at_the_address_a_trusted_proxy_appended() {
        let walk = |line: &[u8]| resolver().resolve(ip(PROXY), &raw(&[("x-forwarded-for", line)]));
        assert_eq!(walk(b"203.0.113.7, 6.6.\xff6.6, 10.0.0.5"), ip("10.0.0.5"));
        assert_eq!(
            walk(b"203.0.113.7, unknown"),
            ip(PROXY),
            "nothing verified: the peer"
        );
        assert_eq!(walk(b"203.0.113.7, 1.2.3.4:99999"), ip(PROXY), "a bad port");
        assert_eq!(walk(b"203.0.113.7, \xff"), ip(PROXY));
    }

    #[test]
    fn x_real_ip_is_read_only_when_no_x_forwarded_for_line_is_present() {
        let r = resolver();
        let h = headers(&[("x-real-ip", "::ffff:198.51.100.4")]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip("198.51.100.4"));
        for xff in [&b""[..], b" , ", b"garbage", b"\xff", b"10.0.0.5"] {
            let h = raw(&[("x-forwarded-for", xff), ("x-real-ip", b"198.51.100.4")]);
            let want = if xff == b"10.0.0.5" {
                "10.0.0.5"
            } else {
                PROXY
            };
            assert_eq!(r.resolve(ip(PROXY), &h), ip(want), "{xff:?}");
        }
        // Not a list: of several lines the last (a proxy that adds puts its
        // own last), and one that does not parse is the peer.
        let h = headers(&[("x-real-ip", "6.6.6.6"), ("x-real-ip", "198.51.100.5")]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip("198.51.100.5"));
        let h = headers(&[("x-real-ip", "6.6.6.6, 198.51.100.5")]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip(PROXY));
    }

    #[test]
    fn several_lines_are_one_list_walked_across_lines() {
        let r = resolver();
        let h = raw(&[
            ("x-forwarded-for", b"6.6.6.6, \xff"),
            ("x-forwarded-for", b"203.0.113.7"),
            ("x-forwarded-for", b"10.0.0.3"),
        ]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip("203.0.113.7"));
        let h = raw(&[
            ("x-forwarded-for", b"203.0.113.7"),
            ("x-forwarded-for", b"10.0.0.3, \xff"),
        ]);
        assert_eq!(
            r.resolve(ip(PROXY), &h),
            ip(PROXY),
            "the rightmost is garbage"
        );
        let h = raw(&[
            ("x-forwarded-for", b"203.0.113.7,"),
            ("x-forwarded-for", b"\t10.0.0.3\t"),
        ]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_is_not_read_and_a_bracketed_ipv6_is_an_address() {
        let r = resolver();
        let h = headers(&[("forwarded", "for=203.0.113.7")]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip(PROXY));
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]")]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip("2001:db8::7"));
        // RFC 7239's quoted form is not an X-Forwarded-For element.
        let h = headers(&[("x-forwarded-for", "\"[2001:db8::7]:443\"")]);
        assert_eq!(r.resolve(ip(PROXY), &h), ip(PROXY));
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
