//! Who matches an allowlist: the longest prefix, IPv4-mapped and IPv6
//! clients, the peer (not its headers) when it is untrusted, bypass rules.

use super::*;

#[tokio::test]
async fn the_longest_prefix_matches_and_removing_the_24_keeps_the_8s_coverage() {
    let (_, s) = servers(2, "1s").await;
    for (cidr, note) in [("10.0.0.0/8", "wide"), ("10.1.2.0/24", "narrow")] {
        let (status, _) = add(&s[0], json!({"cidr": cidr, "note": note})).await;
        assert_eq!(status, 201);
    }
    let check = |ip: &'static str| check_ip(&s[1], ip);
    let (_, hit) = check("10.1.2.3").await;
    assert_eq!(
        (hit["cidr"].as_str(), hit["note"].as_str()),
        (Some("10.1.2.0/24"), Some("narrow"))
    );
    assert_eq!(check("10.9.9.9").await.1["cidr"], "10.0.0.0/8");
    assert_eq!(check("11.0.0.1").await.0, 404);

    // The path form of a CIDR: /v1/allowlist/10.1.2.0/24.
    let (status, _) = admin(&s[1], reqwest::Method::DELETE, "/v1/allowlist/10.1.2.0/24").await;
    assert_eq!(status, 200);
    assert_eq!(check("10.1.2.3").await.1["cidr"], "10.0.0.0/8");
    eventually(Duration::from_secs(1), || async {
        s[0].app.allowlist.table().seq == 3 && s[1].app.allowlist.table().seq == 3
    })
    .await;
    assert!(all_answer(&s, "10.1.2.3", 200).await);
}

#[tokio::test]
async fn an_ipv4_mapped_client_matches_an_ipv4_entry_and_ipv6_entries_match() {
    let (_, s) = servers(2, "1s").await;
    for cidr in ["::ffff:203.0.113.0/120", "2001:DB8:1::/48"] {
        let (status, body) = add(&s[0], json!({"cidr": cidr})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, list) = admin(&s[0], reqwest::Method::GET, "/v1/allowlist").await;
    let cidrs: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(
        cidrs,
        ["203.0.113.0/24", "2001:db8:1::/48"],
        "stored canonical"
    );
    eventually(Duration::from_secs(1), || async {
        all_answer(&s, "::ffff:203.0.113.9", 200).await
            && all_answer(&s, "2001:db8:1::5", 200).await
    })
    .await;
    assert!(all_answer(&s, "203.0.113.9", 200).await);
    assert!(all_answer(&s, "2001:db8:2::5", 403).await);
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_naming_an_allowlisted_ip_does_not_pass_require() {
    let prefix = unique_prefix("allow");
    let url = shared_redis().url();
    let s = TestServer::start(&config("1s", ""), Some(&url), &prefix).await;
    let (status, _) = add(&s, json!({"cidr": "203.0.113.7"})).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(1), || async {
        !s.app.allowlist.table().is_empty()
    })
    .await;
    // An untrusted peer may not name the original request in headers: it asks
    // Envoy-style, with the path in the URL.
    let gate = |ip: &'static str| {
        let url = s.url("/check/admin");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("x-forwarded-for", ip);
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        gate("203.0.113.7").await,
        403,
        "X-Forwarded-For from an untrusted peer"
    );
    // The peer itself is who counts.
    add(&s, json!({"cidr": "127.0.0.1"})).await;
    eventually(Duration::from_secs(1), || async {
        gate("203.0.113.99").await == 200
    })
    .await;
}

#[tokio::test]
async fn bypass_rules_let_members_skip_their_limits() {
    let (_, s) = servers(1, "1s").await;
    let s0 = &s[0];
    let login =
        |ip: &'static str| async move { ask(s0, "/check", "/login", ip).await.status().as_u16() };
    assert_eq!(login("192.0.2.10").await, 200);
    assert_eq!(login("192.0.2.10").await, 429);
    add(&s[0], json!({"cidr": "192.0.2.11"})).await;
    eventually(Duration::from_secs(1), || async {
        s[0].app.allowlist.table().seq == 1
    })
    .await;
    for _ in 0..3 {
        assert_eq!(login("192.0.2.11").await, 200);
    }
    // What each gate lets through is counted, as its refusals are.
    for _ in 0..2 {
        assert_eq!(
            ask(s0, "/check", "/admin", "192.0.2.11").await.status(),
            200
        );
    }
    let text = scrape(s0).await;
    let count = |rule, outcome| {
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", rule), ("outcome", outcome)],
        )
    };
    assert_eq!(count("login", "allowlisted"), 3.0);
    assert_eq!(count("login", "allowed"), 1.0, "only the non-member's pass");
    assert_eq!(count("admin", "allowlisted"), 2.0);
}
