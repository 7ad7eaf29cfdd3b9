//! The allowlist when Redis is lost: FLUSHALL, a Redis restarted empty
//! (SHUTDOWN NOSAVE), a Redis killed while an entry expires, a node restarted
//! from its state file while Redis is down. The old table keeps serving
//! (fail-static), expiry still happens, and every node converges after (the
//! fleet putting the list back: `allowlist_fleet_restore`).

use std::time::Duration;

use crate::support::allowlist::{
    add_entry, all_answer, flush_holding_the_restore_lock, gate_at, gate_config, listing, now_ms,
    release_restore_lock, state_file, table_of, try_listing, unplanned_resyncs,
};
use crate::support::binary::{output_text, tollgate};
use crate::support::redis::PERSISTENT;
use crate::support::server::readyz;
use crate::support::{
    eventually, metric, scrape, temp_dir, unique_prefix, RedisServer, TestServer,
};

/// Two gate nodes on `url` under `prefix`, reaping every `reap_interval`.
async fn two_nodes(reap_interval: &str, url: &str, prefix: &str) -> (TestServer, TestServer) {
    let config = gate_config(reap_interval, None);
    (
        TestServer::start(&config, Some(url), prefix).await,
        TestServer::start(&config, Some(url), prefix).await,
    )
}

#[tokio::test]
async fn flushall_keeps_the_old_table_serving_and_reports_source_lost_until_the_fleet_puts_it_back()
{
    let redis = RedisServer::start();
    let prefix = unique_prefix("flush");
    let (n0, n1) = two_nodes("1s", &redis.url(), &prefix).await;
    let nodes = [&n0, &n1];
    add_entry(&n0, "192.0.2.1", "1h").await;
    add_entry(&n0, "192.0.2.2", "1h").await;
    eventually(Duration::from_secs(2), || {
        all_answer(&nodes, "192.0.2.2", 200)
    })
    .await;
    let old_epoch = n0.app.allowlist.table().epoch.clone();
    let before = listing(&n0).await;

    // A node restoring (the test holds the election's lock): the fleet waits.
    flush_holding_the_restore_lock(&mut redis.conn(), &prefix);
    for n in nodes {
        eventually(Duration::from_secs(3), || async {
            let (status, body) = readyz(n.admin_addr).await;
            status == 200 && body.contains("source_lost")
        })
        .await;
        assert_eq!(
            metric(&scrape(n).await, "tollgate_allowlist_source_lost", &[]),
            1.0
        );
    }
    assert!(
        all_answer(&nodes, "192.0.2.1", 200).await,
        "the old table still serves"
    );
    assert!(all_answer(&nodes, "192.0.2.2", 200).await);

    release_restore_lock(&mut redis.conn(), &prefix);
    eventually(Duration::from_secs(10), || async {
        try_listing(&n0).await.is_some_and(|l| l.2 == before.2)
            && nodes.iter().all(|n| table_of(&n.app).0 != old_epoch)
    })
    .await;
    for n in nodes {
        let (epoch, seq, entries) = table_of(&n.app);
        assert_ne!(epoch, old_epoch);
        assert_eq!((seq, entries), (listing(&n0).await.1, before.2.clone()));
        let text = scrape(n).await;
        assert_eq!(metric(&text, "tollgate_allowlist_source_lost", &[]), 0.0);
        assert!(
            metric(
                &text,
                "tollgate_allowlist_resyncs_total",
                &[("reason", "epoch")]
            ) >= 1.0
        );
        assert!(readyz(n.admin_addr).await.1.contains("in sync"));
    }
}

