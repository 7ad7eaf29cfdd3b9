//! The decision API on a real socket: statuses, headers and bodies.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::support::{shared_redis, unique_prefix, TestServer, BOTH_STORES};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = { path_prefix = "/login", methods = ["POST"] }
key = "ip"
limits = ["2/m", "10/h"]

[[rule]]
name = "api"
match = { path_prefix = "/api" }
key = "header:x-api-key"
limits = ["3/m"]
algorithm = "gcra"
"#;

async fn server() -> TestServer {
    TestServer::start(CONFIG, Some(&shared_redis().url()), &unique_prefix("http")).await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name}: {h:?}"))
        .to_str()
        .unwrap()
}

async fn login(s: &TestServer, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url(path))
        .header("x-forwarded-uri", "/login?next=/")
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-for", "203.0.113.50")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn check_allows_then_answers_429_with_retry_after_and_ratelimit_headers() {
    for store in BOTH_STORES {
        let s =
            TestServer::start(CONFIG, store.redis_url().as_deref(), &unique_prefix("http")).await;
        let r = login(&s, "/check").await;
        assert_eq!(r.status(), 200, "{store:?}");
        let h = r.headers();
        assert_eq!(
            header(h, "ratelimit-policy"),
            r#""login:2/m";q=2;w=60, "login:10/h";q=10;w=3600"#
        );
        assert_eq!(
            header(h, "ratelimit"),
            r#""login:2/m";r=1;t=60, "login:10/h";r=9;t=3600"#
        );
        assert_eq!(header(h, "x-ratelimit-limit"), "2");
        assert_eq!(header(h, "x-ratelimit-remaining"), "1");
        assert_eq!(header(h, "x-ratelimit-reset"), "60");
        assert!(h.get("retry-after").is_none());

        assert_eq!(login(&s, "/check").await.status(), 200);
        let r = login(&s, "/check").await;
        assert_eq!(r.status(), 429, "{store:?}");
        let h = r.headers().clone();
        let retry: u64 = header(&h, "retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert_eq!(header(&h, "x-tollgate-reason"), "rate_limited");
        assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
        assert!(header(&h, "ratelimit").starts_with(r#""login:2/m";r=0;"#));
        assert_eq!(header(&h, "content-length"), "0");
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "a denial must have an empty body"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn check_nginx_answers_a_limit_with_403_reason_and_retry_after() {
    let s = server().await;
    assert_eq!(login(&s, "/check/nginx").await.status(), 200);
    assert_eq!(login(&s, "/check/nginx").await.status(), 200);
    let r = login(&s, "/check/nginx").await;
    assert_eq!(r.status(), 403);
    let h = r.headers();
    assert_eq!(header(h, "x-tollgate-reason"), "rate_limited");
    assert!(header(h, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(header(h, "content-length"), "0");
    // /check and /check/nginx decide on the same counters.
    assert_eq!(login(&s, "/check").await.status(), 429);
}

#[tokio::test]
async fn requests_no_rule_applies_to_pass_without_ratelimit_headers() {
    let s = server().await;
    let http = reqwest::Client::new();
    // Wrong method for "login"; and "api" needs an X-Api-Key header, which is missing.
    for (uri, method) in [("/login", "GET"), ("/api/items", "GET"), ("/other", "POST")] {
        for _ in 0..5 {
            let r = http
                .get(s.url("/check"))
                .header("x-forwarded-uri", uri)
                .header("x-forwarded-method", method)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{method} {uri}");
            assert!(r.headers().get("ratelimit").is_none(), "{method} {uri}");
        }
    }
}

#[tokio::test]
async fn a_header_key_counts_per_header_value_and_envoy_style_paths_work() {
    let s = server().await;
    let http = reqwest::Client::new();
    // Envoy ext_authz: the original path is appended to /check.
    let call = |key: &'static str| {
        http.get(s.url("/check/api/items?page=2"))
            .header("x-api-key", key)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(call("alpha").await.unwrap().status(), 200);
    }
    let r = call("alpha").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(r.headers(), "ratelimit-policy"), r#""api";q=3;w=60"#);
    assert_eq!(
        call("beta").await.unwrap().status(),
        200,
        "another key has its own counter"
    );
}

async fn post(s: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/v1/check"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn v1_check_answers_by_rule_and_by_ad_hoc_limits() {
    let s = server().await;
    let (status, body) = post(&s, json!({"rule": "login", "key": "user:42", "cost": 1})).await;
    assert_eq!(status, 200);
    assert_eq!(body["allowed"], true);
    assert_eq!(body["limit"], 2);
    assert_eq!(body["remaining"], 1);
    assert_eq!(body["retry_after_ms"], 0);
    assert_eq!(body["limits"].as_array().unwrap().len(), 2);

    let ad_hoc = json!({"key": "user:42", "limits": ["3/m"], "algorithm": "gcra", "cost": 2});
    let (_, body) = post(&s, ad_hoc.clone()).await;
    assert_eq!(
        (body["allowed"].as_bool(), body["remaining"].as_u64()),
        (Some(true), Some(1))
    );
    let (status, body) = post(&s, ad_hoc).await;
    assert_eq!(status, 200, "being limited is an answer, not an error");
    assert_eq!(body["allowed"], false);
    let retry = body["retry_after_ms"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 20_000, "retry_after_ms {retry}");
    assert!(body["reset_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn v1_check_bad_bodies_get_400_naming_the_field() {
    let s = server().await;
    let cases = [
        (json!({"rule": "login"}), "key"),
        (json!({"rule": "nope", "key": "k"}), "rule"),
        (json!({"key": "k"}), "rule"),
        (json!({"key": "k", "limits": ["5/x"]}), "limits[0]"),
        (json!({"key": "k", "limits": ["5/m", "0/h"]}), "limits[1]"),
        (json!({"key": "k", "limits": []}), "limits"),
        (
            json!({"key": "k", "limits": ["5/m"], "algorithm": "leaky"}),
            "algorithm",
        ),
        (json!({"key": "k", "limits": ["5/m"], "cost": 0}), "cost"),
        (json!({"key": "k", "limits": ["5/m"], "cost": 6}), "cost"),
        (json!({"key": "k", "limits": ["5/m"], "cots": 1}), "cots"),
        (
            json!({"key": "k", "rule": "login", "limits": ["5/m"]}),
            "limits",
        ),
        (json!({"key": 5, "rule": "login"}), "key"),
        (json!(["not", "an", "object"]), "(body)"),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&s, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        assert!(!answer["error"].as_str().unwrap().is_empty());
    }
    let r = reqwest::Client::new()
        .post(s.url("/v1/check"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["field"], "(body)");
}

#[tokio::test]
async fn health_endpoints_live_on_the_admin_listener() {
    let s = server().await;
    let live = reqwest::get(s.admin_url("/livez")).await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = reqwest::get(s.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("redis"));
    // Not on the decision listener.
    assert_eq!(reqwest::get(s.url("/readyz")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_denied_limits_ratelimit_reset_is_its_retry_after_for_every_algorithm() {
    for algorithm in ["fixed_window", "sliding_window", "sliding_log", "gcra"] {
        for store in BOTH_STORES {
            let config = format!(
                "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[[rule]]\nname = \"r\"\nlimits = [\"2/10s\", \"100/h\"]\nalgorithm = \"{algorithm}\"\n"
            );
            let s =
                TestServer::start(&config, store.redis_url().as_deref(), &unique_prefix("t")).await;
            let mut denied = None;
            for _ in 0..3 {
                let r = s.check_response("x-forwarded-for", "198.51.100.77").await;
                if r.status() == 429 {
                    denied = Some(r.headers().clone());
                }
            }
            let h = denied.unwrap_or_else(|| panic!("{algorithm} {store:?}: never denied"));
            let retry = header(&h, "retry-after");
            // The limit that denied: next passable when Retry-After says.
            let first = header(&h, "ratelimit")
                .split(", ")
                .next()
                .unwrap()
                .to_string();
            assert_eq!(
                first,
                format!("\"r:2/10s\";r=0;t={retry}"),
                "{algorithm} {store:?}: {h:?}"
            );
            assert_eq!(
                header(&h, "x-ratelimit-reset"),
                retry,
                "{algorithm} {store:?}"
            );
            // The limit with room left keeps its own reset.
            assert!(
                header(&h, "ratelimit").contains("\"r:100/h\";r=98;"),
                "{h:?}"
            );
            s.stop().await;
        }
    }
}
