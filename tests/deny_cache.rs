//! The deny cache: a denied key is answered from memory until retry_after.

use std::time::Duration;

use crate::support::{
    eventually, metric, scrape, shared_redis, unique_prefix, RedisServer, TestServer,
};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
key = "ip"
limits = ["2/h"]
"#;

async fn status(s: &TestServer, ip: &str) -> u16 {
    s.check_with("x-forwarded-for", ip).await
}

fn evalsha_calls(redis: &RedisServer) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_denied_key_is_answered_without_redis_until_retry_after() {
    let redis = RedisServer::start();
    let s = TestServer::start(CONFIG, Some(&redis.url()), &unique_prefix("deny")).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(status(&s, "203.0.113.1").await, 429);
    let calls = evalsha_calls(&redis);
    for _ in 0..50 {
        assert_eq!(status(&s, "203.0.113.1").await, 429);
    }
    assert_eq!(
        evalsha_calls(&redis),
        calls,
        "denied requests reached Redis"
    );
    assert_eq!(
        metric(&scrape(&s).await, "tollgate_deny_cache_hits_total", &[]),
        50.0
    );
    // Another client is still decided by Redis.
    assert_eq!(status(&s, "203.0.113.2").await, 200);
    assert_eq!(evalsha_calls(&redis), calls + 1);
}

#[tokio::test]
async fn a_reset_on_one_replica_clears_the_deny_cache_of_another() {
    let redis = shared_redis();
    let prefix = unique_prefix("deny-reset");
    let a = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    let b = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    assert_eq!(status(&a, "198.51.100.9").await, 200);
    assert_eq!(status(&a, "198.51.100.9").await, 200);
    assert_eq!(status(&b, "198.51.100.9").await, 429);
    assert_eq!(status(&b, "198.51.100.9").await, 429, "now cached on b");
    let r = a
        .admin_client()
        .delete(a.admin_url("/v1/limits/login/198.51.100.9"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(1), || async {
        status(&b, "198.51.100.9").await == 200
    })
    .await;
}
