//! A real 3-master Redis Cluster and a real Sentinel: limits stay exact per
//! key across masters, a dead master only affects its own keys, a failover is
//! followed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tollgate::keys::KeySpace;
use tollgate::limiter::Algorithm;

use crate::support::{
    eventually, metric, scrape, shared_cluster, unique_prefix, RedisCluster, SentinelSet,
    TestServer,
};

fn rules(limit: &str) -> String {
    format!(
        r#"
[[rule]]
name = "cl"
key = "header:x-key"
limits = ["{limit}"]
on_redis_error = "deny"
"#
    )
}

async fn status(s: &TestServer, key: &str) -> u16 {
    s.check_with("x-key", key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_exact_per_key_across_all_masters_from_two_replicas() {
    let cluster = shared_cluster();
    let config = format!("{}{}", cluster.config_section("2s"), rules("3/h"));
    let prefix = unique_prefix("cluster");
    let a = Arc::new(TestServer::start(&config, None, &prefix).await);
    let b = Arc::new(TestServer::start(&config, None, &prefix).await);
    let admitted: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    // 1 000 keys x 5 requests, from 32 concurrent clients over both replicas.
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (a, b, admitted) = (a.clone(), b.clone(), admitted.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in (t..5000).step_by(32) {
                    let key = format!("k{}", i % 1000);
                    let server = if i % 2 == 0 { &a } else { &b };
                    let r = http
                        .get(server.url("/check"))
                        .header("x-key", &key)
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 => *admitted.lock().unwrap().entry(key).or_default() += 1,
                        429 => {}
                        other => panic!("status {other}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Every task has finished: take the counts out of the lock.
    let admitted = std::mem::take(&mut *admitted.lock().unwrap());
    assert_eq!(admitted.len(), 1000);
    let wrong: Vec<_> = admitted.iter().filter(|(_, &n)| n != 3).take(5).collect();
    assert!(
        wrong.is_empty(),
        "keys not admitted exactly 3 times: {wrong:?}"
    );
    // The keys really are spread over the three masters.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let n: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:rl:*"))
            .query(&mut node.conn())
            .unwrap();
        assert!(
            n.len() > 200,
            "master {i} holds only {} of the 1000 counters",
            n.len()
        );
    }
    let text = scrape(&a).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "cl"), ("outcome", "fallback_limited")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_master_sends_only_its_own_keys_to_on_redis_error() {
    let mut cluster = RedisCluster::start();
    let config = format!("{}{}", cluster.config_section("500ms"), rules("1000/h"));
    let prefix = unique_prefix("cluster-down");
    let s = TestServer::start(&config, None, &prefix).await;
    // One key on each master (the slot comes from the {rule|key} hash tag).
    let keys = key_per_master(&cluster);
    for k in &keys {
        assert_eq!(status(&s, k).await, 200);
    }

    cluster.nodes[2].kill();
    // The other masters keep deciding (200 from Redis); the dead one's keys get on_redis_error = deny.
    for _ in 0..5 {
        assert_eq!(status(&s, &keys[0]).await, 200);
        assert_eq!(status(&s, &keys[1]).await, 200);
        assert_eq!(status(&s, &keys[2]).await, 429);
    }
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "cl"), ("outcome", "fallback_limited")]
        ),
        5.0
    );
    assert!(metric(&text, "tollgate_redis_open_slots", &[]) >= 1.0);

    cluster.restart(2);
    eventually(Duration::from_secs(10), || async {
        status(&s, &keys[2]).await == 200
    })
    .await;
    assert_eq!(status(&s, &keys[0]).await, 200);
    eventually(Duration::from_secs(5), || async {
        metric(&scrape(&s).await, "tollgate_redis_open_slots", &[]) == 0.0
    })
    .await;
}

/// One key per master, named so that `cl|KEY` (the hash tag) lands on it.
fn key_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut on_node: Vec<Option<String>> = vec![None; cluster.nodes.len()];
    for i in 0.. {
        let key = format!("key{i}");
        let node = cluster.node_of(&format!("cl|{key}"));
        on_node[node].get_or_insert(key);
        if on_node.iter().all(Option::is_some) {
            break;
        }
    }
    on_node.into_iter().map(Option::unwrap).collect()
}

