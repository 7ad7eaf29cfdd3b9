//! Per-client overrides on the lists' machinery: three servers on one real
//! Redis. An override set on one node is enforced by every node; a raise
//! keeps the count already spent (same algorithm, same period); lower,
//! `unlimited`, `deny`; a TTL returns the key to its rule; remove; bad input
//! is a 400 naming the field and writes nothing; Redis killed, every node
//! keeps its table; FLUSHALL is put back by the fleet with every override's
//! limits; the state file; the embedded store; `tollgate override`.

use std::time::Duration;

use serde_json::{json, Value};
use tollgate::keys::{AllowKeys, KeySpace};

use crate::support::binary::{output_text, tollgate};
use crate::support::server::readyz;
use crate::support::{
    eventually, metric, scrape, shared_redis, temp_dir, unique_prefix, RedisServer, TestServer,
};

/// `api` limits each `x-api-key` to 10 a minute; `slow` (sliding_log) and
/// `bucket` (gcra) are there for the bounds of their algorithms.
const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[overrides]
reap_interval = "1s"

[[rule]]
name = "api"
match = { path_prefix = "/api" }
key = "header:x-api-key"
limits = ["10/m"]

[[rule]]
name = "slow"
match = { path_prefix = "/slow" }
algorithm = "sliding_log"
limits = ["10/m"]

[[rule]]
name = "bucket"
match = { path_prefix = "/bucket" }
algorithm = "gcra"
limits = ["10/m"]

[[rule]]
name = "gate"
match = { path_prefix = "/gate" }
allowlist = "require"
"#;

fn keys(prefix: &str) -> AllowKeys {
    KeySpace::new(prefix).list("override")
}

async fn nodes(n: usize, url: Option<&str>, prefix: &str) -> Vec<TestServer> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TestServer::start(CONFIG, url, prefix).await);
    }
    all
}

/// `PUT /v1/overrides/{rule}/{key}`: the status and body.
async fn set(s: &TestServer, rule: &str, key: &str, body: Value) -> (u16, Value) {
    s.admin_json(
        reqwest::Method::PUT,
        &format!("/v1/overrides/{rule}/{key}"),
        &body,
    )
    .await
}

async fn set_ok(s: &TestServer, rule: &str, key: &str, body: Value) -> u64 {
    let (code, v) = set(s, rule, key, body).await;
    assert_eq!(code, 200, "{v}");
    v["seq"].as_u64().unwrap()
}

