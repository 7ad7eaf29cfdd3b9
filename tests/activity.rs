//! Activity counters against a real Redis with two replicas: presence from
//! heartbeats, active days, a tracked rule's summary, the path bound, a Redis
//! outage, bad input; on a Cluster, and through a Sentinel's failover.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde_json::Value;

use crate::support::binary::{tollgate_cmd, Serve};
use crate::support::{
    eventually, metric, scrape, shared_redis, temp_dir, unique_prefix, RedisServer, TestServer,
    ADMIN_TOKEN,
};

const TRACKED: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "pages"
match = { path_prefix = "/p" }
limits = ["1000000/s"]
track = true
track_paths = 50
"#;

/// HyperLogLog's standard error in Redis; tests allow three of them.
const HLL_BOUND: f64 = 3.0 * 0.0081;

/// Two replicas on the shared Redis, one prefix.
async fn pair(config: &str, name: &str) -> (TestServer, TestServer) {
    let prefix = unique_prefix(name);
    let url = shared_redis().url();
    let a = TestServer::start(config, Some(&url), &prefix).await;
    let b = TestServer::start(config, Some(&url), &prefix).await;
    (a, b)
}

async fn heartbeat(s: &TestServer, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.url("/v1/heartbeat"))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// GET on the admin listener, with the token; (status, JSON body).
async fn admin_get(s: &TestServer, path: &str) -> (u16, Value) {
    s.admin(reqwest::Method::GET, path).await
}

