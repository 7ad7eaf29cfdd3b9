//! `POST /report`: a proxy reports the upstream's answer to a request,
//! described as to `/check`, and every rule with `count = "reported"` that
//! the request matches and whose `report_statuses` hold the status is
//! charged, keyed as `/check` keys it. On both stores; only trusted peers;
//! bad input is a 400 naming the header and charges nothing.

use serde_json::{json, Value};

use super::{attempt, remaining};
use crate::support::server::ADMIN_TOKEN;
use crate::support::{unique_prefix, TestServer, BOTH_STORES};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = { path_prefix = "/login", methods = ["POST"] }
limits = ["3/m"]
count = "reported"

[[rule]]
name = "pin"
match = { path_prefix = "/login", methods = ["POST"] }
limits = ["10/m"]
count = "reported"
report_statuses = [429]

[[rule]]
name = "by_user"
match = { path_prefix = "/user" }
key = "header:x-user"
limits = ["2/m"]
count = "reported"

[[rule]]
name = "office"
match = { path_prefix = "/office" }
limits = ["2/m"]
count = "reported"
allowlist = "bypass"

[[rule]]
name = "api"
match = { path_prefix = "/login" }
limits = ["100/m"]
"#;

/// A proxy's report: `POST /report` with the original request's headers and
/// `extra` (the status among them). Status and body.
async fn report_answer(s: &TestServer, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(s.url("/report"));
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The upstream answered `status` to `method path` from `client`.
async fn answered(s: &TestServer, client: &str, method: &str, path: &str, status: &str) -> Value {
    let (code, v) = report_answer(
        s,
        &[
            ("x-forwarded-for", client),
            ("x-forwarded-uri", path),
            ("x-forwarded-method", method),
            ("x-upstream-status", status),
        ],
    )
    .await;
    assert_eq!(code, 200, "{method} {path} {status}: {v}");
    v
}

/// The rules a report charged, by name.
fn charged(v: &Value) -> Vec<&str> {
    v["charged"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|c| c["rule"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_answer_charges_the_reported_rules_that_list_its_status_and_nothing_else() {
    for kind in BOTH_STORES {
        let s = TestServer::start(CONFIG, kind.redis_url().as_deref(), &unique_prefix("rpa")).await;
        let client = "203.0.113.90";
        // Statuses no rule lists, a method the rules do not match: nothing.
        for (method, status) in [
            ("POST", "200"),
            ("POST", "404"),
            ("POST", "500"),
            ("GET", "401"),
        ] {
            let v = answered(&s, client, method, "/login", status).await;
            assert_eq!(
                charged(&v),
                Vec::<&str>::new(),
                "{kind:?} {method} {status}"
            );
        }
        // 401 (a default status) charges login only; 429 charges pin only.
        let v = answered(&s, client, "POST", "/login", "429").await;
        assert_eq!(charged(&v), ["pin"], "{kind:?}");
        for left in [2, 1, 0] {
            let v = answered(&s, client, "POST", "/login/", "401").await;
            assert_eq!(charged(&v), ["login"], "{kind:?}");
            assert_eq!(v["charged"][0]["counted"], true, "{kind:?} {v}");
            assert_eq!(v["charged"][0]["remaining"], left, "{kind:?} {v}");
        }
        assert_eq!(remaining(&s, "pin", client).await, 9, "{kind:?}");
        // Reports never charge a rule that counts requests.
        assert_eq!(remaining(&s, "api", client).await, 100, "{kind:?}");
        // Full: the client's next attempt is limited; a report adds nothing.
        assert_eq!(attempt(&s, client).await.0, 429, "{kind:?}");
        let v = answered(&s, client, "POST", "/login", "403").await;
        assert_eq!(v["charged"][0]["counted"], false, "{kind:?} {v}");
        assert!(
            v["charged"][0]["retry_after_ms"].as_u64().unwrap() > 0,
            "{kind:?} {v}"
        );
        assert_eq!(
            attempt(&s, "203.0.113.91").await.0,
            200,
            "{kind:?}: another client"
        );
        s.stop().await;
    }
}

/// Each rule's key is built from the described request as `/check` builds
/// it: a header key from the header, an IPv6 client by its /64; a request
/// without the key's header is not that rule's.
#[tokio::test]
async fn an_answer_is_keyed_as_check_keys_the_request() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("rpa-key")).await;
    let (code, v) = report_answer(
        &s,
        &[
            ("x-forwarded-uri", "/user/42"),
            ("x-forwarded-method", "PUT"),
            ("x-user", "u7"),
            ("x-upstream-status", "403"),
        ],
    )
    .await;
    assert_eq!((code, charged(&v)), (200, vec!["by_user"]), "{v}");
    assert_eq!(remaining(&s, "by_user", "u7").await, 1);
    let v = answered(&s, "203.0.113.92", "PUT", "/user/42", "403").await;
    assert_eq!(charged(&v), Vec::<&str>::new(), "no x-user: {v}");
    for host in ["2001:db8:5:6::1", "2001:db8:5:6::2", "2001:db8:5:6:ffff::3"] {
        answered(&s, host, "POST", "/login", "401").await;
    }
    assert_eq!(attempt(&s, "2001:db8:5:6::99").await.0, 429, "the same /64");
    assert_eq!(attempt(&s, "2001:db8:5:7::1").await.0, 200, "another /64");
}

/// A client the allowlist lets bypass a rule is not charged for it, as
/// `/check` never asks that rule for it; another client is.
#[tokio::test]
async fn an_allowlisted_client_is_not_charged_for_a_rule_it_bypasses() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("rpa-allow")).await;
    let r = reqwest::Client::new()
        .post(s.admin_url("/v1/allowlist"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"cidr": "203.0.113.95", "ttl": "1h", "note": "office"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = answered(&s, "203.0.113.95", "POST", "/office", "401").await;
    assert_eq!(charged(&v), Vec::<&str>::new(), "allowlisted: {v}");
    let v = answered(&s, "203.0.113.96", "POST", "/office", "401").await;
    assert_eq!(charged(&v), ["office"], "{v}");
}

/// Bad input is a 400 naming the header (the status, the described request),
/// an untrusted peer a 403; none charges anything.
#[tokio::test]
async fn a_bad_answer_report_names_its_header_and_charges_nothing() {
    for kind in BOTH_STORES {
        let s = TestServer::start(
            CONFIG,
            kind.redis_url().as_deref(),
            &unique_prefix("rpa-bad"),
        )
        .await;
        let request = [
            ("x-forwarded-for", "203.0.113.93"),
            ("x-forwarded-uri", "/login"),
            ("x-forwarded-method", "POST"),
        ];
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[], "x-upstream-status"),
            (&[("x-upstream-status", "abc")], "x-upstream-status"),
            (&[("x-upstream-status", "600")], "x-upstream-status"),
            (&[("x-upstream-status", "99")], "x-upstream-status"),
            (
                &[("x-upstream-status", "401"), ("x-upstream-status", "401")],
                "x-upstream-status",
            ),
            (
                &[("x-upstream-status", "401"), ("x-forwarded-uri", "/login")],
                "x-forwarded-uri",
            ),
        ];
        for (extra, field) in cases {
            let headers: Vec<(&str, &str)> = request.iter().chain(extra.iter()).copied().collect();
            let (code, v) = report_answer(&s, &headers).await;
            assert_eq!(code, 400, "{kind:?} {extra:?}: {v}");
            assert_eq!(v["field"], field, "{kind:?} {extra:?}: {v}");
        }
        let (code, v) = report_answer(
            &s,
            &[
                ("x-forwarded-uri", "/login/%zz"),
                ("x-forwarded-method", "POST"),
                ("x-upstream-status", "401"),
            ],
        )
        .await;
        assert_eq!((code, &v["field"]), (400, &json!("x-forwarded-uri")), "{v}");
        assert_eq!(remaining(&s, "login", "203.0.113.93").await, 3, "{kind:?}");
        s.stop().await;
    }
    let untrusting = CONFIG.replace(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "trusted_proxies = []",
    );
    let s = TestServer::start(&untrusting, None, &unique_prefix("rpa-peer")).await;
    let (code, v) = report_answer(&s, &[("x-upstream-status", "401")]).await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("trusted_proxies"),
        "{v}"
    );
    assert_eq!(remaining(&s, "login", "127.0.0.1").await, 3);
}