/// `GET /check` for `/api` with `x-api-key: key`: the status.
async fn ask(s: &TestServer, key: &str) -> u16 {
    reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-uri", "/api/items")
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every node's table holds the override write `seq` made.
async fn everywhere(all: &[TestServer], seq: u64) {
    eventually(Duration::from_secs(5), || async {
        all.iter().all(|n| n.app.overrides.table().seq >= seq)
    })
    .await;
}

/// What `GET /v1/limits/api/{key}` says was used of the first limit.
async fn used(s: &TestServer, key: &str) -> u64 {
    let (code, v) = s
        .admin(reqwest::Method::GET, &format!("/v1/limits/api/{key}"))
        .await;
    assert_eq!(code, 200, "{v}");
    v["limits"][0]["used"].as_u64().unwrap()
}

/// Limiter calls to Redis every node made so far.
async fn redis_calls(all: &[TestServer]) -> f64 {
    let mut total = 0.0;
    for n in all {
        total += metric(
            &scrape(n).await,
            "tollgate_redis_call_duration_seconds_count",
            &[],
        );
    }
    total
}

fn events(prefix: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(keys(prefix).events)
        .query(&mut shared_redis().conn())
        .unwrap()
}

#[tokio::test]
async fn an_override_set_on_one_node_is_enforced_by_every_node_and_a_raise_keeps_the_spent_count() {
    let prefix = unique_prefix("ovr");
    let all = nodes(3, Some(&shared_redis().url()), &prefix).await;
    for _ in 0..7 {
        assert_eq!(ask(&all[0], "acme").await, 200);
    }
    // 10/m → 100/m: the same algorithm and period, so the same counter.
    let seq = set_ok(
        &all[1],
        "api",
        "acme",
        json!({"limits": ["100/m"], "note": "launch"}),
    )
    .await;
    everywhere(&all, seq).await;
    for n in &all {
        let t = n.app.overrides.table();
        let (limits, expires_at) = t.lookup("api", "acme").unwrap();
        assert_eq!(expires_at, 0, "no ttl: permanent");
        assert_eq!(limits.to_json(), json!(["100/m"]));
    }
    let (code, v) = all[2]
        .post_check(&json!({"rule": "api", "key": "acme"}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["allowed"].as_bool(), v["limit"].as_u64()),
        (Some(true), Some(100))
    );
    assert_eq!(
        v["remaining"],
        100 - 8,
        "the 7 spent before the raise still count: {v}"
    );
    // Past the rule's 10, within the override's 100, on every node.
    for n in &all {
        assert_eq!(ask(n, "acme").await, 200);
    }
    assert_eq!(used(&all[0], "acme").await, 11);
    // Another key keeps the rule's limit.
    for _ in 0..10 {
        assert_eq!(ask(&all[0], "other").await, 200);
    }
    assert_eq!(ask(&all[1], "other").await, 429);

    // Lowered below what is spent: refused at once, everywhere.
    let seq = set_ok(&all[0], "api", "acme", json!({"limits": ["5/m"]})).await;
    everywhere(&all, seq).await;
    for n in &all {
        assert_eq!(ask(n, "acme").await, 429);
    }

    // unlimited: admitted without a limiter call (nothing more is spent).
    let seq = set_ok(&all[0], "api", "acme", json!({"limits": "unlimited"})).await;
    everywhere(&all, seq).await;
    let before = used(&all[0], "acme").await;
    let calls = redis_calls(&all).await;
    assert!(calls > 0.0, "the requests so far were counted");
    for n in &all {
        for _ in 0..5 {
            assert_eq!(ask(n, "acme").await, 200);
        }
    }
    assert_eq!(redis_calls(&all).await, calls, "no limiter call to Redis");
    assert_eq!(used(&all[0], "acme").await, before, "no counter moved");
    let (_, v) = all[1]
        .post_check(&json!({"rule": "api", "key": "acme"}))
        .await;
    assert_eq!(
        (v["allowed"].as_bool(), v["override"].as_str()),
        (Some(true), Some("unlimited"))
    );
    let text = scrape(&all[0]).await;
    let counted = |o| {
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "api"), ("outcome", o)],
        )
    };
    assert_eq!(counted("override_unlimited"), 5.0);

    // deny: refused without a limiter call, everywhere.
    let seq = set_ok(
        &all[2],
        "api",
        "acme",
        json!({"limits": "deny", "ttl": "1h"}),
    )
    .await;
    everywhere(&all, seq).await;
    let calls = redis_calls(&all).await;
    for n in &all {
        assert_eq!(ask(n, "acme").await, 429);
    }
    assert_eq!(redis_calls(&all).await, calls, "no limiter call to Redis");
    assert_eq!(used(&all[0], "acme").await, before);
    let text = scrape(&all[1]).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "api"), ("outcome", "override_deny")]
        ),
        1.0
    );

    // Removed: the rule's 10/m again, with the count as it stands.
    let (code, v) = all[1]
        .admin(reqwest::Method::DELETE, "/v1/overrides/api/acme")
        .await;
    assert_eq!((code, v["removed"].as_bool()), (200, Some(true)), "{v}");
    eventually(Duration::from_secs(5), || async {
        all.iter().all(|n| n.app.overrides.table().is_empty())
    })
    .await;
    assert_eq!(ask(&all[0], "acme").await, 429, "11 spent of 10");
    let (code, _) = all[1]
        .admin(reqwest::Method::DELETE, "/v1/overrides/api/acme")
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_temporary_override_expires_everywhere_and_returns_the_key_to_its_rule() {
    let prefix = unique_prefix("ovr-ttl");
    let all = nodes(2, Some(&shared_redis().url()), &prefix).await;
    for _ in 0..10 {
        assert_eq!(ask(&all[0], "k1").await, 200);
    }
    assert_eq!(ask(&all[1], "k1").await, 429);
    let seq = set_ok(
        &all[0],
        "api",
        "k1",
        json!({"limits": "unlimited", "ttl": "2s"}),
    )
    .await;
    everywhere(&all, seq).await;
    for n in &all {
        assert_eq!(ask(n, "k1").await, 200);
    }
    eventually(Duration::from_secs(10), || async {
        ask(&all[0], "k1").await == 429 && ask(&all[1], "k1").await == 429
    })
    .await;
    // The reaper wrote the expiry: every table is empty, and so is Redis.
    eventually(Duration::from_secs(10), || async {
        all.iter().all(|n| n.app.overrides.table().is_empty())
    })
    .await;
    let (code, _) = all[0]
        .admin(reqwest::Method::GET, "/v1/overrides/api/k1")
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_writes_nothing() {
    let prefix = unique_prefix("ovr-bad");
    let s = &nodes(1, Some(&shared_redis().url()), &prefix).await[0];
    // `api` keys by one header: at most 128 bytes verbatim.
    let long = "k".repeat(129);
    for (rule, key, body, field) in [
        ("nope", "k", json!({"limits": ["5/m"]}), "rule"),
        ("gate", "k", json!({"limits": ["5/m"]}), "rule"),
        ("api", long.as_str(), json!({"limits": ["5/m"]}), "key"),
        ("api", "k", json!({}), "limits"),
        ("api", "k", json!({"limits": "lots"}), "limits"),
        ("api", "k", json!({"limits": []}), "limits"),
        ("api", "k", json!({"limits": ["5 per minute"]}), "limits[0]"),
        ("api", "k", json!({"limits": ["5/m", "6/m"]}), "limits[1]"),
        ("api", "k", json!({"limits": ["5/m", 7]}), "limits[1]"),
        // sliding_log counts are capped by api.max_log_limit.
        ("slow", "k", json!({"limits": ["1000000/m"]}), "limits[0]"),
        // gcra: burst × period in µs must stay below 2^53.
        (
            "bucket",
            "k",
            json!({"limits": ["100000000/d"]}),
            "limits[0]",
        ),
        ("api", "k", json!({"limits": ["5/m"], "ttl": "soon"}), "ttl"),
        (
            "api",
            "k",
            json!({"limits": ["5/m"], "ttl": "4000d"}),
            "ttl",
        ),
        (
            "api",
            "k",
            json!({"limits": ["5/m"], "note": "n".repeat(300)}),
            "note",
        ),
    ] {
        let (code, answer) = set(s, rule, key, body.clone()).await;
        assert_eq!(code, 400, "{rule} {body}: {answer}");
        assert_eq!(answer["field"], field, "{rule} {body}: {answer}");
    }
    let mut conn = shared_redis().conn();
    for key in keys(&prefix).all() {
        let exists: u64 = redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap();
        assert_eq!(exists, 0, "{key}");
    }
    let (code, answer) = set(s, "api", &"k".repeat(600), json!({"limits": ["5/m"]})).await;
    assert_eq!(
        (code, answer["field"].as_str()),
        (400, Some("key")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("api.max_key_bytes"),
        "{answer}"
    );
    // And the good one writes one event.
    set_ok(s, "slow", "k", json!({"limits": ["20/m"]})).await;
    assert_eq!(events(&prefix), 1);
}

#[tokio::test]
async fn a_key_with_a_slash_is_one_percent_encoded_segment_and_the_list_filters_by_rule() {
    let prefix = unique_prefix("ovr-list");
    let s = &nodes(1, Some(&shared_redis().url()), &prefix).await[0];
    set_ok(
        s,
        "api",
        "tenant%2Facme",
        json!({"limits": ["50/m"], "note": "paid"}),
    )
    .await;
    set_ok(s, "api", "beta", json!({"limits": "deny"})).await;
    set_ok(s, "slow", "beta", json!({"limits": "unlimited"})).await;
    let (code, v) = s
        .admin(reqwest::Method::GET, "/v1/overrides/api/tenant%2Facme")
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["key"].as_str(), v["note"].as_str()),
        (Some("tenant/acme"), Some("paid"))
    );
    assert_eq!(v["limits"], json!(["50/m"]));
    let (code, v) = s
        .admin(reqwest::Method::GET, "/v1/overrides?rule=api")
        .await;
    assert_eq!(code, 200, "{v}");
    let mut listed: Vec<String> = v["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["rule"].as_str().unwrap(),
                o["key"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, ["api/beta", "api/tenant/acme"]);
    let (_, v) = s.admin(reqwest::Method::GET, "/v1/overrides").await;
    assert_eq!(v["overrides"].as_array().unwrap().len(), 3);
    let (code, v) = s
        .admin(reqwest::Method::GET, "/v1/overrides?rule=nope")
        .await;
    assert_eq!((code, v["field"].as_str()), (400, Some("rule")));
    assert_eq!(ask(s, "tenant/acme").await, 200);
    assert_eq!(ask(s, "beta").await, 429);
}

#[tokio::test]
async fn with_redis_killed_every_node_keeps_its_overrides() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("ovr-static");
    let all = nodes(2, Some(&redis.url()), &prefix).await;
    set_ok(&all[0], "api", "blocked", json!({"limits": "deny"})).await;
    let seq = set_ok(&all[0], "api", "vip", json!({"limits": "unlimited"})).await;
    everywhere(&all, seq).await;
    redis.kill();
    for n in &all {
        eventually(Duration::from_secs(10), || async {
            readyz(n.admin_addr).await.1.contains("overrides stale")
        })
        .await;
        // Both answered from the table, without the store Redis was.
        assert_eq!(ask(n, "blocked").await, 429);
        assert_eq!(ask(n, "vip").await, 200);
        assert_eq!(n.app.overrides.table().len(), 2);
    }
}

