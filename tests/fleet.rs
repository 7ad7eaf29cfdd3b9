//! The fleet registry on a real Redis: replicas sharing a Redis and a prefix
//! see each other in `GET /v1/status`; with Redis killed, the `local`
//! fallback divides each limit by the replicas last seen (`fallback_replicas
//! = "auto"`, the default), so one client gets at most the limit across the
//! fleet; a replica that dies is dropped after the TTL (`fleet::TTL`, 10 s),
//! one that stops leaves the registry at once; a registry lost and back
//! empty is logged once each way and never lowers the count.

use std::time::Duration;

use serde_json::Value;

use crate::support::binary::Serve;
use crate::support::server::admin_status;
use crate::support::{
    eventually, metric, scrape, shared_cluster, shared_redis, temp_dir, unique_prefix, RedisServer,
    TestServer,
};

/// One rule, `5/m`, decided in process while Redis is away.
const CONFIG: &str = r#"
[redis]
timeout = "500ms"

[[rule]]
name = "login"
match = { path_prefix = "/login" }
limits = ["5/m"]
on_redis_error = "local"
"#;

/// Beats every 2 s, a TTL of 10 s: generous for a loaded 2-core machine.
const SEE_EACH_OTHER: Duration = Duration::from_secs(20);
const DROPPED: Duration = Duration::from_secs(45);

