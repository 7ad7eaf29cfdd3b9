//! The fleet puts back an allowlist Redis lost (restarted without
//! persistence, FLUSHALL, a failover to an empty replica, nodes restarted
//! from their state files): exactly one node restores it, whole, as a new
//! epoch that names its origin; no node refuses an entry meanwhile. Until it
//! is back, a write that would start from nothing is refused; `--new-epoch`
//! and `allow clear` start empty on purpose. A node exports its own table.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::allowlist::{
    add_entry, all_answer, allow_keys, flush_holding_the_restore_lock, gate_config, now_ms,
    release_restore_lock, restore_events, state_file, table_of, whole_listing,
};
use crate::support::binary::{output_text, tollgate, tollgate_cmd};
use crate::support::server::readyz;
use crate::support::{
    eventually, metric, scrape, temp_dir, unique_prefix, RedisServer, SentinelSet, TestServer,
    ADMIN_TOKEN,
};

/// The entries every test starts with: (cidr, an address in it, ttl, note).
const ENTRIES: [(&str, &str, &str, &str); 3] = [
    ("203.0.113.0/24", "203.0.113.9", "1h", "office"),
    ("198.51.100.7", "198.51.100.7", "2h", "login alice"),
    ("2001:db8::/48", "2001:db8::7", "1h", "v6 office"),
];

async fn nodes(n: usize, config: &str, url: Option<&str>, prefix: &str) -> Vec<TestServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestServer::start(config, url, prefix).await);
    }
    out
}

