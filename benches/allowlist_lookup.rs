//! Allowlist lookup cost with 100 000 and with 1 000 000 entries: mixed /32 and shorter IPv4
//! prefixes and IPv6 /128 and /64, hits and misses in both families.
//! Run: `cargo bench --bench allowlist_lookup`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tollgate::allowlist::table::{Clock, Table};

/// List sizes measured.
const SIZES: [u32; 2] = [100_000, 1_000_000];

/// A deterministic spread of addresses (no rand: runs compare like for like).
fn v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0b00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 4))
}

fn v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1)
}

fn table(entries: u32) -> Table {
    let mut t = Table::new("bench".into(), 1, Clock::system());
    let far = u64::MAX / 2; // never expires during the run
    for i in 0..entries {
        let net = match i % 20 {
            // 80 % IPv4 /32 (login IPs), 10 % /24, 5 % /16, 5 % IPv6.
            0..=15 => IpNet::V4(Ipv4Net::new(v4(i), 32).unwrap()),
            16 | 17 => IpNet::V4(Ipv4Net::new(v4(i), 24).unwrap().trunc()),
            18 => IpNet::V4(Ipv4Net::new(v4(i), 16).unwrap().trunc()),
            _ => {
                let len = if i % 40 == 19 { 128 } else { 64 };
                IpNet::V6(Ipv6Net::new(v6(i), len).unwrap().trunc())
            }
        };
        t.insert(net, far);
    }
    t
}

fn lookups(c: &mut Criterion) {
    for entries in SIZES {
        lookups_in(c, entries);
    }
}

fn lookups_in(c: &mut Criterion, entries: u32) {
    let t = table(entries);
    assert!(t.len() > entries as usize * 9 / 10, "{} entries", t.len());
    let hits_v4: Vec<IpAddr> = (0..1024)
        .map(|i| IpAddr::V4(v4(i * 20 % entries)))
        .collect();
    let misses_v4: Vec<IpAddr> = (0..1024)
        .map(|i| IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8)))
        .collect();
    let hits_v6: Vec<IpAddr> = (0..1024).map(|i| IpAddr::V6(v6(19 + 20 * i))).collect();
    let misses_v6: Vec<IpAddr> = (0..1024)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb9, i, 0, 0, 0, 0, 1)))
        .collect();
    let mut g = c.benchmark_group(format!("allowlist lookup, {}k entries", entries / 1000));
    for (name, ips) in [
        ("hit v4", &hits_v4),
        ("miss v4", &misses_v4),
        ("hit v6", &hits_v6),
        ("miss v6", &misses_v6),
    ] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(t.lookup(black_box(ips[i])))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
