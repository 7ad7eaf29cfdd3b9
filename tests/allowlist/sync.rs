//! Changes reaching every node: adds, removes, TTL expiry (once, with three
//! reapers), re-adds that extend, a new epoch or a gap in seq.

use super::*;

#[tokio::test]
async fn an_entry_added_on_one_node_passes_everywhere_and_its_removal_denies_everywhere() {
    let (prefix, s) = servers(3, "1s").await;
    assert!(all_answer(&s, "203.0.113.7", 403).await);
    let r = ask(&s[0], "/check/nginx", "/admin", "203.0.113.7").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-tollgate-reason"], "not_allowlisted");
    let r = ask(&s[0], "/check", "/admin", "203.0.113.7").await;
    assert_eq!(r.headers()["x-tollgate-reason"], "not_allowlisted");
    let metrics = scrape(&s[0]).await;
    assert!(
        metrics.contains(r#"tollgate_decisions_total{rule="admin",outcome="not_allowlisted"} 3"#),
        "{metrics}"
    );

    let before = redis_now_ms();
    let (status, body) = add(
        &s[0],
        json!({"cidr": "203.0.113.7", "ttl": "1h", "note": "login alice"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["cidr"], "203.0.113.7/32");
    assert_eq!(body["note"], "login alice");
    assert_eq!(body["actor"], "admin-api");
    assert_eq!(body["seq"], 1);
    let created = body["created_at"].as_u64().unwrap();
    assert!(created >= before, "{body}");
    assert_eq!(body["expires_at"].as_u64().unwrap(), created + 3_600_000);

    eventually(Duration::from_secs(1), || {
        all_answer(&s, "203.0.113.7", 200)
    })
    .await;
    assert!(all_answer(&s, "203.0.113.8", 403).await);

    let (status, body) = admin(
        &s[1],
        reqwest::Method::DELETE,
        "/v1/allowlist/203.0.113.7%2F32",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seq"], 2);
    eventually(Duration::from_secs(1), || {
        all_answer(&s, "203.0.113.7", 403)
    })
    .await;
    let (status, body) = admin(&s[2], reqwest::Method::DELETE, "/v1/allowlist/203.0.113.7").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["field"], "cidr");

    let ev = events(&prefix);
    assert_eq!(ev.len(), 2, "an absent entry's removal publishes nothing");
    assert_eq!(ev[0]["op"], "upsert");
    assert_eq!(ev[0]["actor"], "admin-api");
    assert_eq!(ev[0]["note"], "login alice");
    assert_eq!(ev[0]["ver"], "1");
    assert_eq!(ev[1]["op"], "remove");
    assert_eq!(ev[1]["seq"], "2");
    assert_eq!(ev[0]["epoch"], ev[1]["epoch"]);
}

#[tokio::test]
async fn a_ttl_entry_stops_matching_everywhere_and_expires_exactly_once_with_three_reapers() {
    let (prefix, s) = servers(3, "100ms").await;
    let (status, _) = add(&s[2], json!({"cidr": "198.51.100.0/24", "ttl": "2s"})).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(1), || {
        all_answer(&s, "198.51.100.9", 200)
    })
    .await;
    eventually(Duration::from_secs(4), || {
        all_answer(&s, "198.51.100.9", 403)
    })
    .await;
    eventually(Duration::from_secs(2), || async {
        ops(&prefix, "expire", "198.51.100.0/24") == 1
    })
    .await;
    // Every reaper runs again, all at once: nothing is due any more.
    let again = futures::future::join_all(s.iter().map(|s| s.app.allowlist.reap())).await;
    assert!(again.iter().all(|r| matches!(r, Ok(0))), "{again:?}");
    assert_eq!(ops(&prefix, "expire", "198.51.100.0/24"), 1);
    assert_eq!(events(&prefix).len(), 2);
    let (_, list) = admin(&s[0], reqwest::Method::GET, "/v1/allowlist").await;
    assert_eq!(list["entries"], json!([]));
}

#[tokio::test]
async fn nodes_stop_matching_at_expiry_without_waiting_for_the_reapers_event() {
    // The reapers ran once at start and not again for an hour.
    let (prefix, s) = servers(3, "1h").await;
    let (status, _) = add(&s[0], json!({"cidr": "192.0.2.0/24", "ttl": "1s"})).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(1), || all_answer(&s, "192.0.2.1", 200)).await;
    eventually(Duration::from_secs(3), || all_answer(&s, "192.0.2.1", 403)).await;
    assert_eq!(ops(&prefix, "expire", "192.0.2.0/24"), 0);
    let still: bool = redis::cmd("HEXISTS")
        .arg(allow_keys(&prefix).entries)
        .arg("192.0.2.0/24")
        .query(&mut shared_redis().conn())
        .unwrap();
    assert!(still, "the entry was not reaped, yet no node matches it");
    let (status, _) = admin(
        &s[1],
        reqwest::Method::GET,
        "/v1/allowlist/check?ip=192.0.2.1",
    )
    .await;
    assert_eq!(status, 404, "an expired entry is not listed");
}

#[tokio::test]
async fn re_adding_before_expiry_extends_the_entry_and_the_old_expiry_does_not_remove_it() {
    let (prefix, s) = servers(3, "100ms").await;
    let (_, first) = add(&s[0], json!({"cidr": "192.0.2.128/25", "ttl": "1s"})).await;
    let old_expiry = first["expires_at"].as_u64().unwrap();
    let (status, second) = add(
        &s[1],
        json!({"cidr": "192.0.2.128/25", "ttl": "1h", "note": "again"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(second["seq"], 2);
    assert!(second["expires_at"].as_u64().unwrap() > old_expiry + 3_000_000);
    // Well past the old expiry and several reaper rounds.
    eventually(Duration::from_secs(3), || async {
        redis_now_ms() > old_expiry + 500
    })
    .await;
    assert!(all_answer(&s, "192.0.2.200", 200).await);
    assert_eq!(ops(&prefix, "expire", "192.0.2.128/25"), 0);
    let (_, list) = admin(&s[2], reqwest::Method::GET, "/v1/allowlist").await;
    let e = &list["entries"][0];
    assert_eq!(e["note"], "again");
    assert!(e["remaining_ms"].as_u64().unwrap() > 3_000_000, "{list}");
}

#[tokio::test]
async fn a_new_epoch_or_a_gap_in_seq_makes_every_node_load_a_fresh_snapshot() {
    let (prefix, s) = servers(2, "1h").await;
    add(&s[0], json!({"cidr": "192.0.2.1"})).await;
    let synced = |seq: u64| {
        let s = &s;
        move || async move { s.iter().all(|n| n.app.allowlist.table().seq == seq) }
    };
    eventually(Duration::from_secs(1), synced(1)).await;
    let first_epoch = s[0].app.allowlist.table().epoch.clone();

    // A new dataset (an intended wipe: a new, empty epoch; a Redis that lost
    // its data is put back by the fleet instead, `allowlist_fleet_restore`).
    let mut conn = shared_redis().conn();
    let (status, body) = admin(&s[1], reqwest::Method::POST, "/v1/allowlist/clear").await;
    assert_eq!(status, 200, "{body}");
    add(&s[1], json!({"cidr": "192.0.2.2"})).await;
    eventually(Duration::from_secs(2), || async {
        s.iter().all(|n| {
            let t = n.app.allowlist.table();
            t.epoch != first_epoch && t.seq == 2
        })
    })
    .await;
    assert!(all_answer(&s, "192.0.2.2", 200).await);
    assert!(
        all_answer(&s, "192.0.2.1", 403).await,
        "the old epoch's entry is gone"
    );

    // An event the nodes never saw (seq 2 is skipped): the gap makes them resync.
    let _: i64 = redis::cmd("HINCRBY")
        .arg(allow_keys(&prefix).meta)
        .arg("seq")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    add(&s[0], json!({"cidr": "192.0.2.3"})).await;
    eventually(Duration::from_secs(3), synced(4)).await;
    assert!(all_answer(&s, "192.0.2.3", 200).await);
}

/// Every node reports how late it applied each followed event, per list
/// (`tollgate_list_apply_lag_seconds{list}`): the figure a propagation
/// benchmark reads from each node. Counts only: the values are times.
#[tokio::test]
async fn every_node_counts_how_late_it_applied_each_event_per_list() {
    let (_prefix, s) = servers(2, "1s").await;
    let count = |text: &str, list: &str| {
        metric(
            text,
            "tollgate_list_apply_lag_seconds_count",
            &[("list", list)],
        )
    };
    for i in 1..=3 {
        let (status, body) = add(
            &s[0],
            json!({"cidr": format!("203.0.113.{i}"), "ttl": "1h"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // Each node followed the three events from the stream (the writer too).
    for node in &s {
        eventually(Duration::from_secs(10), || async {
            count(&scrape(node).await, "allow") == 3.0
        })
        .await;
        let text = scrape(node).await;
        assert_eq!(count(&text, "deny"), 0.0, "no denylist event was written");
        // A followed event is applied within the histogram's range.
        assert_eq!(
            metric(
                &text,
                "tollgate_list_apply_lag_seconds_bucket",
                &[("list", "allow"), ("le", "+Inf")]
            ),
            3.0
        );
    }
}
