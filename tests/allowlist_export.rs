//! `tollgate allow export` / `restore` with 10 000 entries: a round trip
//! between two prefixes, followers taking the new epoch, expired entries
//! dropped, bad input refused with nothing written.

use serde_json::{json, Value};

use std::path::Path;
use std::time::Duration;

use crate::support::allowlist::{gate_config, now_ms};
use crate::support::binary::{output_text, tollgate};
use crate::support::{
    eventually, metric, scrape, shared_redis, temp_dir, unique_prefix, TestServer,
};

#[tokio::test]
async fn export_and_restore_round_trip_10000_entries_and_followers_take_the_new_epoch() {
    let url = shared_redis().url();
    let (p1, p2) = (unique_prefix("rt1"), unique_prefix("rt2"));
    let node = TestServer::start(&gate_config("1h", None), Some(&url), &p1).await;
    let dir = temp_dir("roundtrip");
    let soon = now_ms() + 3_600_000;
    let mut entries = Vec::new();
    for i in 0..10_000u32 {
        let cidr = format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255);
        let expires_at = match i % 3 {
            0 => Value::Null,
            _ => json!(soon + u64::from(i)),
        };
        entries.push(json!({"cidr": cidr, "expires_at": expires_at,
            "note": format!("n{i}"), "created_at": 1_700_000_000_000u64 + u64::from(i), "actor": "test"}));
    }
    // Five that had already expired: dropped by the restore.
    for i in 0..5 {
        entries.push(json!({"cidr": format!("172.16.0.{i}/32"), "expires_at": 1_000}));
    }
    let doc = json!({"format": "tollgate-allowlist", "version": 1, "entries": entries});
    let file = dir.join("in.json");
    std::fs::write(&file, doc.to_string()).unwrap();

    let restore = |file: &Path, prefix: &str| {
        tollgate(&[
            "allow",
            "restore",
            file.to_str().unwrap(),
            "--redis",
            &url,
            "--prefix",
            prefix,
        ])
    };
    let export = |prefix: &str| {
        let o = tollgate(&["allow", "export", "--redis", &url, "--prefix", prefix]);
        assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v
    };
    let o = restore(&file, &p1);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("restored 10000 entries")
            && output_text(&o).contains("5 had expired"),
        "{}",
        output_text(&o)
    );
    let first = export(&p1);
    let sorted = |v: &Value| {
        let mut e = v["entries"].as_array().unwrap().clone();
        e.sort_by_key(|e| e["cidr"].as_str().unwrap().to_string());
        e
    };
    let mut expected = entries[..10_000].to_vec();
    expected.sort_by_key(|e| e["cidr"].as_str().unwrap().to_string());
    assert_eq!(sorted(&first), expected);
    eventually(Duration::from_secs(5), || async {
        let t = node.app.allowlist.table();
        t.epoch == first["epoch"].as_str().unwrap() && t.len() == 10_000
    })
    .await;
    let m = scrape(&node).await;
    assert_eq!(metric(&m, "tollgate_allowlist_entries", &[]), 10_000.0);
    assert_eq!(metric(&m, "tollgate_allowlist_seq_lag", &[]), 0.0);
    assert_eq!(
        metric(
            &m,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "epoch")]
        ),
        1.0
    );
    assert!(metric(&m, "tollgate_allowlist_apply_seconds_count", &[]) >= 2.0);

    let again = dir.join("again.json");
    std::fs::write(&again, first.to_string()).unwrap();
    let o = restore(&again, &p2);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert_eq!(sorted(&export(&p2)), expected);

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"format":"tollgate-allowlist","version":1,"entries":[{"cidr":"10.0.0.1/8","expires_at":null}]}"#).unwrap();
    let o = restore(&bad, &p2);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("entries[0].cidr"),
        "{}",
        output_text(&o)
    );
    assert_eq!(sorted(&export(&p2)).len(), 10_000, "nothing written");
}