#[tokio::test]
async fn the_embedded_store_keeps_overrides_in_process() {
    let all = nodes(1, None, "unused").await;
    let s = &all[0];
    for _ in 0..3 {
        assert_eq!(ask(s, "e1").await, 200);
    }
    set_ok(s, "api", "e1", json!({"limits": ["4/m"]})).await;
    assert_eq!(ask(s, "e1").await, 200, "the 3 spent still count: 4th of 4");
    assert_eq!(ask(s, "e1").await, 429);
    set_ok(s, "api", "e1", json!({"limits": "unlimited"})).await;
    assert_eq!(ask(s, "e1").await, 200);
    let (code, v) = s.admin(reqwest::Method::GET, "/v1/overrides").await;
    assert_eq!(
        (code, v["overrides"].as_array().unwrap().len()),
        (200, 1),
        "{v}"
    );
    let (code, _) = s
        .admin(reqwest::Method::DELETE, "/v1/overrides/api/e1")
        .await;
    assert_eq!(code, 200);
    // Back to the rule's 10/m: 4 spent (denied and unlimited calls spend nothing).
    for _ in 0..6 {
        assert_eq!(ask(s, "e1").await, 200);
    }
    assert_eq!(ask(s, "e1").await, 429);
}

#[tokio::test]
async fn tollgate_override_sets_lists_shows_and_removes_in_redis_and_limits_show_shows_it() {
    let prefix = unique_prefix("ovr-cli");
    let url = shared_redis().url();
    let s = &nodes(1, Some(&url), &prefix).await[0];
    let file = temp_dir("ovr-cli").join("tollgate.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let path = file.to_str().unwrap();
    let tail = ["--config", path, "--redis", &url, "--prefix", &prefix];
    let run = |args: &[&str]| {
        let mut all = vec!["override"];
        all.extend_from_slice(args);
        all.extend_from_slice(&tail);
        tollgate(&all)
    };
    for _ in 0..3 {
        assert_eq!(ask(s, "acme").await, 200);
    }
    let out = run(&[
        "set", "api", "acme", "--limit", "100/m", "--limit", "1000/h", "--ttl", "1h", "--note",
        "launch",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["set", "slow", "beta", "--deny"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["list", "--rule", "api"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("acme") && text.contains("100/m, 1000/h") && !text.contains("beta"),
        "{text}"
    );
    let out = run(&["show", "api", "acme"]);
    let text = output_text(&out);
    assert!(
        text.contains("100/m, 1000/h") && text.contains("launch"),
        "{text}"
    );
    // The node follows it; `limits show` reads the counters against it.
    eventually(Duration::from_secs(5), || async {
        s.app.overrides.table().lookup("api", "acme").is_some()
    })
    .await;
    let mut show = vec!["limits", "show", "api", "acme"];
    show.extend_from_slice(&tail);
    let out = tollgate(&show);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("override 100/m, 1000/h until"), "{text}");
    assert!(text.contains("used 3"), "{text}");
    // Bad input: exit 2, the field named, nothing written.
    let out = run(&["set", "api", "acme", "--limit", "5 per m"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("limits[0]"),
        "{}",
        output_text(&out)
    );
    assert_eq!(events(&prefix), 2);
    let out = run(&["remove", "api", "acme"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&["show", "api", "acme"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    eventually(Duration::from_secs(5), || async {
        s.app.overrides.table().len() == 1
    })
    .await;
}

#[tokio::test]
async fn after_flushall_the_fleet_puts_the_overrides_back_with_their_limits() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("ovr-flush");
    let all = nodes(2, Some(&redis.url()), &prefix).await;
    set_ok(&all[0], "api", "blocked", json!({"limits": "deny"})).await;
    let seq = set_ok(
        &all[0],
        "api",
        "big",
        json!({"limits": ["100/m", "1000/h"], "note": "paid"}),
    )
    .await;
    everywhere(&all, seq).await;
    let old = all[0].app.overrides.table().epoch.clone();

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    assert_eq!(ask(&all[1], "blocked").await, 429, "fail-static");

    // One node restores the list, payloads included; every node loads the new epoch.
    eventually(Duration::from_secs(15), || async {
        let held: u64 = redis::cmd("HLEN")
            .arg(&keys(&prefix).entries)
            .query(&mut redis.conn())
            .unwrap();
        held == 2
            && all.iter().all(|n| {
                let t = n.app.overrides.table();
                t.epoch != old && t.len() == 2
            })
    })
    .await;
    let (code, v) = all[1]
        .admin(reqwest::Method::GET, "/v1/overrides/api/big")
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["limits"].clone(), v["note"].as_str()),
        (json!(["100/m", "1000/h"]), Some("paid"))
    );
    for n in &all {
        assert_eq!(ask(n, "blocked").await, 429);
    }
}

#[tokio::test]
async fn a_node_started_from_its_state_file_keeps_its_overrides_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("ovr-state");
    let state = temp_dir("ovr-state").join("overrides.json");
    let config = CONFIG.replace(
        "reap_interval = \"1s\"\n",
        &format!(
            "reap_interval = \"1s\"\nstate_file = {:?}\n",
            state.display().to_string()
        ),
    );
    let first = TestServer::start(&config, Some(&redis.url()), &prefix).await;
    set_ok(&first, "api", "blocked", json!({"limits": "deny"})).await;
    set_ok(&first, "api", "big", json!({"limits": ["100/m"]})).await;
    eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("api/big") && t.contains("100/m"))
    })
    .await;
    first.stop().await;
    redis.kill();

    let second = TestServer::launch(&config, Some(&redis.url()), &prefix).await;
    eventually(Duration::from_secs(5), || async {
        second.app.overrides.is_synced() && second.app.overrides.table().len() == 2
    })
    .await;
    assert_eq!(ask(&second, "blocked").await, 429);
    let t = second.app.overrides.table();
    assert_eq!(
        t.lookup("api", "big").unwrap().0.to_json(),
        json!(["100/m"])
    );
}

