//! Redis failures, injected for real: killed, stalled, restarted, scripts flushed.

use std::time::{Duration, Instant};

use crate::support::{eventually, metric, scrape, unique_prefix, RedisServer, TestServer};

fn config(timeout: &str) -> String {
    format!(
        r#"
[redis]
timeout = "{timeout}"

[[rule]]
name = "open"
match = {{ path_prefix = "/open" }}
limits = ["1/h"]
on_redis_error = "allow"

[[rule]]
name = "closed"
match = {{ path_prefix = "/closed" }}
limits = ["1/h"]
on_redis_error = "deny"

[[rule]]
name = "local"
match = {{ path_prefix = "/local" }}
limits = ["3/h"]
on_redis_error = "local"
"#
    )
}

async fn status(s: &TestServer, uri: &str) -> u16 {
    // No trusted proxy here: the original path goes in the URL (Envoy-style).
    let r = reqwest::get(s.url(&format!("/check{uri}"))).await.unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn with_redis_killed_each_on_redis_error_mode_answers_and_requests_stop_waiting_on_redis() {
    let mut redis = RedisServer::start();
    let s = TestServer::start(&config("200ms"), Some(&redis.url()), &unique_prefix("kill")).await;
    // Healthy and decided by Redis. (No denial yet: a cached denial would be
    // answered by the deny cache during the outage, exactly and without Redis.)
    assert_eq!(status(&s, "/closed").await, 200);
    assert_eq!(metric(&scrape(&s).await, "tollgate_redis_up", &[]), 1.0);

    redis.kill();
    // allow: passes; deny: 429; local: the in-process limiter's 3/h.
    for _ in 0..5 {
        assert_eq!(status(&s, "/open").await, 200);
        assert_eq!(status(&s, "/closed").await, 429);
    }
    let local: Vec<u16> = futures::future::join_all((0..5).map(|_| status(&s, "/local"))).await;
    assert_eq!(local.iter().filter(|&&c| c == 200).count(), 3, "{local:?}");
    let text = scrape(&s).await;
    assert_eq!(metric(&text, "tollgate_redis_up", &[]), 0.0);
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "open"), ("outcome", "fallback_allowed")]
        ),
        5.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "closed"), ("outcome", "fallback_limited")]
        ),
        5.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "local"), ("outcome", "fallback_allowed")]
        ),
        3.0
    );

    // The breaker is open: 1 000 decisions make no Redis call at all (the error
    // count does not move: a call that waited for the 200 ms timeout would
    // count one), so none waits for the timeout.
    let errors_before = redis_errors(&scrape(&s).await);
    for _ in 0..1000 {
        assert_eq!(status(&s, "/open").await, 200);
    }
    assert_eq!(
        redis_errors(&scrape(&s).await),
        errors_before,
        "decisions still called Redis"
    );

    // Redis returns (empty: no scripts loaded): decisions are back on Redis
    // after the probe's next try (at most 1 s apart). The wait's deadline (at
    // least support::wait::PATIENCE) is far above that (issue #25).
    redis.restart();
    eventually(Duration::from_secs(10), || async {
        status(&s, "/closed").await == 200
    })
    .await;
    assert_eq!(
        status(&s, "/closed").await,
        429,
        "the counter lives in Redis again"
    );
    assert_eq!(metric(&scrape(&s).await, "tollgate_redis_up", &[]), 1.0);
}

fn redis_errors(text: &str) -> f64 {
    ["timeout", "unreachable", "server"]
        .iter()
        .map(|k| metric(text, "tollgate_redis_errors_total", &[("kind", k)]))
        .sum()
}

