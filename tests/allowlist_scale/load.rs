//! Many entries at once: three nodes resyncing 200 000 entries while limiter
//! calls keep succeeding, 20 000 entries expiring in one second. What they
//! assert is the work each Redis call on the allowlist's keys was asked to do
//! (a page of 200, a reap of 25; read from SLOWLOG at threshold 0) and how
//! many calls there were, never how long a call took: that measures the
//! machine (a page of 200 was seen at 9–64 ms on a busy one, issue #25) and
//! is the benchmark's (`scripts/bench_allowlist.py`, bench/README).

use super::*;

/// Decisions of the limited rule made by `on_redis_error`.
async fn fallbacks(n: &TestServer) -> f64 {
    let text = scrape(n).await;
    ["fallback_allowed", "fallback_limited"]
        .iter()
        .map(|o| {
            metric(
                &text,
                "tollgate_decisions_total",
                &[("rule", "api"), ("outcome", o)],
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_resyncing_200000_entries_at_once_read_it_in_bounded_pages_and_limiter_calls_keep_succeeding(
) {
    let _heavy = heavy().await;
    let (redis, mut conn) = logged_redis();
    let prefix = unique_prefix("scale_storm");
    populate(&mut conn, &prefix, 200_000, |_| 0);
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut conn).unwrap();

    // About 1 000 pages each at up to 500 a second, jittered over up to 2 s;
    // all three together at most 400 a second (the fleet's budget).
    let url = redis.url();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(TestServer::launch(&config(500, "10s", "1s"), Some(&url), &prefix).await);
    }
    // Limiter calls need the limiter's connection: count from when each node has it.
    let mut baseline = Vec::new();
    for n in &nodes {
        eventually(Duration::from_secs(10), || async {
            metric(&scrape(n).await, "tollgate_redis_up", &[]) == 1.0
        })
        .await;
        // And its first call through Redis is made (scripts loaded).
        eventually(Duration::from_secs(10), || async {
            let _ = api_check(&reqwest::Client::new(), n).await;
            let text = scrape(n).await;
            metric(
                &text,
                "tollgate_decisions_total",
                &[("rule", "api"), ("outcome", "allowed")],
            ) > 0.0
        })
        .await;
        baseline.push(fallbacks(n).await);
    }
    assert!(
        !nodes.iter().all(|n| n.app.allowlist.is_synced()),
        "the traffic must overlap the resyncs"
    );
    let client = reqwest::Client::new();
    let mut decided = 0u32;
    // A loose bound: the paging takes about 3 × 1 000 / 400 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !nodes.iter().all(|n| n.app.allowlist.is_synced()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes never finished their snapshots"
        );
        for n in &nodes {
            let r = api_check(&client, n).await.unwrap();
            assert_eq!(r.status(), 200);
            decided += 1;
        }
    }
    for (n, before) in nodes.iter().zip(baseline) {
        assert_eq!(n.app.allowlist.table().len(), 200_000);
        assert_eq!(
            fallbacks(n).await,
            before,
            "limiter calls fell back while the nodes resynced"
        );
        let text = scrape(n).await;
        assert!(
            metric(
                &text,
                "tollgate_decisions_total",
                &[("rule", "api"), ("outcome", "allowed")]
            ) > 0.0
        );
    }
    assert!(decided > 0);
    eprintln!("200 000-entry resync of 3 nodes: {decided} limiter calls meanwhile");
    let calls =
        assert_bounded_allowlist_calls(&mut conn, &prefix, "200 000-entry resync of 3 nodes");
    // Each node read the whole list once, a page at a time: about 1 000 pages
    // of 200 (HSCAN's COUNT is a floor while entries remain, and a page may
    // also take the rest of a hash bucket's chain: a few more entries).
    let per_node = 200_000 / tollgate::allowlist::redis_store::SNAPSHOT_PAGE as u64;
    assert!(
        (3 * per_node * 9 / 10..=3 * (per_node + per_node / 10)).contains(&calls.pages),
        "{} pages for 3 nodes of about {per_node} pages each",
        calls.pages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_entries_expiring_in_one_second_stop_matching_on_time_are_reaped_in_bounded_calls_and_get_one_expire_event_each(
) {
    let _heavy = heavy().await;
    let (redis, mut conn) = logged_redis();
    let prefix = unique_prefix("scale_expiry");
    let due = redis_now_ms(&mut conn) + 5_000;
    populate(&mut conn, &prefix, 20_001, |i| {
        if i == 20_000 {
            0
        } else {
            due + u64::from(i % 1000)
        }
    });
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut conn).unwrap();
    let url = redis.url();
    let a = TestServer::launch(&config(10_000, "0s", "100ms"), Some(&url), &prefix).await;
    let b = TestServer::launch(&config(10_000, "0s", "100ms"), Some(&url), &prefix).await;
    eventually(Duration::from_secs(60), || {
        let ready = a.app.allowlist.is_synced() && b.app.allowlist.is_synced();
        async move { ready }
    })
    .await;
    let ip = |i: u32| {
        v4(i)
            .trim_end_matches("/32")
            .parse::<std::net::IpAddr>()
            .unwrap()
    };
    for n in [&a, &b] {
        let t = n.app.allowlist.table();
        if t.clock.now_ms() + 100 < due {
            assert!(n.app.allowlist.contains(ip(5)), "matches before its expiry");
        }
    }
    // On time: once a node's clock passes an entry's expiry it stops matching,
    // whether or not the reaper's event has arrived yet.
    eventually(Duration::from_secs(30), || {
        let t = a.app.allowlist.table();
        async move { t.clock.now_ms() >= due + 1000 }
    })
    .await;
    for n in [&a, &b] {
        // Each node's own Redis-time clock (their offsets differ by up to half a round trip).
        eventually(Duration::from_secs(30), || {
            let t = n.app.allowlist.table();
            async move { t.clock.now_ms() >= due + 1000 }
        })
        .await;
        let t = n.app.allowlist.table();
        let now = t.clock.now_ms();
        for i in (0..20_000).step_by(7) {
            assert!(t.lookup_at(ip(i), now).is_none(), "{} still matches", v4(i));
        }
        assert!(n.app.allowlist.contains(ip(20_000)));
    }
    // Reaped: every node's table holds the permanent entry alone.
    eventually(Duration::from_secs(120), || {
        let done = [&a, &b].iter().all(|n| n.app.allowlist.table().len() == 1);
        async move { done }
    })
    .await;
    let calls =
        assert_bounded_allowlist_calls(&mut conn, &prefix, "20 000 entries expiring at once");
    // At most REAP_BATCH entries a call: 20 000 take at least 800 calls.
    let batch = tollgate::allowlist::redis_store::REAP_BATCH;
    assert!(calls.reaps >= 20_000 / batch, "{calls:?}");
    let events = stream(&mut conn, &prefix);
    let mut per_cidr: BTreeMap<String, u32> = BTreeMap::new();
    for e in &events {
        let op: String = e.get("op").unwrap();
        assert_eq!(op, "expire");
        *per_cidr.entry(e.get("cidr").unwrap()).or_default() += 1;
    }
    assert_eq!(per_cidr.len(), 20_000);
    assert!(per_cidr.values().all(|&n| n == 1), "an entry expired twice");
}