/// Poll an admin GET until its body satisfies `done` (20 s at most); that body.
async fn admin_until(s: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = admin_get(s, path).await;
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path}: last answer {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// `GET /check` as the trusted proxy would send it for `client` asking `path`.
async fn visit(client: &reqwest::Client, s: &TestServer, path: &str, ip: IpAddr) -> u16 {
    client
        .get(s.url("/check"))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_count_rises_with_heartbeats_and_falls_when_they_stop() {
    let (a, b) = pair("", "online").await;
    for i in 0..5 {
        assert_eq!(
            heartbeat(&a, &format!(r#"{{"id":"a{i}"}}"#)).await.status(),
            204
        );
        assert_eq!(
            heartbeat(&b, &format!(r#"{{"id":"b{i}"}}"#)).await.status(),
            204
        );
    }
    // No body: the client is its address (127.0.0.1, not a trusted proxy here).
    assert_eq!(heartbeat(&a, "").await.status(), 204);
    let online = |s: &TestServer| {
        let url = s.admin_url("/v1/activity/online?within=3s");
        async move {
            let v: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            num(&v, "online")
        }
    };
    eventually(Duration::from_secs(10), || async { online(&b).await == 11 }).await;
    // Who: only with the admin token.
    let open = reqwest::get(a.admin_url("/v1/activity/online?within=3s&list=true"))
        .await
        .unwrap();
    assert_eq!(open.status(), 401);
    let (status, v) = admin_get(&a, "/v1/activity/online?within=3s&list=true").await;
    assert_eq!(status, 200);
    let mut clients: Vec<String> = v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    clients.sort();
    assert_eq!(clients.len(), 11, "{v}");
    assert!(
        clients.contains(&"id:a0".to_string()) && clients.contains(&"ip:127.0.0.1".to_string())
    );
    // Heartbeats stop: after `within`, nobody is online.
    eventually(Duration::from_secs(15), || async { online(&a).await == 0 }).await;
    // The longer window still sees them.
    let v: Value = reqwest::get(a.admin_url("/v1/activity/online?within=1h"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(num(&v, "online"), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_days_count_10000_distinct_clients_within_the_hll_error_bound() {
    let (a, b) = pair("", "active").await;
    let client = reqwest::Client::new();
    let sent = 10_000u32;
    let statuses: Vec<u16> = stream::iter(0..sent)
        .map(|i| {
            let (client, s) = (client.clone(), if i % 2 == 0 { &a } else { &b });
            async move {
                client
                    .post(s.url("/v1/heartbeat"))
                    .body(format!(r#"{{"id":"user-{i}"}}"#))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 204));
    // Presence is exact: every id is flushed once both replicas have flushed.
    eventually(Duration::from_secs(20), || async {
        let v: Value = reqwest::get(a.admin_url("/v1/activity/online?within=1h"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        num(&v, "online") == u64::from(sent)
    })
    .await;
    for days in [1, 7] {
        let v: Value = reqwest::get(b.admin_url(&format!("/v1/activity/active?days={days}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let est = num(&v, "active") as f64;
        let err = (est - f64::from(sent)).abs() / f64::from(sent);
        assert!(err <= HLL_BOUND, "days={days}: {est} for {sent} ({v})");
        assert_eq!(v["standard_error"].as_f64(), Some(0.0081));
        assert_eq!(num(&v, "days"), days);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tracked_rules_summary_equals_what_was_sent_across_both_replicas() {
    let (a, b) = pair(TRACKED, "summary").await;
    let client = reqwest::Client::new();
    // 3 paths; path k gets 100·(k+1) requests from 40·(k+1) distinct clients,
    // alternating replicas; spellings differ, the normalised path is one.
    let spellings = [["/p/a", "/p/./a"], ["/p/b", "//p/b"], ["/p/c", "/p/x/../c"]];
    let mut sent = 0u64;
    for (k, spelling) in spellings.iter().enumerate() {
        let n = 100 * (k as u32 + 1);
        let clients = 40 * (k as u32 + 1);
        for i in 0..n {
            let s = if i % 2 == 0 { &a } else { &b };
            let path = spelling[(i % 2) as usize];
            assert_eq!(visit(&client, s, path, ip(i % clients)).await, 200);
            sent += 1;
        }
    }
    // An untracked path is not counted.
    assert_eq!(visit(&client, &a, "/q", ip(1)).await, 200);
    let summary = admin_until(&a, "/v1/activity/summary?hours=1", |v| {
        v["total"].as_u64() == Some(sent)
    })
    .await;
    assert_eq!(summary["rule"], "pages");
    let paths = summary["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 3, "{summary}");
    for (k, p) in ["/p/a", "/p/b", "/p/c"].iter().enumerate() {
        let entry = &paths[*p];
        assert_eq!(num(entry, "total"), 100 * (k as u64 + 1), "{p}: {entry}");
        let unique = num(entry, "unique") as f64;
        let truth = 40.0 * (k as f64 + 1.0);
        assert!(
            (unique - truth).abs() / truth <= HLL_BOUND,
            "{p}: {unique} vs {truth}"
        );
        let by_hour: u64 = entry["by_hour"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(by_hour, num(entry, "total"));
    }
    let unique = num(&summary, "unique") as f64;
    assert!((unique - 120.0).abs() / 120.0 <= HLL_BOUND, "{summary}");
    assert!(num(&summary, "from_ms") < num(&summary, "to_ms"));
    // One path, from the other replica, by any spelling.
    let (status, one) = admin_get(&b, "/v1/activity/paths/p//b?rule=pages&hours=2").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["path"], "/p/b");
    assert_eq!(num(&one, "total"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_cardinality_stays_bounded_under_100000_distinct_paths() {
    let (a, b) = pair(TRACKED, "paths").await;
    let client = reqwest::Client::new();
    // Through a real decision on each replica ...
    for i in 0..200u32 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(visit(&client, s, &format!("/p/http/{i}"), ip(i)).await, 200);
    }
    // ... and straight into each replica's recorder, as a decision does, so
    // 100 000 distinct paths take seconds, not minutes.
    let sent = 100_000u32;
    for i in 200..sent {
        let s = if i % 2 == 0 { &a } else { &b };
        s.app
            .activity
            .request("pages", &format!("/p/{i}"), ip(i % 5000));
        if i % 10_000 == 0 {
            // Spread over a few flushes, as real traffic would be.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let summary = admin_until(&a, "/v1/activity/summary?rule=pages&hours=1", |v| {
        v["total"].as_u64() == Some(u64::from(sent))
    })
    .await;
    let paths = summary["paths"].as_object().unwrap();
    assert!(paths.len() <= 51, "{} paths", paths.len());
    assert!(paths.contains_key("other"));
    // In Redis: the admitted set holds track_paths, and each key is small.
    let prefix = a.app.config.prefix.clone();
    let mut conn = shared_redis().conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:act:*"))
        .query(&mut conn)
        .unwrap();
    // Per hour: paths, req, clients, and at most 51 path HyperLogLogs
    // (a run that crosses an hour boundary has two hours).
    assert!(keys.len() <= 2 * (3 + 51), "{} keys", keys.len());
    let mut bytes = 0u64;
    for k in &keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .query(&mut conn)
            .unwrap();
        bytes += used.unwrap_or(0);
        if k.ends_with(":paths") {
            let n: u64 = redis::cmd("SCARD").arg(k).query(&mut conn).unwrap();
            assert!(n <= 50, "{k}: {n}");
        }
        if k.ends_with(":req") {
            let n: u64 = redis::cmd("HLEN").arg(k).query(&mut conn).unwrap();
            assert!(n <= 51, "{k}: {n}");
        }
        let ttl: i64 = redis::cmd("TTL").arg(k).query(&mut conn).unwrap();
        assert!(ttl > 0, "{k} has no TTL");
    }
    // 53 HyperLogLogs of at most 12 KB each, plus a 50-member set and hash.
    assert!(bytes < 1_000_000, "{bytes} bytes in {} keys", keys.len());
    let m = scrape(&a).await;
    assert!(metric(&m, "tollgate_activity_folded_paths_total", &[]) > 0.0);
}

/// A second merged from several recorder shards holds more paths than one
/// shard keeps; it reaches Redis in track script calls of at most a shard's
/// paths each (the flush splits it), and no request is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flush_of_more_paths_than_a_shard_keeps_goes_in_bounded_script_calls_and_loses_nothing() {
    // A Redis of its own whose SLOWLOG logs every call: the flush's calls
    // are read back from it (their arguments, not their durations).
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg(&[
            "SET",
            "slowlog-log-slower-than",
            "0",
            "slowlog-max-len",
            "100000",
        ])
        .query(&mut conn)
        .unwrap();
    let prefix = unique_prefix("act_split");
    let s = TestServer::start(TRACKED, Some(&redis.url()), &prefix).await;
    // Five threads, five shards (each thread keeps its own), 4 000 distinct
    // paths each: 20 000 in all, so any flush that takes half of them holds
    // more than a shard's bound.
    let per_thread = 4_000u32;
    let bound = tollgate::activity::flush::PATHS_PER_CALL;
    assert!(per_thread as usize <= bound && 2 * per_thread as usize > bound);
    std::thread::scope(|scope| {
        for t in 0..5u32 {
            let activity = &s.app.activity;
            scope.spawn(move || {
                for i in 0..per_thread {
                    activity.request("pages", &format!("/p/{t}/{i}"), ip(i));
                }
            });
        }
    });
    let sent = 5 * u64::from(per_thread);
    admin_until(&s, "/v1/activity/summary?rule=pages&hours=1", |v| {
        v["total"].as_u64() == Some(sent)
    })
    .await;
    // Every track script call, by its path count (numkeys is 4 + paths; it
    // is within the 32 arguments SLOWLOG keeps).
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let calls: Vec<usize> = log
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let args: Vec<String> = redis::from_redis_value_ref(&fields[3]).ok()?;
            (args[0].eq_ignore_ascii_case("EVAL") && args[1].starts_with("-- activity_track:"))
                .then(|| args[2].parse::<usize>().unwrap() - 4)
        })
        .collect();
    assert!(
        calls.iter().all(|&n| n <= bound),
        "paths per track call {calls:?}, bound {bound}"
    );
    assert!(
        calls.len() >= (sent as usize).div_ceil(bound),
        "paths per track call {calls:?}"
    );
    assert_eq!(
        calls.iter().sum::<usize>() as u64,
        sent,
        "every path sent once"
    );
}

/// A tracked rule's total this hour, as `serve`'s admin API answers it.
async fn total(serve: &Serve) -> Option<u64> {
    let v: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/activity/summary?hours=1",
            serve.admin_addr
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["total"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_loses_only_the_unflushed_counts_and_decisions_go_on() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("outage");
    let config = format!("[redis]\ntimeout = \"200ms\"\n{TRACKED}");
    let serve = Serve::start(
        &temp_dir("activity-outage"),
        &config,
        &["--redis", &redis.url(), "--prefix", &prefix],
    )
    .await;
    let client = reqwest::Client::new();
    let check = |path: &'static str, i: u32| {
        let client = client.clone();
        let url = format!("http://{}/check", serve.addr);
        async move {
            client
                .get(url)
                .header("x-forwarded-uri", path)
                .header("x-forwarded-for", ip(i).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for i in 0..20 {
        assert_eq!(check("/p/before", i).await, 200);
    }
    eventually(Duration::from_secs(10), || async {
        total(&serve).await == Some(20)
    })
    .await;

    redis.kill();
    // Decisions go on (on_redis_error = "local" for the limit; activity never
    // waits), and every request of the outage is lost and counted as such.
    for i in 0..30 {
        assert_eq!(check("/p/during", i).await, 200);
    }
    eventually(Duration::from_secs(10), || async {
        let m = serve.metrics().await;
        metric(&m, "tollgate_activity_lost_total", &[("kind", "requests")]) == 30.0
    })
    .await;
    let m = serve.metrics().await;
    assert!(metric(&m, "tollgate_activity_flush_failures_total", &[]) >= 1.0);
    assert_eq!(metric(&m, "tollgate_activity_flush_up", &[]), 0.0);

    redis.restart();
    for i in 0..10 {
        assert_eq!(check("/p/after", i).await, 200);
    }
    // Redis came back empty: exactly the requests after the outage are there.
    eventually(Duration::from_secs(15), || async {
        total(&serve).await == Some(10)
    })
    .await;
    let m = serve.metrics().await;
    assert_eq!(metric(&m, "tollgate_activity_flush_up", &[]), 1.0);
    assert_eq!(
        metric(&m, "tollgate_activity_lost_total", &[("kind", "requests")]),
        30.0
    );
    let log = serve.log();
    assert_eq!(log.matches("activity flush failed").count(), 1, "{log}");
    assert_eq!(log.matches("activity flush back").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_activity_input_is_a_400_naming_the_field_and_writes_nothing() {
    let (a, _b) = pair(TRACKED, "bad").await;
    let long = "x".repeat(129);
    for (body, field) in [
        (format!(r#"{{"id":"{long}"}}"#), "id"),
        (r#"{"id":""}"#.to_string(), "id"),
        (r#"{"id":"a b"}"#.to_string(), "id"),
        (r#"{"id":7}"#.to_string(), "id"),
        (r#"{"id":"a","x":1}"#.to_string(), "id"),
        ("not json".to_string(), "id"),
    ] {
        let r = heartbeat(&a, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    // A body over 1 KiB: a JSON 413 like every other refusal.
    let r = heartbeat(&a, &format!(r#"{{"id":"{}"}}"#, "x".repeat(2000))).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["field"].as_str(), v["error"].as_str()),
        (Some("(body)"), Some("the body is over 1024 bytes"))
    );
    for (path, field) in [
        ("/v1/activity/online?within=abc", "within"),
        ("/v1/activity/online?within=2h", "within"),
        ("/v1/activity/online?within=0s", "within"),
        ("/v1/activity/online?list=maybe", "list"),
        ("/v1/activity/online?whithin=1m", "whithin"),
        ("/v1/activity/online?within=1m&within=2h", "within"),
        ("/v1/activity/active?days=1&days=2", "days"),
        ("/v1/activity/active?days=0", "days"),
        ("/v1/activity/active?days=100000", "days"),
        ("/v1/activity/active?days=-1", "days"),
        ("/v1/activity/summary?rule=nope", "rule"),
        ("/v1/activity/summary?hours=0", "hours"),
        ("/v1/activity/summary?hours=721", "hours"),
        ("/v1/activity/paths/%25zz?rule=pages", "path"),
        ("/v1/activity/paths/p/a?rule=nope", "rule"),
    ] {
        let (status, v) = admin_get(&a, path).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["field"], field, "{path}: {v}");
    }
    // Nothing was written: one good heartbeat is all presence holds once flushed.
    assert_eq!(heartbeat(&a, r#"{"id":"marker"}"#).await.status(), 204);
    let v = admin_until(&a, "/v1/activity/online?within=1h&list=true", |v| {
        v["online"].as_u64() == Some(1)
    })
    .await;
    assert_eq!(v["clients"], serde_json::json!(["id:marker"]));
    let (_, v) = admin_get(&a, "/v1/activity/active?days=30").await;
    assert_eq!(num(&v, "active"), 1);
}

#[tokio::test]
async fn without_redis_activity_is_refused_with_a_message() {
    let s = TestServer::start("", None, &unique_prefix("embedded")).await;
    let r = heartbeat(&s, "").await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("live in Redis"),
        "{v}"
    );
    let (status, _) = admin_get(&s, "/v1/activity/online").await;
    assert_eq!(status, 503);
    let err = tollgate::config::parse(
        "t.toml",
        "[[rule]]\nname = \"p\"\nlimits = [\"1/s\"]\ntrack = true\n",
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("rule[0].track"), "{err}");
}

/// `tollgate activity …` with the test's config; (exit code, stdout, stderr).
fn cli(args: &[&str], config: &std::path::Path, prefix: &str) -> (i32, String, String) {
    let out = tollgate_cmd(&["activity"])
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--redis", &shared_redis().url(), "--prefix", prefix])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_reads_the_same_counts_as_the_api() {
    let (a, b) = pair(TRACKED, "cli").await;
    let prefix = a.app.config.prefix.clone();
    let file = temp_dir("activity-cli").join("t.toml");
    std::fs::write(&file, TRACKED).unwrap();
    let client = reqwest::Client::new();
    for i in 0..30 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(visit(&client, s, "/p/home", ip(i % 7)).await, 200);
        assert_eq!(
            heartbeat(s, &format!(r#"{{"id":"c{i}"}}"#)).await.status(),
            204
        );
    }
    admin_until(&a, "/v1/activity/summary?hours=1", |v| {
        v["total"].as_u64() == Some(30)
    })
    .await;
    admin_until(&a, "/v1/activity/online?within=1h", |v| {
        v["online"].as_u64() == Some(30)
    })
    .await;

    let (code, out, err) = cli(&["summary", "--hours", "1", "--json"], &file, &prefix);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(num(&v, "total"), 30);
    assert_eq!(num(&v["paths"]["/p/home"], "unique"), 7);
    let (code, out, _) = cli(&["path", "/p/home", "--rule", "pages"], &file, &prefix);
    assert_eq!(code, 0);
    assert!(out.contains("30 requests, ~7 clients"), "{out}");
    let (code, out, _) = cli(&["online", "--within", "1h"], &file, &prefix);
    assert_eq!(code, 0);
    assert!(out.contains(": 30"), "{out}");
    let (code, out, _) = cli(&["active", "--days", "1"], &file, &prefix);
    assert_eq!(code, 0);
    assert!(out.contains(": 30 (HyperLogLog"), "{out}");
    // Bad input: exit 2 naming the flag, Redis untouched.
    for (args, flag) in [
        (&["active", "--days", "0"][..], "--days"),
        (&["online", "--within", "2h"][..], "--within"),
        (&["summary", "--rule", "nope"][..], "--rule"),
        (&["path", "%zz"][..], "--path"),
    ] {
        let (code, _, err) = cli(args, &file, &prefix);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activity_works_on_a_redis_cluster_one_pipeline_per_key_family() {
    let cluster = crate::support::shared_cluster();
    let config = format!("{}{TRACKED}", cluster.config_section("2s"));
    let prefix = unique_prefix("act-cluster");
    let a = TestServer::start(&config, None, &prefix).await;
    let b = TestServer::start(&config, None, &prefix).await;
    let client = reqwest::Client::new();
    for i in 0..40u32 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            visit(&client, s, &format!("/p/{}", i % 4), ip(i % 10)).await,
            200
        );
        assert_eq!(
            heartbeat(s, &format!(r#"{{"id":"k{i}"}}"#)).await.status(),
            204
        );
    }
    let summary = admin_until(&a, "/v1/activity/summary?hours=1", |v| {
        v["total"].as_u64() == Some(40)
    })
    .await;
    assert_eq!(summary["paths"].as_object().unwrap().len(), 4, "{summary}");
    assert_eq!(num(&summary, "unique"), 10);
    admin_until(&b, "/v1/activity/online?within=1h", |v| {
        v["online"].as_u64() == Some(40)
    })
    .await;
    let (_, v) = admin_get(&b, "/v1/activity/active?days=3").await;
    assert_eq!(num(&v, "active"), 40);
    let m = scrape(&a).await;
    assert_eq!(
        metric(&m, "tollgate_activity_flush_failures_total", &[]),
        0.0
    );
}

/// Through a Sentinel: counts reach the master it names, and after a
/// failover (the old master now a read-only replica) later counts reach the
/// new one, where the reads find them, and flushing is up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activity_through_a_sentinel_follows_a_failover() {
    let set = crate::support::SentinelSet::start();
    let config = format!("{}{TRACKED}", set.config_section("500ms"));
    let a = TestServer::start(&config, None, &unique_prefix("act-sentinel")).await;
    let client = reqwest::Client::new();
    for i in 0..5u32 {
        assert_eq!(visit(&client, &a, "/p/before", ip(i)).await, 200);
    }
    admin_until(&a, "/v1/activity/summary?hours=1", |v| {
        v["total"].as_u64() == Some(5)
    })
    .await;
    set.fail_over().await;
    // Requests keep coming; a count made after the failover shows in the
    // reads only once a flush has reached the new master (the old one now
    // refuses writes).
    let mut sent = 5u64;
    eventually(Duration::from_secs(30), || {
        let (client, a) = (&client, &a);
        sent += 1;
        let n = sent;
        async move {
            assert_eq!(visit(client, a, "/p/after", ip(n as u32)).await, 200);
            let (status, v) = admin_get(a, "/v1/activity/summary?hours=1").await;
            status == 200 && v["paths"]["/p/after"]["total"].as_u64().unwrap_or(0) > 0
        }
    })
    .await;
    let on_new_master: Vec<String> = redis::cmd("KEYS")
        .arg("*act-sentinel*")
        .query(&mut set.replica.conn())
        .unwrap();
    assert!(!on_new_master.is_empty(), "nothing on the new master");
    assert_eq!(
        metric(&scrape(&a).await, "tollgate_activity_flush_up", &[]),
        1.0
    );
}

#[tokio::test]
async fn the_cli_counts_one_request_one_client_one_hour_and_one_day_in_the_singular() {
    let prefix = unique_prefix("activity-one");
    let a = TestServer::start(TRACKED, Some(&shared_redis().url()), &prefix).await;
    let file = temp_dir("activity-one").join("t.toml");
    std::fs::write(&file, TRACKED).unwrap();
    let client = reqwest::Client::new();
    assert_eq!(visit(&client, &a, "/p/home", ip(1)).await, 200);
    admin_until(&a, "/v1/activity/summary?hours=1", |v| {
        v["total"].as_u64() == Some(1)
    })
    .await;
    let (code, out, err) = cli(&["path", "/p/home", "--hours", "1"], &file, &prefix);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("over 1 hour: 1 request, ~1 client\n"), "{out}");
    let (code, out, err) = cli(&["summary", "--hours", "1"], &file, &prefix);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 1 request, ~1 client\n"), "{out}");
    assert!(
        !out.contains("1 requests") && !out.contains("1 clients"),
        "{out}"
    );
    let (code, out, err) = cli(&["active", "--days", "1"], &file, &prefix);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 day)"), "{out}");
}