#[tokio::test]
async fn a_stalled_redis_takes_the_timeout_path_then_recovers() {
    let redis = RedisServer::start();
    let s = TestServer::start(&config("25ms"), Some(&redis.url()), &unique_prefix("stall")).await;
    assert_eq!(status(&s, "/closed").await, 200);
    // Every client of this Redis is paused for 1.5 s: calls hang, not fail.
    let mut admin = redis.conn();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query::<()>(&mut admin)
        .unwrap();
    let started = Instant::now();
    assert_eq!(status(&s, "/open").await, 200, "on_redis_error = allow");
    // Timed out after 25 ms, not answered after the 1.5 s stall: 1 s is over
    // 10x a 25 ms timeout plus the longest call seen on a busy machine (64 ms).
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the call waited for the stall"
    );
    let text = scrape(&s).await;
    assert!(
        metric(&text, "tollgate_redis_errors_total", &[("kind", "timeout")]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "open"), ("outcome", "fallback_allowed")]
        ),
        1.0
    );
    // When the pause ends the probe closes the breaker.
    eventually(Duration::from_secs(5), || async {
        metric(&scrape(&s).await, "tollgate_redis_up", &[]) == 1.0
    })
    .await;
    assert_eq!(
        status(&s, "/closed").await,
        429,
        "the earlier hit is still counted in Redis"
    );
}

#[tokio::test]
async fn flushed_scripts_are_reloaded_through_noscript_and_the_call_still_counts() {
    let redis = RedisServer::start();
    let s = TestServer::start(
        &config("1s"),
        Some(&redis.url()),
        &unique_prefix("noscript"),
    )
    .await;
    let mut conn = redis.conn();
    let loads_before = script_loads(&mut conn);
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(status(&s, "/closed").await, 200);
    assert_eq!(
        status(&s, "/closed").await,
        429,
        "decided by Redis, not by on_redis_error = deny"
    );
    let text = scrape(&s).await;
    assert_eq!(redis_errors(&text), 0.0, "{text}");
    // The limiter's script is in Redis again. (How many SCRIPT LOADs ran is
    // not this test's to count: the list reapers, one call a second each,
    // reload their own scripts after a flush too.)
    assert!(
        script_loads(&mut conn) > loads_before,
        "NOSCRIPT: loaded again"
    );
    let limiter_script = redis::Script::new(tollgate::limiter::script_source(
        tollgate::limiter::Algorithm::FixedWindow,
    ));
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(limiter_script.get_hash())
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, [true], "the limiter's script was loaded again");
}

fn script_loads(conn: &mut redis::Connection) -> u64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_script|load:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// What `/v1/status`, `/metrics` and `/readyz` say about Redis.
async fn health(s: &TestServer) -> (bool, f64, String) {
    let (code, st) = s.admin(reqwest::Method::GET, "/v1/status").await;
    assert_eq!(code, 200);
    let metric_up = metric(&scrape(s).await, "tollgate_redis_up", &[]);
    let (_, words) = crate::support::server::readyz(s.admin_addr).await;
    (st["redis"]["up"].as_bool().unwrap(), metric_up, words)
}

/// Redis going away with no decision to notice it: the health PING (every
/// second, README "When things fail") turns `tollgate_redis_up`, `/v1/status`
/// and `/readyz` to "down" and back. The waits' deadlines (at least
/// `support::wait::PATIENCE`) are far above the documented detection time of
/// about 2 s, so a busy machine does not fail them.
#[tokio::test]
async fn redis_killed_with_no_traffic_is_reported_down_then_up_again() {
    let mut redis = RedisServer::start();
    let s = TestServer::start(&config("200ms"), Some(&redis.url()), &unique_prefix("idle")).await;
    eventually(Duration::from_secs(10), || async { health(&s).await.0 }).await;

    redis.kill();
    // No decision is asked from here on: only the health check can tell.
    eventually(Duration::from_secs(10), || async {
        let (up, metric_up, words) = health(&s).await;
        !up && metric_up == 0.0 && words.contains("Redis unreachable: rules apply")
    })
    .await;

    redis.restart();
    // Every surface says "up" again (the allowlist follower's own retry too).
    eventually(Duration::from_secs(10), || async {
        let (up, metric_up, words) = health(&s).await;
        up && metric_up == 1.0 && !words.contains("unreachable")
    })
    .await;
}
