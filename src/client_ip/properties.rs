//! Property tests of the walk over `X-Forwarded-For` with arbitrary bytes:
//! every byte a header value may hold (tab, visible ASCII, 0x80..=0xff), not
//! only printable text. What the client writes left of the address a trusted
//! proxy appended never changes who the client is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::{canonical, parse_hop, ClientIpResolver};

/// The peer every proxied request comes from.
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn resolver() -> ClientIpResolver {
    let trusted = ["127.0.0.0/8", "10.0.0.0/8", "2001:db8:ffff::/48"];
    ClientIpResolver::new(trusted.iter().map(|n| n.parse().unwrap()).collect(), 64)
}

/// Any byte a header value may carry, commas and near-address text often.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'\t'),
        Just(b','),
        Just(b' '),
        prop::sample::select(b"0123456789abcdef.:[]".to_vec()),
        0x20u8..=0x7e,
        0x80u8..=0xff,
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(byte(), 0..max)
}

fn trusted_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([127, a, b, c])),
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
        any::<u64>().prop_map(|low| IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_ffffu128 << 80) | u128::from(low)
        ))),
        // IPv4-mapped: the same trusted network.
        any::<[u8; 3]>()
            .prop_map(|[a, b, c]| IpAddr::V6(Ipv4Addr::new(10, a, b, c).to_ipv6_mapped())),
    ]
}

fn untrusted_ip() -> impl Strategy<Value = IpAddr> {
    any::<IpAddr>().prop_filter("not a trusted proxy", |ip| !resolver().is_trusted(*ip))
}

/// An address as a proxy writes it: bare, with a port, or `[v6]`.
fn written(ip: IpAddr, style: u8) -> Vec<u8> {
    match (style % 3, ip) {
        (1, _) => SocketAddr::new(ip, 8000 + u16::from(style)).to_string(),
        (2, IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    }
    .into_bytes()
}

/// One element, without commas: an address (trusted or not) or anything else.
fn element() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (trusted_ip(), any::<u8>()).prop_map(|(ip, s)| written(ip, s)),
        (untrusted_ip(), any::<u8>()).prop_map(|(ip, s)| written(ip, s)),
        bytes(24).prop_map(|b| b.into_iter().filter(|&c| c != b',').collect()),
    ]
}

/// One header line: arbitrary bytes, or elements joined by `,` and white space.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(48),
        prop::collection::vec(element(), 0..5).prop_map(|es| es.join(&b", "[..])),
        prop::collection::vec(element(), 0..5).prop_map(|es| es.join(&b" ,\t"[..])),
    ]
}

/// An element that trims to something that is no address.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    bytes(24).prop_filter("an element that is not an address", |b| {
        let e = b.trim_ascii();
        !e.is_empty() && !e.contains(&b',') && parse_hop(e).is_none()
    })
}

/// `text` at the end of the last line (nginx's `$proxy_add_x_forwarded_for`)
/// or as a line of its own (HAProxy's `option forwardfor`).
fn append(xff: &mut Vec<Vec<u8>>, text: Vec<u8>, same_line: bool) {
    match xff.last_mut() {
        Some(last) if same_line => {
            last.extend_from_slice(b", ");
            last.extend_from_slice(&text);
        }
        _ => xff.push(text),
    }
}

fn headers(xff: &[Vec<u8>], real_ip: Option<&[u8]>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in xff {
        h.append("x-forwarded-for", HeaderValue::from_bytes(line).unwrap());
    }
    if let Some(r) = real_ip {
        h.append("x-real-ip", HeaderValue::from_bytes(r).unwrap());
    }
    h
}

/// The walk said another way: the answer is decided by the rightmost
/// element that is not a trusted proxy's address.
fn model(resolver: &ClientIpResolver, peer: IpAddr, xff: &[Vec<u8>]) -> IpAddr {
    let joined = xff.join(&b","[..]);
    let elements: Vec<&[u8]> = joined
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
        .collect();
    let parsed: Vec<Option<IpAddr>> = elements.iter().map(|e| parse_hop(e)).collect();
    let untrusted = parsed
        .iter()
        .rposition(|p| !p.is_some_and(|ip| resolver.is_trusted(ip)));
    match untrusted {
        Some(i) => match parsed[i] {
            Some(client) => client,
            None => parsed.get(i + 1).copied().flatten().unwrap_or(peer),
        },
        None => parsed.first().copied().flatten().unwrap_or(peer),
    }
}

proptest! {
    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_headers_hold(
        peer in untrusted_ip(),
        xff in prop::collection::vec(line(), 0..4),
        real_ip in prop::option::of(bytes(40)),
    ) {
        let got = resolver().resolve(peer, &headers(&xff, real_ip.as_deref()));
        prop_assert_eq!(got, canonical(peer));
    }

    #[test]
    fn the_walk_matches_its_model_for_any_bytes(xff in prop::collection::vec(line(), 1..4)) {
        let r = resolver();
        prop_assert_eq!(r.resolve(PROXY, &headers(&xff, None)), model(&r, PROXY, &xff));
    }

    #[test]
    fn what_the_client_writes_left_of_the_appended_address_never_moves_it(
        own in prop::collection::vec(bytes(48), 0..3),
        client in untrusted_ip(),
        style in any::<u8>(),
        same_line in any::<bool>(),
        inner in prop::collection::vec((trusted_ip(), any::<u8>(), any::<bool>()), 0..3),
        real_ip in prop::option::of(bytes(40)),
    ) {
        // The client's own lines, then our proxy's address for it (appended
        // to the client's last line, as nginx does, or a line of its own, as
        // HAProxy does), then trusted inner proxies' addresses.
        let mut xff = own;
        append(&mut xff, written(client, style), same_line);
        for (hop, style, same_line) in inner {
            append(&mut xff, written(hop, style), same_line);
        }
        let got = resolver().resolve(PROXY, &headers(&xff, real_ip.as_deref()));
        prop_assert_eq!(got, canonical(client), "{:?}", xff);
    }

    #[test]
    fn an_unparseable_element_stops_the_walk_at_the_address_to_its_right(
        left in prop::collection::vec(line(), 0..3),
        bad in garbage(),
        inner in prop::collection::vec((trusted_ip(), any::<u8>()), 0..3),
    ) {
        let mut xff = left;
        xff.push(bad);
        xff.extend(inner.iter().map(|&(ip, style)| written(ip, style)));
        let want = inner.first().map_or(PROXY, |&(ip, _)| canonical(ip));
        prop_assert_eq!(resolver().resolve(PROXY, &headers(&xff, None)), want, "{:?}", xff);
    }

    #[test]
    fn x_real_ip_counts_only_when_no_x_forwarded_for_line_is_present(
        xff in prop::collection::vec(line(), 1..4),
        real_ip in untrusted_ip(),
    ) {
        let r = resolver();
        let with = headers(&xff, Some(real_ip.to_string().as_bytes()));
        prop_assert_eq!(r.resolve(PROXY, &with), r.resolve(PROXY, &headers(&xff, None)));
        let alone = headers(&[], Some(real_ip.to_string().as_bytes()));
        prop_assert_eq!(r.resolve(PROXY, &alone), canonical(real_ip));
    }

    #[test]
    fn several_lines_are_the_one_list_they_join_into(xff in prop::collection::vec(line(), 1..4)) {
        let r = resolver();
        let joined = vec![xff.join(&b","[..])];
        prop_assert_eq!(r.resolve(PROXY, &headers(&xff, None)), r.resolve(PROXY, &headers(&joined, None)));
    }
}
