//! A reload (`App::reload`, what SIGHUP calls) that changes every setting a
//! test can set in a file: each live one is seen to apply, each restart-only
//! one is listed by `GET /v1/status` under `restart_pending`. The log lines
//! of a reload are checked on the binary (`signals.rs`).

use serde_json::json;
use tollgate::config::{self, Config, Overrides};
use tollgate::limiter::Store;
use tollgate::secret::Secret;

use crate::support::{free_port, unique_prefix, TestServer, ADMIN_TOKEN};

/// Redis is away (nothing listens on its port): every decision is the
/// fallback's, with `limit / fallback_replicas`.
const BEFORE: &str = r#"
[server]
max_connections = 100
request_timeout = "10s"
idle_timeout = "75s"
shutdown_grace = "10s"
grpc_ratelimit_headers = true
forwarded_request = "x-forwarded"
admin_token_env = "TOLLGATE_ADMIN_TOKEN"

[redis]
timeout = "2s"
fallback_replicas = 2
deny_cache_bytes = 1000000

[client_ip]
trusted_proxies = ["127.0.0.1/32"]
ipv6_prefix = 64

[allowlist]
min_prefix_v4 = 8

[api]
max_cost = 1000

[activity]
retention_days = 30

[[rule]]
name = "r"
limits = ["4/h"]
on_redis_error = "local"
"#;

/// Every setting of `BEFORE` changed (but `local_store.max_bytes`: the
/// second reload's), plus the restart-only ones left at their defaults there.
fn after() -> String {
    BEFORE
        .replace("max_connections = 100", "max_connections = 101")
        .replace("request_timeout = \"10s\"", "request_timeout = \"11s\"")
        .replace("idle_timeout = \"75s\"", "idle_timeout = \"76s\"")
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"11s\"")
        .replace("grpc_ratelimit_headers = true", "grpc_ratelimit_headers = false")
        .replace("\"x-forwarded\"", "\"x-original\"")
        .replace("\"TOLLGATE_ADMIN_TOKEN\"", "\"OTHER_TOKEN\"")
        .replace("timeout = \"2s\"", "timeout = \"3s\"")
        .replace("fallback_replicas = 2", "fallback_replicas = 4")
        .replace("deny_cache_bytes = 1000000", "deny_cache_bytes = 2000000")
        .replace("[\"127.0.0.1/32\"]", "[\"127.0.0.1/32\", \"10.0.0.0/8\"]")
        .replace("ipv6_prefix = 64", "ipv6_prefix = 128")
        .replace(
            "min_prefix_v4 = 8",
            "min_prefix_v4 = 16\nreap_interval = \"2s\"\nstate_file = \"unused.state\"\nsnapshot_pages_per_second = 100\nsnapshot_fleet_pages_per_second = 300\nsnapshot_jitter_max = \"5s\"",
        )
        .replace("max_cost = 1000", "max_cost = 5")
        .replace("retention_days = 30", "retention_days = 7")
        + "\n[[rule]]\nname = \"new\"\nmatch = { path_prefix = \"/new\" }\nlimits = [\"1/h\"]\n"
}

/// The config `TestServer` would make of `text` (same overrides).
fn parse(text: &str, redis_url: &str, prefix: &str) -> Config {
    let ov = Overrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        redis_url: Some(redis_url.into()),
        redis_prefix: Some(prefix.into()),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        shadow: false,
    };
    config::parse("reload.toml", text, &ov).unwrap_or_else(|e| panic!("{e}"))
}

async fn add_cidr(s: &TestServer, cidr: &str) -> (u16, String) {
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .json(&json!({ "cidr": cidr }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_reload_applies_each_live_setting_and_lists_each_restart_only_one() {
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let prefix = unique_prefix("reload-all");
    let s = TestServer::launch(BEFORE, Some(&redis_url), &prefix).await;
    let xff = |ip: &'static str| s.check_with("x-forwarded-for", ip);

    // Before: 4/h over 2 replicas is 2 per replica, per /64.
    assert_eq!(xff("2001:db8::1").await, 200);
    assert_eq!(xff("2001:db8::1").await, 200);
    assert_eq!(xff("2001:db8::2").await, 429, "the same /64");
    assert_ne!(
        add_cidr(&s, "10.16.0.0/12").await.0,
        400,
        "a /12 was allowed"
    );
    let (_, status) = s.admin(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status["restart_pending"], json!([]));

    s.app.reload(parse(&after(), &redis_url, &prefix));

    // client_ip.ipv6_prefix: a /128 is a bucket of its own now;
    // redis.fallback_replicas: 4/h over 4 replicas is 1 per replica.
    assert_eq!(xff("2001:db8::2").await, 200, "a bucket of its own");
    assert_eq!(xff("2001:db8::2").await, 429, "one per replica");
    // allowlist.min_prefix_v4
    let (code, body) = add_cidr(&s, "10.16.0.0/12").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("/16"), "{body}");
    // rules
    assert_eq!(s.app.rules.load().len(), 2);
    // api.max_cost, redis.timeout, redis.deny_cache_bytes, activity.retention_days
    assert_eq!(s.app.limiter.caps().max_cost, 5);
    let Store::Redis(store) = &s.app.limiter.store else {
        panic!("a Redis store")
    };
    assert_eq!(store.timeout(), std::time::Duration::from_secs(3));
    assert_eq!(s.app.limiter.deny_cache.capacity(), 2_000_000);
    assert_eq!(s.app.activity.config.load().retention_days, 7);

    let restart_only = json!([
        "server.admin_token_env",
        "server.shutdown_grace",
        "server.grpc_ratelimit_headers",
        "server.forwarded_request",
        "server.max_connections",
        "server.request_timeout",
        "server.idle_timeout",
        "client_ip.trusted_proxies",
        "allowlist.reap_interval",
        "allowlist.state_file",
        "allowlist.snapshot_pages_per_second",
        "allowlist.snapshot_fleet_pages_per_second",
        "allowlist.snapshot_jitter_max",
    ]);
    let (_, status) = s.admin(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status["restart_pending"], restart_only);

    // local_store.max_bytes: the fallback store refuses new keys past it.
    let tiny = after() + "\n[local_store]\nmax_bytes = 1\n";
    s.app.reload(parse(&tiny, &redis_url, &prefix));
    assert_eq!(xff("2001:db8::3").await, 429, "no room for a new key");
    let (_, status) = s.admin(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status["restart_pending"], restart_only, "still pending");

    // Back to the file this process started with: nothing is pending.
    s.app.reload(parse(BEFORE, &redis_url, &prefix));
    let (_, status) = s.admin(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(status["restart_pending"], json!([]));
    assert_eq!(
        xff("2001:db8:1::4").await,
        200,
        "room again, in another /64"
    );
}
