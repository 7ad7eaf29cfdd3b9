//! Paged snapshots and paged exports that race writes, removes and expiries
//! and still end equal to Redis, entry by entry.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_paging_a_snapshot_while_entries_are_written_removed_and_expired_end_equal_to_redis_entry_by_entry(
) {
    let _heavy = heavy().await;
    // Its own Redis: reading 20 000 entries back would hold a shared one.
    let redis = RedisServer::start();
    let prefix = unique_prefix("scale_paging");
    let mut conn = redis.conn();
    let now = redis_now_ms(&mut conn);
    // 20 000 entries: most for an hour, 2 000 expiring (and reaped) while the nodes page.
    populate(&mut conn, &prefix, 20_000, |i| {
        if i % 10 == 0 {
            now + 500 + u64::from(i % 2000)
        } else {
            now + 3_600_000
        }
    });
    let url = redis.url();
    let writer = TestServer::launch(&config(10_000, "0s", "100ms"), Some(&url), &prefix).await;
    eventually(Duration::from_secs(60), || {
        let ready = writer.app.allowlist.is_synced();
        async move { ready }
    })
    .await;
    // The fleet's budget spent for the next two minutes, as by a stalled
    // fleet: every follower takes its snapshot's position, then waits for its
    // first page (each retry at most a window and a quarter later).
    let budget_key = allow_keys(&prefix).snapshot_budget;
    let _: () = redis::cmd("SET")
        .arg(&budget_key)
        .arg(1_000_000_000)
        .arg("PX")
        .arg(120_000)
        .query(&mut conn)
        .unwrap();
    // 100 pages at 40 a second: each follower pages for about 2.5 s once let go.
    let mut followers = Vec::new();
    for _ in 0..3 {
        followers.push(TestServer::launch(&config(40, "0s", "100ms"), Some(&url), &prefix).await);
    }
    for f in &followers {
        eventually(Duration::from_secs(60), || async {
            metric(
                &scrape(f).await,
                "tollgate_allowlist_snapshot_budget_waits_total",
                &[],
            ) >= 1.0
        })
        .await;
    }
    assert!(followers.iter().all(|f| !f.app.allowlist.is_synced()));
    let seq_at_launch = meta_seq(&mut conn, &prefix);

    // Upserts of new and existing entries, refreshes, removes, short TTLs.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writing = {
        let (stop, writes) = (stop.clone(), writes.clone());
        let admin = writer.admin_client();
        let base = writer.admin_url("");
        tokio::spawn(async move {
            for n in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (method, path, body) = match n % 4 {
                    0 => (
                        reqwest::Method::POST,
                        "/v1/allowlist".to_string(),
                        Some(format!(
                            r#"{{"cidr":"172.16.{}.{}/32","ttl":"1h"}}"#,
                            (n >> 8) & 255,
                            n & 255
                        )),
                    ),
                    1 => (
                        reqwest::Method::POST,
                        "/v1/allowlist".to_string(),
                        Some(format!(
                            r#"{{"cidr":"{}","ttl":"2h"}}"#,
                            v4(n % 20_000 * 7 % 20_000)
                        )),
                    ),
                    2 => (
                        reqwest::Method::DELETE,
                        format!(
                            "/v1/allowlist/{}",
                            v4(n % 20_000 * 13 % 20_000).replace('/', "%2F")
                        ),
                        None,
                    ),
                    _ => (
                        reqwest::Method::POST,
                        "/v1/allowlist".to_string(),
                        Some(format!(
                            r#"{{"cidr":"192.168.{}.{}/32","ttl":"300ms"}}"#,
                            (n >> 8) & 255,
                            n & 255
                        )),
                    ),
                };
                admin_send(&admin, &format!("{base}{path}"), method, body).await;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // 100 writes after every follower's position and before any of its
    // pages: they race the paging whatever the machine's speed. Then the
    // budget is let go and the writes go on while the followers page.
    eventually(Duration::from_secs(60), || {
        let seq = meta_seq(&mut conn, &prefix);
        async move { seq >= seq_at_launch + 100 }
    })
    .await;
    assert!(followers.iter().all(|f| !f.app.allowlist.is_synced()));
    let _: () = redis::cmd("DEL").arg(&budget_key).query(&mut conn).unwrap();
    eventually(Duration::from_secs(60), || {
        let ready = followers.iter().all(|f| f.app.allowlist.is_synced());
        async move { ready }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    // One more write and a removal after the snapshots, then quiet.
    admin_write(
        &writer,
        reqwest::Method::POST,
        "/v1/allowlist",
        Some(r#"{"cidr":"198.51.100.0/24","ttl":"1h"}"#.into()),
    )
    .await;
    admin_write(
        &writer,
        reqwest::Method::DELETE,
        &format!("/v1/allowlist/{}", v4(1).replace('/', "%2F")),
        None,
    )
    .await;

    // Every node equals Redis, entry by entry (once the short TTLs are reaped).
    let nodes: Vec<_> = followers.iter().chain([&writer]).collect();
    // A loose bound (the loop it replaced polled 300 times, each a full read).
    eventually_explained(Duration::from_secs(60), Duration::from_millis(100), || {
        let want = redis_entries(&mut conn, &prefix);
        let seq = meta_seq(&mut conn, &prefix);
        let diffs: Vec<usize> = nodes
            .iter()
            .map(|n| {
                let have = node_entries(n);
                let t = n.app.allowlist.table();
                if t.seq != seq {
                    return usize::MAX;
                }
                have.iter().filter(|(k, v)| want.get(*k) != Some(v)).count()
                    + want.iter().filter(|(k, v)| have.get(*k) != Some(v)).count()
            })
            .collect();
        let matched = diffs.iter().all(|&d| d == 0) && want.len() > 15_000;
        let why = format!(
            "nodes never matched Redis: seq {seq}, {} entries in Redis, differences per node {diffs:?}",
            want.len()
        );
        async move { matched.then_some(()).ok_or(why) }
    })
    .await;
    assert!(writes.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_read_in_pages_while_entries_change_equals_redis_at_its_seq() {
    let _heavy = heavy().await;
    // Its own Redis: reading 20 000 entries back would hold a shared one.
    let redis = RedisServer::start();
    let prefix = unique_prefix("scale_export");
    let mut conn = redis.conn();
    let now = redis_now_ms(&mut conn);
    populate(&mut conn, &prefix, 20_000, |_| now + 3_600_000);
    let node = TestServer::launch(&config(10_000, "0s", "1s"), Some(&redis.url()), &prefix).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        let list = node.app.clone();
        tokio::spawn(async move {
            for n in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let cidr = if n % 2 == 0 {
                    v4(n % 20_000 * 7 % 20_000)
                } else {
                    format!("172.16.{}.{}/32", (n >> 8) & 255, n & 255)
                };
                // Paced: an export needs a moment with no write to finish (README).
                tokio::time::sleep(Duration::from_millis(2)).await;
                if n % 3 == 0 {
                    let _ = list
                        .allowlist
                        .remove(&cidr.parse().unwrap(), "t")
                        .await
                        .unwrap();
                } else {
                    let new = tollgate::allowlist::input::new_entry(
                        &cidr,
                        Some("2h"),
                        None,
                        "t".into(),
                        &list.config.allowlist,
                    )
                    .unwrap();
                    list.allowlist.upsert(&new).await.unwrap();
                }
            }
        })
    };
    eventually(Duration::from_secs(30), || {
        let seq = meta_seq(&mut redis.conn(), &prefix);
        async move { seq > 50 }
    })
    .await;
    // Writes raced the export: its seq is past the one read just before it.
    // An export that happened to fall between two writes proves nothing and
    // is read again (a bounded number of times).
    let mut tries = 0;
    let (seq_before, listing) = loop {
        let seq_before = meta_seq(&mut conn, &prefix);
        let listing = node.app.allowlist.list().await.unwrap();
        tries += 1;
        if listing.seq > seq_before || tries == 20 {
            break (seq_before, listing);
        }
    };
    assert!(
        listing.seq > seq_before,
        "writes never raced the export in {tries} tries: seq {seq_before} before, {} at its end",
        listing.seq
    );
    // And went on after it: the writer runs until Redis's seq is past the export's.
    let at = listing.seq;
    eventually(Duration::from_secs(30), || {
        let seq = meta_seq(&mut conn, &prefix);
        async move { seq > at }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();

    // Redis's state at the export's seq: the populated entries, then every event up to it.
    let mut want: BTreeMap<String, u64> = (0..20_000).map(|i| (v4(i), now + 3_600_000)).collect();
    let mut later = 0;
    for e in &stream(&mut conn, &prefix) {
        let seq: u64 = e.get("seq").unwrap();
        if seq > listing.seq {
            later += 1;
            continue;
        }
        let (op, cidr): (String, String) = (e.get("op").unwrap(), e.get("cidr").unwrap());
        match op.as_str() {
            "upsert" => {
                want.insert(cidr, e.get("expires_at").unwrap());
            }
            _ => {
                want.remove(&cidr);
            }
        }
    }
    assert!(later > 0, "writes went on after the export's seq, too");
    let have: BTreeMap<String, u64> = listing
        .entries
        .iter()
        .map(|e| (e.cidr.to_string(), e.expires_at))
        .collect();
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .take(5)
        .collect();
    let extra: Vec<_> = have
        .iter()
        .filter(|(k, v)| want.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "at seq {}: missing {missing:?}, extra {extra:?}",
        listing.seq
    );
}
