//! Canonical allowlist CIDRs: one spelling per network, so a CIDR is a stable
//! key in Redis, in events and in every node's table. The parser is
//! `crate::net`'s (shared with `client_ip.trusted_proxies`); this module adds
//! the allowlist's policy (prefix floors, no `/0`).
//!
//! - A bare address is a host network: `203.0.113.7` is `203.0.113.7/32`.
//! - IPv4-mapped IPv6 is IPv4: `::ffff:203.0.113.0/120` is `203.0.113.0/24`
//!   (client addresses are canonical the same way, see `client_ip::canonical`).
//! - Host bits must be clear; the error names the canonical network.
//! - IPv6 is written the way `Ipv6Addr` prints it (lower case, compressed).

use ipnet::IpNet;

/// The shortest prefixes an entry may have (`allowlist.min_prefix_v4/_v6`).
#[derive(Clone, Copy, Debug)]
pub struct PrefixFloor {
    pub v4: u8,
    pub v6: u8,
}

/// Parse a network as stored: canonical, host bits clear (`net::parse_net`,
/// the one parser `client_ip.trusted_proxies` uses too). No policy: this is
/// what removing an entry accepts, so an entry stays removable when the
/// floors change.
pub use crate::net::{host, parse_ip, parse_net, NetError};

/// A network refused as a new entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{0} would allow every address; /0 is refused")]
    Everything(IpNet),
    #[error("{net} is wider than /{min} ({setting}); use a longer prefix")]
    TooWide {
        net: IpNet,
        min: u8,
        setting: &'static str,
    },
}

/// Parse a network for a new entry: canonical, and not wider than the floors allow.
pub fn parse_entry(text: &str, floor: PrefixFloor) -> Result<IpNet, EntryError> {
    let net = parse_net(text)?;
    if net.prefix_len() == 0 {
        return Err(EntryError::Everything(net));
    }
    let (min, setting) = match net {
        IpNet::V4(_) => (floor.v4, "allowlist.min_prefix_v4"),
        IpNet::V6(_) => (floor.v6, "allowlist.min_prefix_v6"),
    };
    if net.prefix_len() < min {
        return Err(EntryError::TooWide { net, min, setting });
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    const FLOOR: PrefixFloor = PrefixFloor { v4: 8, v6: 32 };

    fn ok(text: &str) -> String {
        parse_entry(text, FLOOR).unwrap().to_string()
    }

    fn err(text: &str) -> String {
        parse_entry(text, FLOOR).unwrap_err().to_string()
    }

    #[test]
    fn addresses_and_networks_have_one_canonical_spelling() {
        assert_eq!(ok("203.0.113.7"), "203.0.113.7/32");
        assert_eq!(ok(" 203.0.113.0/24 "), "203.0.113.0/24");
        assert_eq!(ok("2001:DB8:0:0::/48"), "2001:db8::/48");
        assert_eq!(ok("2001:db8::1"), "2001:db8::1/128");
        assert_eq!(ok("::ffff:203.0.113.7"), "203.0.113.7/32");
        assert_eq!(ok("::ffff:203.0.113.0/120"), "203.0.113.0/24");
    }

    #[test]
    fn host_bits_are_refused_naming_the_canonical_form() {
        assert!(
            err("203.0.113.7/24").contains("the canonical form is 203.0.113.0/24"),
            "{}",
            err("203.0.113.7/24")
        );
        assert!(err("2001:db8::1/64").contains("2001:db8::/64"));
        assert!(err("::ffff:203.0.113.7/120").contains("203.0.113.0/24"));
    }

    #[test]
    fn zero_and_too_short_prefixes_and_garbage_are_refused() {
        assert!(err("0.0.0.0/0").contains("/0 is refused"));
        assert!(err("::/0").contains("/0 is refused"));
        assert!(err("10.0.0.0/7").contains("min_prefix_v4"));
        assert!(err("2001:db8::/31").contains("min_prefix_v6"));
        assert!(err("nope").contains("not an IP address or CIDR"));
        assert!(err("1.2.3.4/33").contains("not an IP"));
        assert!(err("").contains("not an IP"));
        assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
        // Removal takes any canonical network, whatever the floors are now.
        assert_eq!(parse_net("10.0.0.0/7").unwrap().to_string(), "10.0.0.0/7");
    }

    #[test]
    fn lookups_take_canonical_addresses_only() {
        assert_eq!(parse_ip("::ffff:1.2.3.4").unwrap(), v4(1, 2, 3, 4));
        assert!(parse_ip("1.2.3.0/24").is_err());
    }
}