#[tokio::test]
async fn an_override_with_another_period_counts_from_zero_and_leaves_the_rules_counter_as_it_was() {
    let prefix = unique_prefix("ovr-period");
    let s = &nodes(1, Some(&shared_redis().url()), &prefix).await[0];
    for _ in 0..10 {
        assert_eq!(ask(s, "p1").await, 200);
    }
    assert_eq!(ask(s, "p1").await, 429);
    set_ok(s, "api", "p1", json!({"limits": ["1000/h"]})).await;
    let (_, v) = s.post_check(&json!({"rule": "api", "key": "p1"})).await;
    assert_eq!(
        (v["limit"].as_u64(), v["remaining"].as_u64()),
        (Some(1000), Some(999)),
        "{v}"
    );
    let (code, _) = s
        .admin(reqwest::Method::DELETE, "/v1/overrides/api/p1")
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(5), || async {
        s.app.overrides.table().is_empty()
    })
    .await;
    assert_eq!(ask(s, "p1").await, 429, "the minute's 10 still spent");
    // Set again, the hour's counter is where it was; a reset clears both.
    set_ok(s, "api", "p1", json!({"limits": ["1000/h"]})).await;
    let (_, v) = s.post_check(&json!({"rule": "api", "key": "p1"})).await;
    assert_eq!(v["remaining"], 998, "{v}");
    let (code, _) = s.admin(reqwest::Method::DELETE, "/v1/limits/api/p1").await;
    assert_eq!(code, 200);
    let (_, v) = s.post_check(&json!({"rule": "api", "key": "p1"})).await;
    assert_eq!(v["remaining"], 999, "{v}");
    let (code, _) = s
        .admin(reqwest::Method::DELETE, "/v1/overrides/api/p1")
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(5), || async {
        s.app.overrides.table().is_empty()
    })
    .await;
    assert_eq!(
        ask(s, "p1").await,
        200,
        "the minute's counter was reset too"
    );
}

