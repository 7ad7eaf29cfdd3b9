//! `tollgate allow` against the same Redis the servers use.

use std::process::Output;

use super::*;
use crate::support::binary::{output_text as text, tollgate, tollgate_cmd};

/// `tollgate allow args... --redis <redis> --prefix <prefix>`.
fn allow(args: &[&str], redis: &str, prefix: &str) -> Output {
    tollgate_cmd(&["allow"])
        .args(args)
        .args(["--redis", redis, "--prefix", prefix])
        .output()
        .unwrap()
}

#[tokio::test]
async fn cli_add_list_check_remove_round_trip_against_the_same_redis() {
    let prefix = unique_prefix("allowcli");
    let url = shared_redis().url();
    let s = TestServer::start(&config("1s", TRUSTED), Some(&url), &prefix).await;

    let o = allow(
        &["add", "198.51.100.0/24", "--ttl", "2h", "--note", "office"],
        &url,
        &prefix,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("198.51.100.0/24"), "{}", text(&o));
    eventually(Duration::from_secs(1), || async {
        gate(&s, "198.51.100.20").await == 200
    })
    .await;

    let o = allow(&["list"], &url, &prefix);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o);
    assert!(
        out.contains("198.51.100.0/24") && out.contains("office") && out.contains("cli"),
        "{out}"
    );

    let o = allow(&["check", "198.51.100.20"], &url, &prefix);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("198.51.100.0/24"));

    let o = allow(&["remove", "198.51.100.0/24"], &url, &prefix);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    eventually(Duration::from_secs(1), || async {
        gate(&s, "198.51.100.20").await == 403
    })
    .await;

    let o = allow(&["check", "198.51.100.20"], &url, &prefix);
    assert_eq!(o.status.code(), Some(1), "not a member: {}", text(&o));
    assert!(text(&o).contains("not on the allowlist"));
    let o = allow(&["remove", "198.51.100.0/24"], &url, &prefix);
    assert_eq!(o.status.code(), Some(1), "no such entry: {}", text(&o));

    let ev = events(&prefix);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["actor"], "cli");
}

#[tokio::test]
async fn cli_bad_input_exits_2_and_an_unreachable_redis_exits_1() {
    let prefix = unique_prefix("allowcli");
    let url = shared_redis().url();
    let o = allow(&["add", "198.51.100.1/24"], &url, &prefix);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("198.51.100.0/24"), "{}", text(&o));
    let o = allow(&["add", "198.51.100.1", "--ttl", "never"], &url, &prefix);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = allow(&["check", "nope"], &url, &prefix);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(dump(&prefix), vec![None, None, None, None]);

    let dead = format!("redis://127.0.0.1:{}", free_port());
    let o = allow(&["add", "198.51.100.1"], &dead, &prefix);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = tollgate(&["allow", "list"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "no Redis configured: {}",
        text(&o)
    );
}