/// Add `ENTRIES` through `node` (with notes) and wait until every node has them.
async fn add_all(node: &TestServer, all: &[TestServer]) -> (String, Vec<Value>) {
    for (cidr, _, ttl, note) in ENTRIES {
        let r = node
            .admin_client()
            .post(node.admin_url("/v1/allowlist"))
            .json(&json!({"cidr": cidr, "ttl": ttl, "note": note}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    eventually(Duration::from_secs(3), || async {
        for (_, ip, _, _) in ENTRIES {
            if !all_answer(all, ip, 200).await {
                return false;
            }
        }
        true
    })
    .await;
    whole_listing(node).await.unwrap()
}

/// Two nodes with state files take `ENTRIES`, write them to their files and
/// stop: the files, the entries as listed, and the table they saved.
async fn nodes_that_saved_and_stopped(
    url: &str,
    prefix: &str,
) -> (
    Vec<std::path::PathBuf>,
    Vec<Value>,
    crate::support::allowlist::View,
) {
    let dir = temp_dir(prefix);
    let files: Vec<_> = (0..2).map(|i| dir.join(format!("node{i}.state"))).collect();
    let mut all = Vec::new();
    for f in &files {
        all.push(TestServer::start(&gate_config("1h", Some(f)), Some(url), prefix).await);
    }
    let (_, before) = add_all(&all[0], &all).await;
    let old = table_of(&all[0].app);
    for f in &files {
        eventually(Duration::from_secs(3), || async {
            state_file(f).is_some_and(|s| s.1 == old.1)
        })
        .await;
    }
    for n in all {
        n.stop().await;
    }
    (files, before, old)
}

/// Wait (up to 30 s) until Redis holds `want` again and every node has
/// loaded it, asserting at every look that every node still lets every
/// entry in: no 403 meanwhile. The restored epoch.
async fn put_back_with_no_403(all: &[TestServer], want: &[Value]) -> String {
    let reader = &all[0];
    eventually(Duration::from_secs(30), || async {
        for n in all {
            for (_, ip, _, _) in ENTRIES {
                let status = crate::support::allowlist::gate_at(n.addr, ip).await;
                assert_eq!(
                    status, 200,
                    "{ip} refused before the list was back everywhere"
                );
            }
        }
        match whole_listing(reader).await {
            Some((epoch, entries)) if entries == want => {
                all.iter().all(|n| table_of(&n.app).0 == epoch)
            }
            _ => false,
        }
    })
    .await;
    whole_listing(reader).await.unwrap().0
}

/// After a loss: one restore event naming one node and the old epoch and
/// seq, one node counting it, every node on the new epoch saying so; an add
/// then keeps every entry.
async fn assert_one_fleet_restore(
    conn: &mut redis::Connection,
    prefix: &str,
    all: &[TestServer],
    old: (&str, u64),
    new_epoch: &str,
) {
    let restores = restore_events(conn, prefix);
    assert_eq!(restores.len(), 1, "{restores:?}");
    let ev = &restores[0];
    assert_eq!(ev["born"], "fleet");
    assert_eq!(
        (ev["origin_epoch"].as_str(), ev["origin_seq"].as_str()),
        (old.0, old.1.to_string().as_str())
    );
    let ids: Vec<&str> = all.iter().map(|n| n.app.allowlist.node_id()).collect();
    assert!(ids.contains(&ev["origin_node"].as_str()), "{ev:?} {ids:?}");
    let mut restored_by = 0.0;
    for n in all {
        restored_by += metric(
            &scrape(n).await,
            "tollgate_allowlist_fleet_restores_total",
            &[],
        );
        eventually(Duration::from_secs(5), || async {
            table_of(&n.app).0 == new_epoch
        })
        .await;
        let (_, status) = n.admin(reqwest::Method::GET, "/v1/status").await;
        let born = &status["allowlist"]["born"];
        assert_eq!(born["how"], "fleet", "{status}");
        assert_eq!(born["restored_from"]["node"], ev["origin_node"].as_str());
        let body = readyz(n.admin_addr).await.1;
        assert!(body.contains("restored by node"), "{body}");
    }
    assert_eq!(restored_by, 1.0, "exactly one node restored");

    // A 503 (the node's writer connection died with Redis) says: again.
    eventually(Duration::from_secs(5), || async {
        let r = all[1]
            .admin_client()
            .post(all[1].admin_url("/v1/allowlist"))
            .json(&json!({"cidr": "192.0.2.99", "ttl": "1h"}))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 409, "refused after the restore");
        r.status() == 201
    })
    .await;
    eventually(Duration::from_secs(3), || async {
        all_answer(all, "192.0.2.99", 200).await && all_answer(all, "203.0.113.9", 200).await
    })
    .await;
    assert_eq!(whole_listing(&all[0]).await.unwrap().1.len(), 4);
}

#[tokio::test]
async fn a_redis_restarted_empty_is_put_back_by_one_node_with_no_403_meanwhile() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("fleet-nosave");
    let all = nodes(3, &gate_config("1s", None), Some(&url), &prefix).await;
    let (_, before) = add_all(&all[0], &all).await;
    let old = table_of(&all[0].app);

    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query::<()>(&mut redis.conn());
    redis.restart();
    let epoch = put_back_with_no_403(&all, &before).await;
    assert_ne!(epoch, old.0, "a new epoch");
    assert_one_fleet_restore(&mut redis.conn(), &prefix, &all, (&old.0, old.1), &epoch).await;
}

#[tokio::test]
async fn a_flushed_redis_is_put_back_whole_and_allow_list_names_the_origin() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("fleet-flush");
    let all = nodes(3, &gate_config("1s", None), Some(&url), &prefix).await;
    let (_, before) = add_all(&all[0], &all).await;
    let old = table_of(&all[0].app);

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    let epoch = put_back_with_no_403(&all, &before).await;
    let o = tollgate(&["allow", "list", "--redis", &url, "--prefix", &prefix]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let text = output_text(&o);
    assert!(
        text.contains("restored by node") && text.contains(&old.0),
        "{text}"
    );
    assert!(text.contains("login alice"), "notes come back: {text}");
    assert_one_fleet_restore(&mut redis.conn(), &prefix, &all, (&old.0, old.1), &epoch).await;
}

#[tokio::test]
async fn a_failover_to_an_empty_replica_is_put_back_by_the_fleet() {
    let mut set = SentinelSet::start();
    let prefix = unique_prefix("fleet-sentinel");
    let config = format!("{}\n{}", set.config_section("2s"), gate_config("1s", None));
    let all = nodes(3, &config, None, &prefix).await;
    let (_, before) = add_all(&all[0], &all).await;
    let old = table_of(&all[0].app);
    eventually(Duration::from_secs(5), || async {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut set.replica.conn())
            .unwrap();
        !keys.is_empty()
    })
    .await;

    // A writable replica's own writes stay local: it forgets the list; then
    // the master dies and the sentinel promotes that empty replica.
    let mut replica = set.replica.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-read-only")
        .arg("no")
        .query(&mut replica)
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut replica).unwrap();
    set.master.kill();
    set.fail_over().await;
    let epoch = put_back_with_no_403(&all, &before).await;
    assert_one_fleet_restore(
        &mut set.replica.conn(),
        &prefix,
        &all,
        (&old.0, old.1),
        &epoch,
    )
    .await;
}