#[tokio::test]
async fn a_redis_restarted_empty_keeps_the_old_table_serving_and_an_operator_restore_converges_every_node(
) {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("nosave");
    let (n0, n1) = two_nodes("1s", &url, &prefix).await;
    let nodes = [&n0, &n1];
    add_entry(&n0, "203.0.113.0/24", "1h").await;
    add_entry(&n0, "2001:db8::/48", "1h").await;
    eventually(Duration::from_secs(2), || {
        all_answer(&nodes, "2001:db8::7", 200)
    })
    .await;
    let before = listing(&n0).await;
    let dir = temp_dir("nosave");
    let export = dir.join("allowlist.json");
    let o = tollgate(&[
        "allow",
        "export",
        "--output",
        export.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));

    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query::<()>(&mut redis.conn());
    redis.restart();
    // The fleet may put it back first: either way, no node refuses meanwhile.
    assert!(all_answer(&nodes, "203.0.113.9", 200).await, "fail-static");

    let o = tollgate(&[
        "allow",
        "restore",
        export.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("restored 2 entries"),
        "{}",
        output_text(&o)
    );
    eventually(Duration::from_secs(3), || async {
        try_listing(&n0).await.is_some()
    })
    .await;
    let after = listing(&n0).await;
    assert_ne!(after.0, before.0, "a restore is a new epoch");
    assert_eq!(after.2, before.2, "with the same entries and expiries");
    for n in nodes {
        eventually(Duration::from_secs(3), || async {
            table_of(&n.app) == after && readyz(n.admin_addr).await.1.contains("in sync")
        })
        .await;
    }
}

#[tokio::test]
async fn an_entry_expires_on_every_node_while_redis_is_down_and_state_converges_after() {
    let mut redis = RedisServer::start_with(PERSISTENT);
    let url = redis.url();
    let prefix = unique_prefix("down");
    let (n0, n1) = two_nodes("200ms", &url, &prefix).await;
    let nodes = [&n0, &n1];
    let short = add_entry(&n0, "192.0.2.10", "4s").await;
    add_entry(&n0, "192.0.2.20", "1h").await;
    let expires_at = short["expires_at"].as_u64().unwrap();
    eventually(Duration::from_secs(2), || {
        all_answer(&nodes, "192.0.2.10", 200)
    })
    .await;

    redis.kill();
    for n in nodes {
        eventually(Duration::from_secs(5), || async {
            let (status, body) = readyz(n.admin_addr).await;
            status == 200 && body.contains("stale")
        })
        .await;
    }
    eventually(Duration::from_secs(6), || {
        all_answer(&nodes, "192.0.2.10", 403)
    })
    .await;
    assert!(
        now_ms() + 100 >= expires_at,
        "stopped matching {} ms before its expiry",
        expires_at - now_ms()
    );
    assert!(all_answer(&nodes, "192.0.2.20", 200).await);
    for n in nodes {
        let age = metric(
            &scrape(n).await,
            "tollgate_allowlist_last_sync_age_seconds",
            &[],
        );
        assert!(age >= 1.0, "sync age {age}");
    }

    redis.restart();
    // The reaper's expire event reaches every node through the tail: no resync.
    eventually(Duration::from_secs(8), || async {
        let Some(t) = try_listing(&n0).await else {
            return false;
        };
        t.1 == 3 && t.2.len() == 1 && nodes.iter().all(|n| table_of(&n.app) == t)
    })
    .await;
    for n in nodes {
        assert_eq!(unplanned_resyncs(n).await, 0.0, "{}", scrape(n).await);
        let body = readyz(n.admin_addr).await.1;
        assert!(body.contains("in sync"), "{body}");
    }
}

#[tokio::test]
async fn a_node_restarted_while_redis_is_down_serves_its_state_file_at_once_without_expired_entries(
) {
    let mut redis = RedisServer::start_with(PERSISTENT);
    let url = redis.url();
    let prefix = unique_prefix("state");
    let dir = temp_dir("state");
    let state = dir.join("node.state");
    let cfg = gate_config("200ms", Some(&state));
    let node = TestServer::launch(&cfg, Some(&url), &prefix).await;
    let admin = TestServer::start(&gate_config("1h", None), Some(&url), &prefix).await;
    add_entry(&admin, "198.51.100.0/24", "1h").await;
    let short = add_entry(&admin, "203.0.113.5", "2s").await;
    let expires_at = short["expires_at"].as_u64().unwrap();
    eventually(Duration::from_secs(3), || async {
        state_file(&state).is_some_and(|s| s.1 == 2 && s.2.len() == 2)
    })
    .await;
    node.stop().await;
    admin.stop().await;
    redis.kill();
    eventually(Duration::from_secs(5), || async {
        now_ms() > expires_at + 100
    })
    .await;

    let node = TestServer::launch(&cfg, Some(&url), &prefix).await;
    assert_eq!(
        gate_at(node.addr, "198.51.100.7").await,
        200,
        "served at once"
    );
    assert_eq!(
        gate_at(node.addr, "203.0.113.5").await,
        403,
        "expired meanwhile"
    );
    eventually(Duration::from_secs(3), || async {
        readyz(node.admin_addr).await.1.contains("stale")
    })
    .await;

    redis.restart();
    let admin = TestServer::start(&gate_config("1h", None), Some(&url), &prefix).await;
    // The node resumes its tail: the reaper's expire event arrives, no snapshot.
    eventually(Duration::from_secs(8), || async {
        try_listing(&admin)
            .await
            .is_some_and(|t| t.1 == 3 && table_of(&node.app) == t)
    })
    .await;
    add_entry(&admin, "192.0.2.99", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(node.addr, "192.0.2.99").await == 200
    })
    .await;
    let text = scrape(&node).await;
    for reason in ["start", "gap", "epoch", "backwards", "unknown_event"] {
        assert_eq!(
            metric(
                &text,
                "tollgate_allowlist_resyncs_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    node.stop().await;
}