#[tokio::test]
async fn an_override_the_reloaded_rule_cannot_take_leaves_the_key_to_the_rule() {
    use tollgate::config::{self, Overrides};
    use tollgate::secret::Secret;
    let prefix = unique_prefix("ovr-reload");
    let url = shared_redis().url();
    let s = &nodes(1, Some(&url), &prefix).await[0];
    // Fine for fixed_window; past gcra's exact range (burst × period < 2^53 µs).
    set_ok(s, "api", "huge", json!({"limits": ["100000000/d"]})).await;
    let (_, v) = s.post_check(&json!({"rule": "api", "key": "huge"})).await;
    assert_eq!(v["limit"], 100_000_000, "{v}");
    let gcra = CONFIG.replace(
        "key = \"header:x-api-key\"\n",
        "key = \"header:x-api-key\"\nalgorithm = \"gcra\"\n",
    );
    let ov = Overrides {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        redis_url: Some(url),
        redis_prefix: Some(prefix),
        admin_token: Some(Secret::new(crate::support::ADMIN_TOKEN)),
        shadow: false,
    };
    s.app.reload(config::parse("t.toml", &gcra, &ov).unwrap());
    // Every request is still decided: by the rule's own 10/m.
    for _ in 0..10 {
        assert_eq!(ask(s, "huge").await, 200);
    }
    assert_eq!(ask(s, "huge").await, 429);
    let (code, v) = s.post_check(&json!({"rule": "api", "key": "huge"})).await;
    assert_eq!((code, v["limit"].as_u64()), (200, Some(10)), "{v}");
}
