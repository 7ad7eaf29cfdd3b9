//! The allowlist's history going wrong under a node, each case injected
//! against real Redis: events trimmed while a real `tollgate serve` is
//! SIGSTOPped, old events appearing again, an event of an unknown version, a
//! Redis gone backwards. Each time the node resyncs (counted by reason) and
//! ends equal to the listing.

use std::time::Duration;

use crate::support::allowlist::{
    add_entry, allow_keys, gate_at, gate_config, listing, remove_entry, resyncs, state_file,
    table_of, unplanned_resyncs,
};
use crate::support::binary::Serve;
use crate::support::server::readyz;
use crate::support::{eventually, metric, shared_redis, temp_dir, unique_prefix, TestServer};

#[tokio::test]
async fn a_paused_follower_whose_events_were_trimmed_resyncs_on_the_gap_and_matches_the_listing() {
    let prefix = unique_prefix("resync");
    let url = shared_redis().url();
    let admin = TestServer::start(&gate_config("1h", None), Some(&url), &prefix).await;
    let dir = temp_dir("sigstop");
    let state = dir.join("state.json");
    let node = Serve::start(
        &dir,
        &gate_config("1h", Some(&state)),
        &["--redis", &url, "--prefix", &prefix],
    )
    .await;

    add_entry(&admin, "192.0.2.1", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(node.addr, "192.0.2.1").await == 200
    })
    .await;

    node.signal(libc::SIGSTOP);
    for i in 10..20 {
        add_entry(&admin, &format!("198.51.100.{i}"), "1h").await;
    }
    remove_entry(&admin, "192.0.2.1%2F32").await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(allow_keys(&prefix).events)
        .arg("MAXLEN")
        .arg(0)
        .query(&mut shared_redis().conn())
        .unwrap();
    node.signal(libc::SIGCONT);

    eventually(Duration::from_secs(5), || async {
        metric(
            &node.metrics().await,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "gap")],
        ) >= 1.0
    })
    .await;
    assert_eq!(gate_at(node.addr, "192.0.2.1").await, 403, "the removal");
    for i in 10..20 {
        assert_eq!(gate_at(node.addr, &format!("198.51.100.{i}")).await, 200);
    }
    // The node's table, as its state file shows it, is the listing exactly.
    let truth = listing(&admin).await;
    assert_eq!(truth.2.len(), 10);
    eventually(Duration::from_secs(3), || async {
        state_file(&state).as_ref() == Some(&truth)
    })
    .await;
    let body = readyz(node.admin_addr).await.1;
    assert!(body.contains("allowlist in sync"), "{body}");
}

#[tokio::test]
async fn old_events_appearing_after_the_node_position_make_it_resync_as_history_was_rewritten() {
    let prefix = unique_prefix("dup");
    let url = shared_redis().url();
    let n = TestServer::start(&gate_config("1h", None), Some(&url), &prefix).await;
    add_entry(&n, "192.0.2.1", "1h").await;
    remove_entry(&n, "192.0.2.1").await;
    add_entry(&n, "192.0.2.2", "1h").await;
    eventually(Duration::from_secs(2), || async {
        n.app.allowlist.table().seq == 3
    })
    .await;
    let before = table_of(&n.app);

    // Events 1 (upsert .1) and 2 (remove .1) once more after the node's
    // position, as a failover to a replica with another history would show them.
    let mut conn = shared_redis().conn();
    let old: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(allow_keys(&prefix).events)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    for id in old.ids.iter().take(2) {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(allow_keys(&prefix).events).arg("*");
        for (k, v) in &id.map {
            xadd.arg(k)
                .arg(redis::from_redis_value_ref::<String>(v).unwrap());
        }
        let new_id: String = xadd.query(&mut conn).unwrap();
        // meta and stream agree, as they would on the rewritten side.
        let _: () = redis::cmd("HSET")
            .arg(allow_keys(&prefix).meta)
            .arg("last_id")
            .arg(new_id)
            .query(&mut conn)
            .unwrap();
    }
    eventually(Duration::from_secs(3), || async {
        resyncs(&n, "backwards").await == 1.0
    })
    .await;
    // The snapshot is Redis's own list: the re-delivered upsert of .1 is not in it.
    assert_eq!(table_of(&n.app), before);
    assert_eq!(table_of(&n.app), listing(&n).await);
    assert_eq!(gate_at(n.addr, "192.0.2.1").await, 403);
    add_entry(&n, "192.0.2.3", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(n.addr, "192.0.2.3").await == 200
    })
    .await;
    assert_eq!(unplanned_resyncs(&n).await, 1.0, "one resync, backwards");
}

#[tokio::test]
async fn an_event_of_an_unknown_version_is_not_applied_and_the_node_resyncs() {
    let prefix = unique_prefix("ver");
    let url = shared_redis().url();
    let n = TestServer::start(&gate_config("1h", None), Some(&url), &prefix).await;
    let first = add_entry(&n, "192.0.2.1", "1h").await;
    eventually(Duration::from_secs(2), || async {
        n.app.allowlist.table().seq == 1
    })
    .await;
    let epoch = n.app.allowlist.table().epoch.clone();
    let _: String = redis::cmd("XADD")
        .arg(allow_keys(&prefix).events)
        .arg("*")
        .arg(&[
            ("epoch", epoch.as_str()),
            ("seq", "2"),
            ("op", "upsert"),
            ("cidr", "192.0.2.66/32"),
            ("expires_at", "0"),
            ("note", ""),
            ("actor", "future"),
            ("ver", "2"),
        ])
        .query(&mut shared_redis().conn())
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        resyncs(&n, "unknown_event").await == 1.0
    })
    .await;
    assert_eq!(gate_at(n.addr, "192.0.2.66").await, 403, "never applied");
    assert_eq!(table_of(&n.app), listing(&n).await);
    assert_eq!(first["seq"], 1);
}

#[tokio::test]
async fn a_redis_that_went_backwards_makes_the_node_resync_to_it() {
    let prefix = unique_prefix("back");
    let url = shared_redis().url();
    let n = TestServer::start(&gate_config("1h", None), Some(&url), &prefix).await;
    add_entry(&n, "192.0.2.1", "1h").await;
    add_entry(&n, "192.0.2.2", "1h").await;
    eventually(Duration::from_secs(2), || async {
        n.app.allowlist.table().seq == 2
    })
    .await;
    // As after a failover to a replica that had not seen the second write.
    let mut conn = shared_redis().conn();
    let _: () = redis::cmd("HSET")
        .arg(allow_keys(&prefix).meta)
        .arg("seq")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(allow_keys(&prefix).entries)
        .arg("192.0.2.2/32")
        .query(&mut conn)
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        resyncs(&n, "backwards").await == 1.0
    })
    .await;
    assert_eq!(gate_at(n.addr, "192.0.2.2").await, 403);
    assert_eq!(table_of(&n.app), listing(&n).await);
    add_entry(&n, "192.0.2.3", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(n.addr, "192.0.2.3").await == 200
    })
    .await;
}