#[tokio::test]
async fn an_entry_that_expired_while_redis_was_empty_is_not_put_back() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("fleet-expired");
    let all = nodes(2, &gate_config("1h", None), Some(&redis.url()), &prefix).await;
    let short = add_entry(&all[0], "192.0.2.10", "3s").await;
    add_entry(&all[0], "192.0.2.20", "1h").await;
    eventually(Duration::from_secs(3), || {
        all_answer(&all, "192.0.2.10", 200)
    })
    .await;

    flush_holding_the_restore_lock(&mut redis.conn(), &prefix);
    let expires_at = short["expires_at"].as_u64().unwrap();
    eventually(Duration::from_secs(8), || async {
        now_ms() > expires_at + 200
    })
    .await;
    assert!(all_answer(&all, "192.0.2.20", 200).await, "fail-static");
    release_restore_lock(&mut redis.conn(), &prefix);
    eventually(Duration::from_secs(30), || async {
        whole_listing(&all[0])
            .await
            .is_some_and(|(_, e)| !e.is_empty())
    })
    .await;
    let (_, entries) = whole_listing(&all[0]).await.unwrap();
    let cidrs: Vec<&str> = entries
        .iter()
        .map(|e| e["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs, ["192.0.2.20/32"]);
    assert_eq!(restore_events(&mut redis.conn(), &prefix).len(), 1);
}

#[tokio::test]
async fn nodes_restarted_while_redis_is_empty_put_it_back_from_their_state_files() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("fleet-state");
    let (files, before, old) = nodes_that_saved_and_stopped(&url, &prefix).await;
    let mut all = Vec::new();

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    for f in &files {
        all.push(TestServer::launch(&gate_config("1h", Some(f)), Some(&url), &prefix).await);
    }
    let epoch = put_back_with_no_403(&all, &before).await;
    assert_one_fleet_restore(&mut redis.conn(), &prefix, &all, (&old.0, old.1), &epoch).await;
}

