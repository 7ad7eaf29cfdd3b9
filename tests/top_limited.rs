//! Who is hurting: the keys a rule limited most often, counted on every
//! replica and merged through Redis (`GET /v1/rules/{rule}/top`, `tollgate
//! activity top`); deny-cache answers, JSON and forward-auth all count; bad
//! input is refused naming the field.

use std::time::Duration;

use serde_json::Value;

use crate::support::binary::tollgate;
use crate::support::{eventually, shared_redis, temp_dir, unique_prefix, TestServer};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = { path_prefix = "/login" }
limits = ["1/m"]

[[rule]]
name = "by_user"
match = { path_prefix = "/user" }
key = "header:x-user"
limits = ["1/m"]
"#;

async fn login(s: &TestServer, client: &str) -> u16 {
    reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-for", client)
        .header("x-forwarded-uri", "/login")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn top(s: &TestServer, query: &str) -> (u16, Value) {
    s.admin(reqwest::Method::GET, &format!("/v1/rules/{query}"))
        .await
}

#[tokio::test]
async fn the_most_limited_keys_are_merged_across_replicas() {
    let prefix = unique_prefix("top");
    let url = shared_redis().url();
    let a = TestServer::start(CONFIG, Some(&url), &prefix).await;
    let b = TestServer::start(CONFIG, Some(&url), &prefix).await;
    // 203.0.113.1: 1 admitted, then 6 limited on a and 4 on b; .2: 2 limited.
    assert_eq!(login(&a, "203.0.113.1").await, 200);
    for _ in 0..6 {
        assert_eq!(login(&a, "203.0.113.1").await, 429);
    }
    for _ in 0..4 {
        assert_eq!(login(&b, "203.0.113.1").await, 429);
    }
    for _ in 0..3 {
        login(&b, "203.0.113.2").await;
    }
    // The JSON surface counts too (a key of another rule).
    for _ in 0..2 {
        b.post_check(&serde_json::json!({"rule": "by_user", "key": "u7"}))
            .await;
    }
    let expected = serde_json::json!([
        {"key": "203.0.113.1", "limited": 10},
        {"key": "203.0.113.2", "limited": 2}
    ]);
    // Flushed within a second by each replica; read from either.
    eventually(Duration::from_secs(10), || async {
        top(&a, "login/top").await.1["keys"] == expected
    })
    .await;
    // Two minutes: this one and the one before, where the flush may have landed.
    eventually(Duration::from_secs(10), || async {
        let (code, v) = top(&b, "by_user/top?minutes=2&count=5").await;
        code == 200 && v["keys"] == serde_json::json!([{"key": "u7", "limited": 1}])
    })
    .await;
    let (_, v) = top(&a, "login/top?count=1").await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");

    // The CLI reads the same from Redis.
    let dir = temp_dir("top-cli");
    let file = dir.join("t.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let o = tollgate(&[
        "activity",
        "top",
        "login",
        "--json",
        "--config",
        file.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"], expected);
    let o = tollgate(&[
        "activity",
        "top",
        "login",
        "--config",
        file.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("203.0.113.1") && text.contains("10 times"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_top_queries_name_their_field() {
    let s = TestServer::start(
        CONFIG,
        Some(&shared_redis().url()),
        &unique_prefix("top-bad"),
    )
    .await;
    for (q, code, field) in [
        ("login/top?minutes=0", 400, "minutes"),
        ("login/top?minutes=61", 400, "minutes"),
        ("login/top?count=101", 400, "count"),
        ("login/top?count=x", 400, "count"),
        ("login/top?cost=1", 400, "cost"),
        ("nope/top", 404, "rule"),
    ] {
        let (c, v) = top(&s, q).await;
        assert_eq!((c, v["field"].as_str()), (code, Some(field)), "{q}: {v}");
    }
    let r = reqwest::get(s.admin_url("/v1/rules/login/top"))
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "the keys are clients: the token is needed"
    );
    let embedded = TestServer::start(CONFIG, None, &unique_prefix("top-emb")).await;
    assert_eq!(top(&embedded, "login/top").await.0, 503);
}