/// OOM is one master's state: only its slots open (refusing, by class), the
/// whole-Redis breaker stays closed and the other masters keep deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_out_of_memory_sends_only_its_own_keys_to_on_redis_error() {
    let cluster = RedisCluster::start();
    let config = format!("{}{}", cluster.config_section("500ms"), rules("1000/h"));
    let prefix = unique_prefix("cluster-oom");
    let s = TestServer::start(&config, None, &prefix).await;
    let keys = key_per_master(&cluster);
    for k in &keys {
        assert_eq!(status(&s, k).await, 200);
    }
    let config_set = |k: &str, v: &str| {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query(&mut cluster.nodes[2].conn())
            .unwrap();
    };
    config_set("maxmemory-policy", "noeviction");
    config_set("maxmemory", "1");

    for _ in 0..10 {
        assert_eq!(status(&s, &keys[0]).await, 200);
        assert_eq!(status(&s, &keys[1]).await, 200);
        assert_eq!(status(&s, &keys[2]).await, 429, "on_redis_error = deny");
    }
    let text = scrape(&s).await;
    assert_eq!(
        metric(&text, "tollgate_redis_up", &[]),
        1.0,
        "not all of Redis"
    );
    assert_eq!(
        metric(&text, "tollgate_redis_refusing", &[("class", "oom")]),
        0.0
    );
    assert_eq!(
        metric(&text, "tollgate_redis_refusing_slots", &[("class", "oom")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "cl"), ("outcome", "fallback_limited")]
        ),
        10.0
    );
    // The refused slot is skipped after a refusal (one call per second tries
    // it again): fewer refused calls than decisions.
    let refused = metric(&text, "tollgate_redis_errors_total", &[("kind", "refused")]);
    assert!((1.0..10.0).contains(&refused), "{refused} refused calls");
    let (code, st) = s.admin(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(code, 200);
    assert_eq!(st["redis"]["refusing_slots"]["oom"], 1, "{st}");
    assert_eq!(st["redis"]["up"], true, "{st}");

    config_set("maxmemory", "0");
    eventually(Duration::from_secs(10), || async {
        status(&s, &keys[2]).await == 200
    })
    .await;
    let text = scrape(&s).await;
    assert_eq!(
        metric(&text, "tollgate_redis_refusing_slots", &[("class", "oom")]),
        0.0
    );
    assert_eq!(metric(&text, "tollgate_redis_open_slots", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_finds_the_master_and_follows_a_failover() {
    let set = SentinelSet::start();
    let config = format!("{}{}", set.config_section("500ms"), rules("1000/h"));
    let prefix = unique_prefix("sentinel");
    let s = TestServer::start(&config, None, &prefix).await;
    assert_eq!(status(&s, "a").await, 200);
    let on_master: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:rl:*"))
        .query(&mut set.master.conn())
        .unwrap();
    assert_eq!(
        on_master.len(),
        1,
        "the counter is on the master the sentinel named"
    );

    // The replica becomes master; the old master, a replica: writes there fail
    // (READONLY), the breaker opens, the probe asks the sentinel again.
    set.fail_over().await;
    eventually(Duration::from_secs(20), || async {
        status(&s, "b").await == 200
            && set.replica.try_conn().is_some_and(|mut c| {
                redis::cmd("EXISTS")
                    .arg(KeySpace::limit_key(
                        &KeySpace::new(&prefix).limit_base(Algorithm::FixedWindow, "cl", "b"),
                        3_600_000,
                    ))
                    .query::<i64>(&mut c)
                    .unwrap_or(0)
                    == 1
            })
    })
    .await;
    assert_eq!(metric(&scrape(&s).await, "tollgate_redis_up", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_allowlist_protocol_runs_on_the_cluster_add_remove_expire_and_a_gap() {
    let cluster = shared_cluster();
    let config = format!(
        "{}[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[allowlist]\nreap_interval = \"200ms\"\n\n\
         [[rule]]\nname = \"admin\"\nmatch = {{ path_prefix = \"/admin\" }}\nallowlist = \"require\"\n",
        cluster.config_section("2s")
    );
    let prefix = unique_prefix("cluster-allow");
    let a = TestServer::start(&config, None, &prefix).await;
    let b = TestServer::start(&config, None, &prefix).await;
    let gate = |s: &TestServer, ip: &'static str| {
        let url = s.url("/check");
        async move {
            reqwest::Client::new()
                .get(url)
                .header("x-forwarded-uri", "/admin")
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let admin = a.admin_client();
    let add = |ip: &str, ttl: &str| {
        admin
            .post(a.admin_url("/v1/allowlist"))
            .json(&serde_json::json!({"cidr": ip, "ttl": ttl}))
            .send()
    };
    assert_eq!(gate(&b, "192.0.2.10").await, 403);
    assert_eq!(add("192.0.2.10", "1h").await.unwrap().status(), 201);
    eventually(Duration::from_secs(1), || {
        gate(&b, "192.0.2.10").map(|s| s == 200)
    })
    .await;
    let r = admin
        .delete(a.admin_url("/v1/allowlist/192.0.2.10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(1), || {
        gate(&b, "192.0.2.10").map(|s| s == 403)
    })
    .await;
    assert_eq!(add("192.0.2.11", "2s").await.unwrap().status(), 201);
    eventually(Duration::from_secs(1), || {
        gate(&b, "192.0.2.11").map(|s| s == 200)
    })
    .await;
    eventually(Duration::from_secs(4), || {
        gate(&b, "192.0.2.11").map(|s| s == 403)
    })
    .await;

    // A gap: an event numbered five past the last one lands in the stream (on
    // the master that owns the allowlist's slot); the follower must resync.
    let events = KeySpace::new(&prefix).allowlist().events;
    let owner = &cluster.nodes[cluster.node_of(&events)];
    let table = b.app.allowlist.table();
    let seq = (table.seq + 5).to_string();
    let _: String = redis::cmd("XADD")
        .arg(&events)
        .arg("*")
        .arg(&[
            ("epoch", table.epoch.as_str()),
            ("seq", seq.as_str()),
            ("op", "upsert"),
            ("cidr", "192.0.2.99/32"),
            ("expires_at", "0"),
            ("note", ""),
            ("actor", "test"),
            ("ver", "1"),
        ])
        .query(&mut owner.conn())
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        metric(
            &scrape(&b).await,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "gap")],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        gate(&b, "192.0.2.99").await,
        403,
        "an event after a gap is never applied"
    );
}