#[tokio::test]
async fn a_plain_write_made_while_no_node_ran_is_merged_with_the_tables_of_the_fleet() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("fleet-merge");
    let (files, _, old) = nodes_that_saved_and_stopped(&url, &prefix).await;
    let mut all = Vec::new();

    // Redis lost the list while no node ran: nothing witnessed it, so a
    // plain add starts an epoch (born of a write) that knows only itself.
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    let o = tollgate(&[
        "allow",
        "add",
        "192.0.2.77",
        "--note",
        "later",
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    for f in &files {
        all.push(TestServer::launch(&gate_config("1h", Some(f)), Some(&url), &prefix).await);
    }
    eventually(Duration::from_secs(30), || async {
        for n in &all {
            for (_, ip, _, _) in ENTRIES {
                assert_eq!(crate::support::allowlist::gate_at(n.addr, ip).await, 200);
            }
        }
        whole_listing(&all[0])
            .await
            .is_some_and(|(_, e)| e.len() == 4)
    })
    .await;
    eventually(Duration::from_secs(5), || {
        all_answer(&all, "192.0.2.77", 200)
    })
    .await;
    let restores = restore_events(&mut redis.conn(), &prefix);
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert_eq!(restores[0]["born"], "fleet");
    assert_eq!(restores[0]["origin_epoch"], old.0);
    let (_, entries) = whole_listing(&all[0]).await.unwrap();
    let later: Vec<&Value> = entries.iter().filter(|e| e["note"] == "later").collect();
    assert_eq!(later.len(), 1, "the write is kept: {entries:?}");
}

#[tokio::test]
async fn a_write_before_the_list_is_back_is_refused_and_new_epoch_starts_empty_everywhere() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("fleet-refuse");
    let all = nodes(2, &gate_config("1h", None), Some(&url), &prefix).await;
    add_all(&all[0], &all).await;
    let keys = allow_keys(&prefix);

    // A node restores (the test holds its lock): nodes witness the loss.
    flush_holding_the_restore_lock(&mut redis.conn(), &prefix);
    eventually(Duration::from_secs(5), || async {
        let witnessed: bool = redis::cmd("EXISTS")
            .arg(&keys.lost)
            .query(&mut redis.conn())
            .unwrap();
        witnessed && readyz(all[1].admin_addr).await.1.contains("source_lost")
    })
    .await;

    let r = all[1]
        .admin_client()
        .post(all[1].admin_url("/v1/allowlist"))
        .json(&json!({"cidr": "192.0.2.50", "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    for needle in ["Redis holds no allowlist", "allow restore", "new_epoch"] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let (status, _) = all[1]
        .admin(reqwest::Method::DELETE, "/v1/allowlist/203.0.113.0%2F24")
        .await;
    assert_eq!(status, 409);
    let o = tollgate(&[
        "allow",
        "add",
        "192.0.2.51",
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("--new-epoch"),
        "{}",
        output_text(&o)
    );
    let written: u64 = redis::cmd("EXISTS")
        .arg(&keys.meta)
        .arg(&keys.entries)
        .arg(&keys.events)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(written, 0, "a refused write writes nothing");

    let o = tollgate(&[
        "allow",
        "add",
        "192.0.2.51",
        "--new-epoch",
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    eventually(Duration::from_secs(5), || async {
        all_answer(&all, "192.0.2.51", 200).await && all_answer(&all, "203.0.113.9", 403).await
    })
    .await;
    release_restore_lock(&mut redis.conn(), &prefix);
    for n in &all {
        let (_, status) = n.admin(reqwest::Method::GET, "/v1/status").await;
        assert_eq!(status["allowlist"]["born"]["how"], "new_epoch", "{status}");
        assert_eq!(status["allowlist"]["freshness"], "in_sync");
    }
    assert!(restore_events(&mut redis.conn(), &prefix).is_empty());
    assert_eq!(whole_listing(&all[0]).await.unwrap().1.len(), 1);
}

#[tokio::test]
async fn allow_clear_is_an_intended_wipe_that_no_node_puts_back() {
    let redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("fleet-clear");
    let all = nodes(2, &gate_config("1h", None), Some(&url), &prefix).await;
    add_all(&all[0], &all).await;

    let o = tollgate(&["allow", "clear", "--redis", &url, "--prefix", &prefix]);
    assert_eq!(o.status.code(), Some(2), "--yes is required");
    let (status, body) = all[0]
        .admin(reqwest::Method::POST, "/v1/allowlist/clear")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cleared"], 3);
    let cleared = body["epoch"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(5), || async {
        all.iter().all(|n| table_of(&n.app).0 == cleared)
    })
    .await;
    assert!(all_answer(&all, "203.0.113.9", 403).await);
    let restores = restore_events(&mut redis.conn(), &prefix);
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert_eq!(restores[0]["born"], "clear");
    // An empty-but-existing list: writes are plain writes, no node restores.
    add_entry(&all[1], "192.0.2.7", "1h").await;
    let o = tollgate(&[
        "allow", "clear", "--yes", "--redis", &url, "--prefix", &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(output_text(&o).contains("1 entry"), "{}", output_text(&o));
    for n in &all {
        assert_eq!(
            metric(
                &scrape(n).await,
                "tollgate_allowlist_fleet_restores_total",
                &[]
            ),
            0.0
        );
    }
}

#[tokio::test]
async fn a_nodes_export_restores_into_an_empty_redis_and_equals_its_table() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("fleet-export");
    let all = nodes(1, &gate_config("1h", None), Some(&redis.url()), &prefix).await;
    let node = &all[0];
    let (_, entries) = add_all(node, &all).await;

    let r = reqwest::get(node.admin_url("/v1/allowlist/export"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the token is required");
    let (status, doc) = node
        .admin(reqwest::Method::GET, "/v1/allowlist/export")
        .await;
    assert_eq!(status, 200);
    assert_eq!(doc["format"], "tollgate-allowlist");
    assert_eq!(doc["entries"].as_array().unwrap().len(), 3);

    let dir = temp_dir("fleet-export");
    let file = dir.join("node.json");
    let admin = format!("http://{}", node.admin_addr);
    // The node answers in this process: the CLI runs off the test's thread.
    let mut with_token = tollgate_cmd(&[
        "allow",
        "export",
        "--from-node",
        &admin,
        "--output",
        file.to_str().unwrap(),
    ]);
    with_token.env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN);
    let o = off_thread(with_token).await;
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let mut without = tollgate_cmd(&["allow", "export", "--from-node", &admin]);
    without.env_remove("TOLLGATE_ADMIN_TOKEN");
    let o = off_thread(without).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let mut wrong = tollgate_cmd(&["allow", "export", "--from-node", &admin]);
    wrong.env("TOLLGATE_ADMIN_TOKEN", "not-the-right-admin-token");
    let o = off_thread(wrong).await;
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(output_text(&o).contains("401"), "{}", output_text(&o));

    let empty = RedisServer::start();
    let other = unique_prefix("fleet-export-into");
    let o = tollgate(&[
        "allow",
        "restore",
        file.to_str().unwrap(),
        "--redis",
        &empty.url(),
        "--prefix",
        &other,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let reader = TestServer::start(&gate_config("1h", None), Some(&empty.url()), &other).await;
    assert_eq!(whole_listing(&reader).await.unwrap().1, entries);
}

/// Run a command on a blocking thread, so that servers in this process answer it.
async fn off_thread(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_embedded_store_exports_its_table_and_clears() {
    let node = TestServer::start(&gate_config("1h", None), None, &unique_prefix("embedded")).await;
    let all = [node];
    let (_, entries) = add_all(&all[0], &all).await;
    let (status, doc) = all[0]
        .admin(reqwest::Method::GET, "/v1/allowlist/export")
        .await;
    assert_eq!(status, 200);
    let mut cidrs: Vec<&str> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cidr"].as_str().unwrap())
        .collect();
    cidrs.sort();
    let want: Vec<&str> = entries
        .iter()
        .map(|e| e["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs, want);
    let (status, body) = all[0]
        .admin(reqwest::Method::POST, "/v1/allowlist/clear")
        .await;
    assert_eq!((status, &body["cleared"]), (200, &json!(3)), "{body}");
    assert!(all_answer(&all, "203.0.113.9", 403).await);
    assert!(whole_listing(&all[0]).await.unwrap().1.is_empty());
}
