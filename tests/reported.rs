//! Rules that count reported outcomes (`count = "reported"`): requests only
//! check them, `POST /v1/report` charges them. On both stores: a request is
//! never charged, a report is, a full counter limits the client's next
//! request; only trusted peers report; bad input is a 400 naming the field
//! and charges nothing.

/// `POST /report`: a proxy reports the upstream's status.
mod proxy;

use serde_json::{json, Value};

use crate::support::{unique_prefix, TestServer, BOTH_STORES};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = { path_prefix = "/login" }
limits = ["3/m"]
count = "reported"

[[rule]]
name = "by_user"
match = { path_prefix = "/user" }
key = "header:x-user"
limits = ["2/m"]
count = "reported"

[[rule]]
name = "api"
match = { path_prefix = "/login" }
limits = ["100/m"]
"#;

async fn report(s: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/v1/report"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A login attempt from `client` through a trusted proxy: status, Retry-After.
async fn attempt(s: &TestServer, client: &str) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-for", client)
        .header("x-forwarded-uri", "/login")
        .header("x-forwarded-method", "POST")
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

/// `limits show`: the tightest remaining of `rule` for `key`.
async fn remaining(s: &TestServer, rule: &str, key: &str) -> u64 {
    let (code, v) = s
        .admin(reqwest::Method::GET, &format!("/v1/limits/{rule}/{key}"))
        .await;
    assert_eq!(code, 200, "{v}");
    v["limits"][0]["remaining"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

#[tokio::test]
async fn requests_only_check_a_reported_rule_and_reports_fill_it() {
    for kind in BOTH_STORES {
        let s = TestServer::start(CONFIG, kind.redis_url().as_deref(), &unique_prefix("rep")).await;
        let client = "203.0.113.70";
        // Ten attempts pass and charge nothing of login (api is charged: it counts requests).
        for _ in 0..10 {
            assert_eq!(attempt(&s, client).await.0, 200, "{kind:?}");
        }
        assert_eq!(remaining(&s, "login", client).await, 3, "{kind:?}");
        assert_eq!(remaining(&s, "api", client).await, 90, "{kind:?}");

        // Three failures reported: counted, and the counter is full.
        for left in [2, 1, 0] {
            let (code, v) = report(&s, json!({"rule": "login", "client": client})).await;
            assert_eq!(code, 200, "{kind:?} {v}");
            assert_eq!(v["counted"], true, "{kind:?} {v}");
            assert_eq!(v["remaining"], left, "{kind:?} {v}");
        }
        // The next attempt is limited, with Retry-After, and charges nothing anywhere.
        let (code, retry) = attempt(&s, client).await;
        assert_eq!(code, 429, "{kind:?}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "{kind:?} {retry}");
        assert_eq!(
            remaining(&s, "api", client).await,
            90,
            "{kind:?}: a denied request spent api"
        );
        // A report past the full counter adds nothing.
        let (code, v) = report(&s, json!({"rule": "login", "client": client})).await;
        assert_eq!((code, &v["counted"]), (200, &json!(false)), "{kind:?} {v}");
        assert!(v["retry_after_ms"].as_u64().unwrap() > 0, "{kind:?} {v}");
        // Another client is untouched.
        assert_eq!(attempt(&s, "203.0.113.71").await.0, 200, "{kind:?}");
        s.stop().await;
    }
}

/// `POST /v1/check` on a reported rule only checks too (every surface does).
#[tokio::test]
async fn the_json_check_only_checks_a_reported_rule() {
    for kind in BOTH_STORES {
        let s = TestServer::start(
            CONFIG,
            kind.redis_url().as_deref(),
            &unique_prefix("rep-json"),
        )
        .await;
        for _ in 0..5 {
            let (code, v) = s.post_check(&json!({"rule": "by_user", "key": "u1"})).await;
            assert_eq!((code, &v["allowed"]), (200, &json!(true)), "{kind:?} {v}");
            assert_eq!(v["remaining"], 2, "{kind:?} {v}");
        }
        for _ in 0..2 {
            let (code, _) = report(&s, json!({"rule": "by_user", "key": "u1"})).await;
            assert_eq!(code, 200);
        }
        let (_, v) = s.post_check(&json!({"rule": "by_user", "key": "u1"})).await;
        assert_eq!(v["allowed"], false, "{kind:?} {v}");
        s.stop().await;
    }
}

/// IPv4-mapped and IPv6 clients are keyed as a request from them would be:
/// the mapped form is the IPv4 client, an IPv6 client its /64.
#[tokio::test]
async fn a_reported_client_is_keyed_as_its_requests_are() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("rep-key")).await;
    for _ in 0..3 {
        let (code, v) = report(
            &s,
            json!({"rule": "login", "client": "::ffff:203.0.113.80"}),
        )
        .await;
        assert_eq!(code, 200, "{v}");
    }
    assert_eq!(attempt(&s, "203.0.113.80").await.0, 429);
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
        let (code, v) = report(&s, json!({"rule": "login", "client": host})).await;
        assert_eq!(code, 200, "{v}");
    }
    assert_eq!(attempt(&s, "2001:db8:1:2::99").await.0, 429, "the same /64");
    assert_eq!(attempt(&s, "2001:db8:1:3::1").await.0, 200, "another /64");
}

/// Every bad report is refused naming its field, and charges nothing.
#[tokio::test]
async fn a_bad_report_names_its_field_and_charges_nothing() {
    for kind in BOTH_STORES {
        let s = TestServer::start(
            CONFIG,
            kind.redis_url().as_deref(),
            &unique_prefix("rep-bad"),
        )
        .await;
        let long = "k".repeat(513); // api.max_key_bytes is 512
        let cases = [
            (json!({"rule": "nope", "client": "203.0.113.9"}), "rule"),
            (json!({"rule": "api", "client": "203.0.113.9"}), "rule"),
            (
                json!({"rule": "login", "client": "203.0.113.999"}),
                "client",
            ),
            (
                json!({"rule": "login", "client": "203.0.113.9/32"}),
                "client",
            ),
            (
                json!({"rule": "by_user", "client": "203.0.113.9"}),
                "client",
            ),
            (json!({"rule": "login"}), "client"),
            (
                json!({"rule": "login", "client": "203.0.113.9", "key": "203.0.113.9"}),
                "key",
            ),
            (json!({"rule": "by_user", "key": long}), "key"),
            (json!({"rule": "by_user", "key": ""}), "key"),
            (
                json!({"rule": "login", "client": "203.0.113.9", "cost": 0}),
                "cost",
            ),
            (
                json!({"rule": "login", "client": "203.0.113.9", "cost": 4}),
                "cost",
            ),
            (
                json!({"rule": "login", "client": "203.0.113.9", "cost": 1_000_000_000u64}),
                "cost",
            ),
            (
                json!({"rule": "login", "client": "203.0.113.9", "cost": -1}),
                "cost",
            ),
            (
                json!({"rule": "login", "client": "203.0.113.9", "extra": 1}),
                "extra",
            ),
        ];
        for (body, field) in cases {
            let (code, v) = report(&s, body.clone()).await;
            assert_eq!(code, 400, "{kind:?} {body} -> {v}");
            assert_eq!(v["field"], field, "{kind:?} {body} -> {v}");
            assert!(!v["error"].as_str().unwrap().is_empty());
        }
        assert_eq!(remaining(&s, "login", "203.0.113.9").await, 3, "{kind:?}");
        assert_eq!(remaining(&s, "by_user", "u1").await, 2, "{kind:?}");
        s.stop().await;
    }
}

/// A peer outside `client_ip.trusted_proxies` may not report: a client
/// cannot charge another client's failures (nor its own away).
#[tokio::test]
async fn only_a_trusted_peer_reports() {
    let untrusting = CONFIG.replace(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "trusted_proxies = []",
    );
    let s = TestServer::start(&untrusting, None, &unique_prefix("rep-peer")).await;
    let (code, v) = report(&s, json!({"rule": "login", "client": "203.0.113.9"})).await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("trusted_proxies"),
        "{v}"
    );
    assert_eq!(remaining(&s, "login", "203.0.113.9").await, 3);
}
