//! `GET /v1/status` and `GET /v1/rules` on a real socket: behind the token,
//! health as Redis and the allowlist change, decision counts, rules as loaded.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    eventually, shared_redis, unique_prefix, RedisServer, TestServer, ADMIN_TOKEN,
};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = { path_prefix = "/login", methods = ["POST"] }
limits = ["5/m", "20/h"]
algorithm = "sliding_window"
allowlist = "bypass"
on_redis_error = "deny"
ban = { after = 1000, within = "10m", for = "15m", factor = 4, max = "7d", remember = "30d" }

[[rule]]
name = "api"
match = { path_prefix = "/api" }
key = "header:x-api-key"
limits = ["10/s"]
algorithm = "gcra"
burst = 20
shadow = true

[[rule]]
name = "admin"
match = { path = "/admin", host = "example.com" }
allowlist = "require"
"#;

async fn get(s: &TestServer, path: &str) -> Value {
    let r = s
        .admin_client()
        .get(s.admin_url(path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn login(s: &TestServer, ip: &str) -> u16 {
    reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-uri", "/login")
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn status_and_rules_need_the_token() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("st-auth")).await;
    for path in ["/v1/status", "/v1/rules"] {
        let http = reqwest::Client::new();
        let r = http.get(s.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        let r = http
            .get(s.admin_url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
        let r = http
            .get(s.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn rules_lists_every_rule_with_its_limits_algorithm_allowlist_mode_shadow_flag_and_ban() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("st-rules")).await;
    let v = get(&s, "/v1/rules").await;
    assert_eq!(
        v["rules"],
        json!([
            {"name": "login", "descriptor": null, "key": "ip",
             "match": {"path": null, "path_prefix": "/login", "path_starts_with": null,
                       "methods": ["POST"], "host": null},
             "limits": ["5/m", "20/h"], "algorithm": "sliding_window", "burst": null, "lease": null,
             "allowlist": "bypass", "on_redis_error": "deny", "shadow": false,
             "ban": {"after": 1000, "within": "10m", "for": "15m", "factor": 4,
                     "max": "7days", "remember": "30days"}},
            {"name": "api", "descriptor": null, "key": "header:x-api-key",
             "match": {"path": null, "path_prefix": "/api", "path_starts_with": null,
                       "methods": null, "host": null},
             "limits": ["10/s"], "algorithm": "gcra", "burst": 20, "lease": null,
             "allowlist": "ignore", "on_redis_error": "local", "shadow": true, "ban": null},
            {"name": "admin", "descriptor": null, "key": "ip",
             "match": {"path": "/admin", "path_prefix": null, "path_starts_with": null,
                       "methods": null, "host": "example.com"},
             "limits": [], "algorithm": "fixed_window", "burst": null, "lease": null,
             "allowlist": "require", "on_redis_error": "local", "shadow": false, "ban": null},
        ])
    );
}

#[tokio::test]
async fn status_reports_redis_the_allowlist_and_decision_counts_in_sync() {
    let prefix = unique_prefix("st-sync");
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &prefix).await;
    let v = get(&s, "/v1/status").await;
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_ms"].as_u64().is_some());
    assert_eq!(v["ready"], true);
    assert_eq!(v["redis"]["store"], "redis");
    assert_eq!(v["redis"]["up"], true);
    let a = &v["allowlist"];
    assert_eq!(a["freshness"], "in_sync", "{v}");
    assert_eq!(a["synced"], true);
    assert_eq!(a["entries"], 0);
    assert_eq!(a["seq_lag"], 0);
    assert_eq!(
        a["resyncs"],
        json!({"start": 1, "gap": 0, "epoch": 0, "backwards": 0, "unknown_event": 0})
    );
    assert!(a["summary"]
        .as_str()
        .unwrap()
        .starts_with("allowlist in sync"));
    assert_eq!(v["overrides"]["freshness"], "in_sync", "{v}");
    // Every rule × outcome from the start, at 0.
    assert_eq!(
        v["decisions"]["login"],
        json!({"allowed": 0, "limited": 0, "shadow_limited": 0, "fallback_allowed": 0,
               "fallback_limited": 0, "not_allowlisted": 0, "allowlisted": 0,
               "override_unlimited": 0, "override_deny": 0})
    );

    for _ in 0..6 {
        login(&s, "198.51.100.9").await;
    }
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .json(&json!({"cidr": "192.0.2.0/24", "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually(Duration::from_secs(5), || async {
        get(&s, "/v1/status").await["allowlist"]["entries"] == 1
    })
    .await;
    let v = get(&s, "/v1/status").await;
    assert_eq!(v["decisions"]["login"]["allowed"], 5, "{v}");
    assert_eq!(v["decisions"]["login"]["limited"], 1, "{v}");
    assert_eq!(v["allowlist"]["seq"], 1);
    assert!(v["allowlist"]["epoch"].as_str().unwrap().len() > 4);
}

#[tokio::test]
async fn status_says_stale_and_redis_down_while_redis_is_away() {
    let mut redis = RedisServer::start();
    let s = TestServer::start(CONFIG, Some(&redis.url()), &unique_prefix("st-down")).await;
    assert_eq!(login(&s, "198.51.100.10").await, 200);
    redis.kill();
    // A decision finds Redis gone (login: on_redis_error = "deny").
    assert_eq!(login(&s, "198.51.100.10").await, 429);
    eventually(Duration::from_secs(10), || async {
        let v = get(&s, "/v1/status").await;
        v["redis"]["up"] == false && v["allowlist"]["freshness"] == "stale"
    })
    .await;
    let v = get(&s, "/v1/status").await;
    assert!(v["allowlist"]["sync_age_ms"].as_u64().is_some(), "{v}");
    assert_eq!(v["decisions"]["login"]["fallback_limited"], 1, "{v}");
}

#[tokio::test]
async fn status_of_the_embedded_store_says_so() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("st-local")).await;
    let v = get(&s, "/v1/status").await;
    assert_eq!(v["redis"], json!({"store": "embedded", "up": null}));
    assert_eq!(v["allowlist"]["freshness"], "in_process");
    assert_eq!(v["ready"], true);
}
