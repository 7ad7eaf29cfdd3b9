//! Canonical addresses and networks: one parser, one spelling per network,
//! shared by `client_ip` (the trusted proxies) and the allowlist, so both
//! read `::ffff:127.0.0.1/128` as `127.0.0.1/32`.
//!
//! - A bare address is a host network: `203.0.113.7` is `203.0.113.7/32`.
//! - IPv4-mapped IPv6 is IPv4: `::ffff:203.0.113.0/120` is `203.0.113.0/24`.
//! - Host bits must be clear; the error names the canonical network.
//! - IPv6 is written the way `Ipv6Addr` prints it (lower case, compressed).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// `::ffff:1.2.3.4` is `1.2.3.4`: one client, one key, one allowlist match.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Text that is not an address or network as this module reads them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("{0:?} is not an IP address or CIDR")]
    NotANetwork(String),
    #[error("{given:?} has host bits set; the canonical form is {canonical}")]
    HostBits { given: String, canonical: IpNet },
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
}

/// Parse a network: canonical, host bits clear. No policy (floors and the
/// like belong to the caller).
pub fn parse_net(text: &str) -> Result<IpNet, NetError> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(canonical(ip)));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| NetError::NotANetwork(text.to_string()))?;
    let net = unmap(net);
    if net.trunc() != net {
        return Err(NetError::HostBits {
            given: text.to_string(),
            canonical: net.trunc(),
        });
    }
    Ok(net)
}

/// Parse one address, canonical.
pub fn parse_ip(text: &str) -> Result<IpAddr, NetError> {
    text.trim()
        .parse::<IpAddr>()
        .map(canonical)
        .map_err(|_| NetError::NotAnAddress(text.trim().to_string()))
}

/// `::ffff:a.b.c.d/96+n` is `a.b.c.d/n`.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).expect("0..=32")),
            None => net,
        },
        _ => net,
    }
}

/// The host network of an address (`/32` or `/128`).
pub fn host(ip: IpAddr) -> IpNet {
    IpNet::from(canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_networks_are_ipv4_and_host_bits_are_refused() {
        assert_eq!(
            parse_net("::ffff:127.0.0.1/128").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_net("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_net("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        assert!(parse_net("10.0.0.1/8")
            .unwrap_err()
            .to_string()
            .contains("10.0.0.0/8"));
        assert!(parse_net("nope").is_err());
    }
}
