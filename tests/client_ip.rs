//! Who the client is, seen through HTTP: each test uses a 1/m rule keyed by IP,
//! so "same counter" shows as a 429 on the second request.

use crate::support::{shared_redis, unique_prefix, TestServer};

fn config(trusted: &str) -> String {
    format!(
        r#"
[client_ip]
trusted_proxies = [{trusted}]
ipv6_prefix = 64

[[rule]]
name = "one"
key = "ip"
limits = ["1/m"]
"#
    )
}

async fn status(s: &TestServer, xff: &str) -> u16 {
    s.check_with("x-forwarded-for", xff).await
}

async fn start(trusted: &str) -> TestServer {
    TestServer::start(
        &config(trusted),
        Some(&shared_redis().url()),
        &unique_prefix("ip"),
    )
    .await
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address_with_x_forwarded_for() {
    let s = start(r#""10.0.0.0/8""#).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    // A different spoofed address changes nothing: the peer (127.0.0.1) is the client.
    assert_eq!(status(&s, "203.0.113.2").await, 429);
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_the_rightmost_untrusted_hop_wins() {
    let s = start(r#""127.0.0.1/32", "10.0.0.0/8""#).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(
        status(&s, "203.0.113.2").await,
        200,
        "another client has its own counter"
    );
    // The client wrote 6.6.6.6 itself; our proxy appended the real 203.0.113.1
    // and a trusted inner proxy appended 10.1.1.1.
    assert_eq!(status(&s, "6.6.6.6, 203.0.113.1, 10.1.1.1").await, 429);
    assert_eq!(status(&s, "6.6.6.7, 203.0.113.1").await, 429);
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_the_ipv4_client() {
    let s = start(r#""127.0.0.1/32""#).await;
    assert_eq!(status(&s, "198.51.100.20").await, 200);
    assert_eq!(status(&s, "::ffff:198.51.100.20").await, 429);
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let s = start(r#""127.0.0.1/32""#).await;
    assert_eq!(status(&s, "2001:db8:1:2::1").await, 200);
    assert_eq!(
        status(&s, "2001:db8:1:2:ffff:ffff:ffff:ffff").await,
        429,
        "same /64"
    );
    assert_eq!(status(&s, "2001:db8:1:3::1").await, 200, "another /64");
}

#[tokio::test]
async fn a_mapped_trusted_proxy_network_trusts_the_ipv4_peer() {
    // One parser for trusted proxies and the allowlist: `::ffff:127.0.0.1/128` is 127.0.0.1/32.
    let s = start(r#""::ffff:127.0.0.1/128""#).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(
        status(&s, "203.0.113.2").await,
        200,
        "the peer is trusted: each forwarded client has its own counter"
    );
}
