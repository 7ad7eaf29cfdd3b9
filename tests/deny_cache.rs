//! The deny cache: a denied key is answered from memory until retry_after.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{
    eventually, free_port, metric, scrape, shared_cluster, shared_redis, unique_prefix,
    RedisServer, TestServer,
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

async fn channel_up(s: &TestServer) -> bool {
    metric(&scrape(s).await, "tollgate_reset_channel_up", &[]) == 1.0
}

/// Until its reset subscription is live, a replica caches no denial.
async fn wait_channel_up(s: &TestServer) {
    eventually(Duration::from_secs(3), || channel_up(s)).await;
}

async fn reset(s: &TestServer, ip: &str) {
    let r = s
        .admin_client()
        .delete(s.admin_url(&format!("/v1/limits/login/{ip}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The decisions' Redis calls, as tollgate times them (`redis.check` and
/// `check_all` only). Redis's own EVALSHA count also holds the allowlist and
/// denylist reapers' calls, one a second each, which a loop on a busy machine
/// spans: it cannot tell a decision's call from a reaper's.
pub(crate) async fn decision_calls(s: &TestServer) -> f64 {
    metric(
        &scrape(s).await,
        "tollgate_redis_call_duration_seconds_count",
        &[],
    )
}

/// Every EVALSHA Redis ran (decisions, leases, and the list reapers' one call
/// a second each): for bounds loose enough to hold those few.
pub(crate) fn evalsha_calls(redis: &RedisServer) -> u64 {
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
    wait_channel_up(&s).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(status(&s, "203.0.113.1").await, 429);
    let calls = decision_calls(&s).await;
    assert!(calls >= 3.0, "the first three decisions asked Redis");
    for _ in 0..50 {
        assert_eq!(status(&s, "203.0.113.1").await, 429);
    }
    assert_eq!(
        decision_calls(&s).await,
        calls,
        "denied requests reached Redis"
    );
    assert_eq!(
        metric(&scrape(&s).await, "tollgate_deny_cache_hits_total", &[]),
        50.0
    );
    // Another client is still decided by Redis.
    assert_eq!(status(&s, "203.0.113.2").await, 200);
    assert_eq!(decision_calls(&s).await, calls + 1.0);
}

#[tokio::test]
async fn a_reset_on_one_replica_clears_the_deny_cache_of_another() {
    let redis = shared_redis();
    let prefix = unique_prefix("deny-reset");
    let a = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    let b = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    wait_channel_up(&b).await;
    assert_eq!(status(&a, "198.51.100.9").await, 200);
    assert_eq!(status(&a, "198.51.100.9").await, 200);
    assert_eq!(status(&b, "198.51.100.9").await, 429);
    assert_eq!(status(&b, "198.51.100.9").await, 429, "now cached on b");
    reset(&a, "198.51.100.9").await;
    eventually(Duration::from_secs(1), || async {
        status(&b, "198.51.100.9").await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resets_reach_a_cluster_replica_whose_first_seed_node_is_dead() {
    let cluster = shared_cluster();
    let mut seeds = vec![format!("\"redis://127.0.0.1:{}\"", free_port())];
    seeds.extend(cluster.urls().iter().map(|u| format!("\"{u}\"")));
    let config = format!(
        "[redis]\ncluster = [{}]\ntimeout = \"500ms\"\n{CONFIG}",
        seeds.join(", ")
    );
    let prefix = unique_prefix("deny-seed");
    let a = TestServer::start(&config, None, &prefix).await;
    let b = TestServer::start(&config, None, &prefix).await;
    wait_channel_up(&b).await;
    assert_eq!(status(&a, "198.51.100.10").await, 200);
    assert_eq!(status(&a, "198.51.100.10").await, 200);
    assert_eq!(status(&b, "198.51.100.10").await, 429);
    assert_eq!(status(&b, "198.51.100.10").await, 429, "now cached on b");
    reset(&a, "198.51.100.10").await;
    eventually(Duration::from_secs(2), || async {
        status(&b, "198.51.100.10").await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_half_open_reset_channel_stops_the_deny_cache_until_it_is_subscribed_again() {
    let redis = shared_redis();
    let prefix = unique_prefix("deny-halfopen");
    // b reaches Redis only through a proxy that can go silent with its sockets
    // open, as a dead peer or a dropped route leaves them; a decides directly.
    let proxy = FreezingProxy::start(redis.port).await;
    let config = CONFIG.replace(
        "limits = [\"2/h\"]",
        "limits = [\"2/h\"]\non_redis_error = \"allow\"",
    );
    let a = TestServer::start(&config, Some(&redis.url()), &prefix).await;
    let b = TestServer::start(&config, Some(&proxy.url()), &prefix).await;
    wait_channel_up(&b).await;
    assert_eq!(status(&a, "198.51.100.11").await, 200);
    assert_eq!(status(&a, "198.51.100.11").await, 200);
    assert_eq!(status(&b, "198.51.100.11").await, 429);
    assert_eq!(status(&b, "198.51.100.11").await, 429, "now cached on b");

    proxy.freeze(true);
    eventually(Duration::from_secs(6), || async { !channel_up(&b).await }).await;
    reset(&a, "198.51.100.11").await;
    let hits = metric(&scrape(&b).await, "tollgate_deny_cache_hits_total", &[]);
    // Redis is unreachable for b (on_redis_error = allow), but no stale denial is served.
    assert_eq!(status(&b, "198.51.100.11").await, 200);
    assert_eq!(
        metric(&scrape(&b).await, "tollgate_deny_cache_hits_total", &[]),
        hits,
        "answered from a deny cache that could have missed the reset"
    );

    proxy.freeze(false);
    eventually(Duration::from_secs(6), || channel_up(&b)).await;
    // Back on Redis (the breaker's probe has closed it: until then decisions
    // are on_redis_error's, which says nothing about the quota): the reset
    // key has its full quota again, and denials are cached again.
    eventually(Duration::from_secs(10), || async {
        metric(&scrape(&b).await, "tollgate_redis_up", &[]) == 1.0
    })
    .await;
    eventually(Duration::from_secs(3), || async {
        status(&b, "198.51.100.11").await == 200
    })
    .await;
    // (The call that timed out while frozen may have reached Redis after the
    // thaw and charged one unit: the 2/h quota runs out within two more.)
    let mut denied = false;
    for _ in 0..2 {
        denied |= status(&b, "198.51.100.11").await == 429;
    }
    assert!(denied, "the key's quota never ran out");
    assert_eq!(status(&b, "198.51.100.11").await, 429);
    assert!(metric(&scrape(&b).await, "tollgate_deny_cache_hits_total", &[]) > hits);
}

/// A TCP proxy to a loopback port that can stop forwarding while keeping
/// every socket open (new connections too): a half-open link.
struct FreezingProxy {
    port: u16,
    frozen: Arc<watch::Sender<bool>>,
}

impl FreezingProxy {
    async fn start(target: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(watch::Sender::new(false));
        let tx = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, tx.subscribe()));
                tokio::spawn(pump(sr, cw, tx.subscribe()));
            }
        });
        FreezingProxy { port, frozen }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = frozen.changed() => continue,
        };
        // Bytes read just before a freeze are held until it ends.
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