/// The replica ids this server's last beat saw, sorted.
async fn fleet_ids(admin: std::net::SocketAddr) -> Vec<String> {
    let s = admin_status(admin).await;
    let mut ids: Vec<String> = s["fleet"]["replicas"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Until every admin address lists exactly `n` replicas, the same ones.
async fn until_all_see(admins: &[std::net::SocketAddr], n: usize, deadline: Duration) {
    eventually(deadline, || async {
        let mut views = Vec::new();
        for &a in admins {
            views.push(fleet_ids(a).await);
        }
        views.iter().all(|v| v.len() == n && *v == views[0])
    })
    .await;
}

async fn login(s: &TestServer) -> u16 {
    reqwest::get(s.url("/check/login"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn three_replicas_see_each_other_and_with_redis_killed_one_client_gets_at_most_the_limit_across_them(
) {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("fleet");
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(TestServer::start(CONFIG, Some(&redis.url()), &prefix).await);
    }
    let admins: Vec<_> = servers.iter().map(|s| s.admin_addr).collect();
    until_all_see(&admins, 3, SEE_EACH_OTHER).await;

    // Each replica's status: the fleet with versions, one config hash, uptimes.
    for s in &servers {
        let st = admin_status(s.admin_addr).await;
        let fleet = &st["fleet"];
        assert_eq!(fleet["fallback_replicas"], "auto", "{fleet}");
        assert_eq!(fleet["fallback_divisor"], 3, "{fleet}");
        assert_eq!(fleet["live"], 3, "{fleet}");
        assert_eq!(fleet["registry_up"], true, "{fleet}");
        let replicas = fleet["replicas"].as_array().unwrap();
        let me: Vec<&Value> = replicas.iter().filter(|r| r["this"] == true).collect();
        assert_eq!(me.len(), 1, "{fleet}");
        assert_eq!(me[0]["id"], fleet["id"]);
        assert_eq!(me[0]["listen"], s.addr.to_string());
        for r in replicas {
            assert_eq!(r["version"], st["version"], "{r}");
            assert_eq!(r["config_hash"], replicas[0]["config_hash"], "{r}");
            assert_eq!(r["config_hash"].as_str().unwrap().len(), 12, "{r}");
            assert!(
                r["uptime_ms"].is_u64() && r["last_seen_ms_ago"].is_u64(),
                "{r}"
            );
        }
    }

    let text = scrape(&servers[0]).await;
    assert_eq!(metric(&text, "tollgate_fleet_replicas", &[]), 3.0);
    assert_eq!(metric(&text, "tollgate_fleet_registry_up", &[]), 1.0);

    redis.kill();
    // One client (127.0.0.1) spreads 30 logins over the three replicas.
    let mut admitted = 0;
    for round in 0..10 {
        for s in &servers {
            match login(s).await {
                200 => admitted += 1,
                429 => {}
                other => panic!("round {round}: status {other}"),
            }
        }
    }
    // Each replica enforces max(1, floor(5 / 3)) = 1: 3 across the fleet,
    // within the limit of 5 (the README's rounding: at most max(limit, replicas)).
    assert_eq!(admitted, 3, "admitted across the fleet");
    assert!(admitted <= 5);

    // The status still shows the fleet as last seen, and says the registry is away.
    eventually(SEE_EACH_OTHER, || async {
        let st = admin_status(servers[0].admin_addr).await;
        st["fleet"]["registry_up"] == false
            && st["fleet"]["replicas"].as_array().unwrap().len() == 3
    })
    .await;
    assert_eq!(
        admin_status(servers[0].admin_addr).await["fleet"]["fallback_divisor"],
        3
    );
    let text = scrape(&servers[0]).await;
    assert_eq!(metric(&text, "tollgate_fleet_replicas", &[]), 3.0);
    assert_eq!(metric(&text, "tollgate_fleet_registry_up", &[]), 0.0);
}

#[tokio::test]
async fn a_replica_that_dies_is_dropped_after_the_ttl_and_one_that_stops_leaves_at_once() {
    let redis = shared_redis();
    let prefix = unique_prefix("fleetttl");
    let a = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    let b = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    let dir = temp_dir("fleet-serve");
    let c = Serve::start(
        &dir,
        CONFIG,
        &["--redis", &redis.url(), "--prefix", &prefix],
    )
    .await;
    until_all_see(
        &[a.admin_addr, b.admin_addr, c.admin_addr],
        3,
        SEE_EACH_OTHER,
    )
    .await;
    let dead = admin_status(c.admin_addr).await["fleet"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // SIGKILL: no goodbye. The others drop it once its last beat is older than the TTL.
    c.signal(libc::SIGKILL);
    until_all_see(&[a.admin_addr, b.admin_addr], 2, DROPPED).await;
    assert!(!fleet_ids(a.admin_addr).await.contains(&dead));
    assert_eq!(
        admin_status(a.admin_addr).await["fleet"]["fallback_divisor"],
        2
    );

    // A clean stop leaves the registry before the process is done.
    let gone = admin_status(b.admin_addr).await["fleet"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.stop().await;
    let seen_key = format!("{prefix}:{{{prefix}:fleet}}:seen");
    let mut conn = redis.conn();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&seen_key)
        .arg(&gone)
        .query(&mut conn)
        .unwrap();
    assert_eq!(score, None, "{gone} still in {seen_key}");
    // The others count it until its TTL (the safe side), then no more.
    until_all_see(&[a.admin_addr], 1, DROPPED).await;
    assert_eq!(
        admin_status(a.admin_addr).await["fleet"]["fallback_divisor"],
        1
    );
}

#[tokio::test]
async fn on_a_redis_cluster_the_registry_is_one_slot_and_two_replicas_see_each_other() {
    let cluster = shared_cluster();
    let rule = CONFIG.split_once("[[rule]]").unwrap().1;
    let config = format!("{}[[rule]]{rule}", cluster.config_section("2s"));
    let prefix = unique_prefix("fleetcl");
    let a = TestServer::start(&config, None, &prefix).await;
    let b = TestServer::start(&config, None, &prefix).await;
    until_all_see(&[a.admin_addr, b.admin_addr], 2, SEE_EACH_OTHER).await;
    assert_eq!(
        admin_status(a.admin_addr).await["fleet"]["fallback_divisor"],
        2
    );
}

#[tokio::test]
async fn a_lost_registry_is_logged_once_each_way_and_back_empty_never_lowers_the_count() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("fleetlog");
    let args = ["--redis", &redis.url(), "--prefix", &prefix];
    let replicas = [
        Serve::start(&temp_dir("fleet-log-a"), CONFIG, &args).await,
        Serve::start(&temp_dir("fleet-log-b"), CONFIG, &args).await,
    ];
    let admins: Vec<_> = replicas.iter().map(|r| r.admin_addr).collect();
    until_all_see(&admins, 2, SEE_EACH_OTHER).await;

    redis.kill();
    // Several failed beats (one every 2 s), one line each.
    eventually(SEE_EACH_OTHER, || async {
        let mut gone = true;
        for r in &replicas {
            gone &= admin_status(r.admin_addr).await["fleet"]["seen_ms_ago"]
                .as_u64()
                .is_some_and(|ms| ms > 5000);
        }
        gone
    })
    .await;
    for r in &replicas {
        let entering = r.log_line("fleet registry unreachable").await;
        assert!(entering.contains("live=2"), "{entering}");
        assert_eq!(
            metric(&r.metrics().await, "tollgate_fleet_registry_up", &[]),
            0.0
        );
    }

    // Back, empty: whichever beats first finds itself alone in Redis, but
    // the other was seen within the TTL: the count never drops.
    redis.restart();
    let seen_key = format!("{prefix}:{{{prefix}:fleet}}:seen");
    eventually(SEE_EACH_OTHER, || async {
        let Some(mut conn) = redis.try_conn() else {
            return false;
        };
        redis::cmd("ZCARD")
            .arg(&seen_key)
            .query::<u64>(&mut conn)
            .is_ok_and(|n| n == 2)
    })
    .await;
    until_all_see(&admins, 2, SEE_EACH_OTHER).await;
    for r in &replicas {
        r.log_line("fleet registry back").await;
        let log = r.log();
        assert_eq!(
            log.matches("fleet registry unreachable").count(),
            1,
            "{log}"
        );
        assert_eq!(log.matches("fleet registry back").count(), 1, "{log}");
        // 0 -> 1 or 0 -> 2 at start; never 2 -> 1 on the way back.
        assert!(!log.contains("was=2"), "{log}");
        assert_eq!(
            metric(&r.metrics().await, "tollgate_fleet_replicas", &[]),
            2.0
        );
    }
}
