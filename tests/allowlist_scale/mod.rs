//! The allowlist at scale: paged snapshots that race writes, removes and
//! expiries and still end equal to Redis entry by entry; a 200 000-entry
//! resync of several nodes at once whose every Redis call is one bounded page
//! while limiter calls keep succeeding; 20 000 entries expiring in one second,
//! reaped in bounded script calls.
//! Redis is filled with pipelined HSET/ZADD, not through the API (fast).
//! The harness here (a Redis that logs every call's arguments, the fill, reading entries back,
//! the lock that runs these heavy tests one at a time) serves the files below.

/// The fleet's snapshot budget: its script's answers, and nodes resyncing at
/// once that never page faster than it together.
mod budget;
/// Many entries at once: a 200 000-entry resync storm, 20 000 expiring together.
mod load;
/// Paged snapshots and paged exports racing writes end equal to Redis.
mod paging;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::allowlist::{allow_keys, redis_now_ms};
use crate::support::wait::eventually_explained;
use crate::support::{eventually, metric, scrape, unique_prefix, RedisServer, TestServer};

/// Held by each test here for its whole run: they fill Redis with tens of
/// thousands of entries and run several nodes, and on a 2-core machine two of
/// them at once (with the test binary's other tests alongside) starve Redis
/// of CPU and the 200 000-entry resync crawls. A tokio lock: a failed test
/// does not poison it for the next.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
}

/// Nodes with a gate rule on `/admin` and a limited rule on `/api`, each
/// paging at most `pages_per_second`, all together at most 400 a second (the
/// default fleet budget).
fn config(pages_per_second: u32, jitter_max: &str, reap_interval: &str) -> String {
    config_with_fleet(pages_per_second, 400, jitter_max, reap_interval)
}

/// The same with the fleet's budget `fleet_pages_per_second`.
fn config_with_fleet(
    pages_per_second: u32,
    fleet_pages_per_second: u32,
    jitter_max: &str,
    reap_interval: &str,
) -> String {
    format!(
        r#"
[redis]
# Loose for a loaded test machine: at least 10x the longest call seen on a
# busy one (64 ms, issue #25), so a limiter fallback means a call was stuck
# behind work, not behind the scheduler.
timeout = "1s"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[allowlist]
reap_interval = "{reap_interval}"
snapshot_pages_per_second = {pages_per_second}
snapshot_fleet_pages_per_second = {fleet_pages_per_second}
snapshot_jitter_max = "{jitter_max}"

[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"

[[rule]]
name = "api"
match = {{ path_prefix = "/api" }}
limits = ["1000000/s"]
on_redis_error = "allow"
"#
    )
}

/// Most calls one Redis logs here: far more than any test makes (tens of
/// thousands), so `allowlist_calls` reads every one (it checks).
const LOG_MAX: u64 = 1_000_000;

/// A Redis of its own whose SLOWLOG logs every call (threshold 0), so a test
/// can read the *arguments* of every allowlist call: the work each was asked
/// to do. Its durations are not read: they measure the machine as much as
/// the call (on a busy machine a page of 200 was seen at 9–64 ms, issue #25),
/// and wall time belongs to the benchmark (`scripts/bench_allowlist.py`).
/// Redis keeps the normal CPU priority here.
fn logged_redis() -> (RedisServer, redis::Connection) {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg(&[
            "SET",
            "slowlog-log-slower-than",
            "0",
            "slowlog-max-len",
            &LOG_MAX.to_string(),
        ])
        .query(&mut conn)
        .unwrap();
    (redis, conn)
}

fn v4(i: u32) -> String {
    let a = 0x0a00_0000 + i;
    format!(
        "{}.{}.{}.{}/32",
        a >> 24,
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    )
}

/// `n` entries `v4(0..n)`, entry `i` expiring at `expires(i)` (0: never), in
/// a dataset of epoch `scale` that has no events yet.
fn populate(conn: &mut redis::Connection, prefix: &str, n: u32, expires: impl Fn(u32) -> u64) {
    let keys = allow_keys(prefix);
    let (entries, exp) = (&keys.entries, &keys.exp);
    for start in (0..n).step_by(1000) {
        let mut hset = redis::cmd("HSET");
        hset.arg(entries);
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(exp);
        let mut any_exp = false;
        for i in start..(start + 1000).min(n) {
            let e = expires(i);
            hset.arg(v4(i)).arg(format!(
                r#"{{"expires_at":{e},"note":"login","created_at":1,"actor":"test","ver":1}}"#
            ));
            if e > 0 {
                zadd.arg(e).arg(v4(i));
                any_exp = true;
            }
        }
        let mut pipe = redis::pipe();
        pipe.add_command(hset);
        if any_exp {
            pipe.add_command(zadd);
        }
        let _: () = pipe.query(conn).unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg(&keys.meta)
        .arg(&["epoch", "scale", "seq", "0", "last_id", "0-0"])
        .query(conn)
        .unwrap();
}

/// Every entry in Redis: cidr → expires_at (expired-but-unreaped included).
fn redis_entries(conn: &mut redis::Connection, prefix: &str) -> BTreeMap<String, u64> {
    let all: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(allow_keys(prefix).entries)
        .query(conn)
        .unwrap();
    all.into_iter()
        .map(|(k, v)| {
            let j: serde_json::Value = serde_json::from_str(&v).unwrap();
            (k, j["expires_at"].as_u64().unwrap())
        })
        .collect()
}

/// Every entry in a node's table, the same shape.
fn node_entries(s: &TestServer) -> BTreeMap<String, u64> {
    let t = s.app.allowlist.table();
    t.entries().map(|(n, e)| (n.to_string(), e)).collect()
}

fn meta_seq(conn: &mut redis::Connection, prefix: &str) -> u64 {
    let seq: Option<u64> = redis::cmd("HGET")
        .arg(allow_keys(prefix).meta)
        .arg("seq")
        .query(conn)
        .unwrap();
    seq.unwrap_or(0)
}

/// An admin API write (`body`: JSON); it must succeed or find nothing (404).
async fn admin_write(s: &TestServer, method: reqwest::Method, path: &str, body: Option<String>) {
    admin_send(&s.admin_client(), &s.admin_url(path), method, body).await;
}

/// The same with a client and URL of its own (for a spawned writer).
async fn admin_send(
    client: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    body: Option<String>,
) {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    assert!(
        r.status().is_success() || r.status() == 404,
        "{url}: {}",
        r.status()
    );
}

/// One limiter call: `/check` for `/api/x` from one client.
async fn api_check(client: &reqwest::Client, n: &TestServer) -> reqwest::Result<reqwest::Response> {
    client
        .get(n.url("/check"))
        .header("x-forwarded-uri", "/api/x")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
}

/// Every event in the allowlist's stream under `prefix`.
fn stream(conn: &mut redis::Connection, prefix: &str) -> Vec<redis::streams::StreamId> {
    let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(allow_keys(prefix).events)
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    r.ids
}

/// What the allowlist's calls under `prefix` did, as counted by
/// `assert_bounded_allowlist_calls`.
#[derive(Debug, Default)]
struct Calls {
    /// Snapshot pages (`HSCAN`).
    pages: u64,
    /// Reaper script calls (`lua/allow_reap.lua`).
    reaps: u64,
    /// Every call on the allowlist's keys.
    all: u64,
}

/// Assert that every call on the allowlist's keys of `prefix` since the last
/// `SLOWLOG RESET` was asked for bounded work: an `HSCAN` page of at most
/// `SNAPSHOT_PAGE`, an `XREAD` of at most as many events, a reap of at most
/// `REAP_BATCH` entries, and no whole-key read (`HGETALL`, `HKEYS`, `HVALS`).
/// `what`: the test's name for them.
fn assert_bounded_allowlist_calls(conn: &mut redis::Connection, prefix: &str, what: &str) -> Calls {
    let page = tollgate::allowlist::redis_store::SNAPSHOT_PAGE as u64;
    let batch = tollgate::allowlist::redis_store::REAP_BATCH;
    let reap_sha = redis::Script::new(include_str!("../../lua/allow_reap.lua"))
        .get_hash()
        .to_string();
    let mut calls = Calls::default();
    for args in allowlist_calls(conn, prefix) {
        calls.all += 1;
        let name = args[0].to_ascii_uppercase();
        // The number after `word` (COUNT), if the call has one.
        let after = |word: &str| {
            args.iter()
                .position(|a| a.eq_ignore_ascii_case(word))
                .and_then(|i| args.get(i + 1))
                .and_then(|n| n.parse::<u64>().ok())
        };
        match name.as_str() {
            "HSCAN" => {
                calls.pages += 1;
                let count = after("COUNT");
                assert!(
                    count.is_some_and(|c| c <= page),
                    "{what}: {args:?}: a page of at most {page}"
                );
            }
            "XREAD" => {
                let count = after("COUNT");
                assert!(
                    count.is_some_and(|c| c <= page),
                    "{what}: {args:?}: at most {page} events"
                );
            }
            "EVALSHA" | "EVAL" => {
                // EVAL carries the script's text (SLOWLOG keeps its first 128 bytes).
                let reap = args[1] == reap_sha || args[1].starts_with("-- allow_reap:");
                if reap {
                    calls.reaps += 1;
                    let keys: usize = args[2].parse().unwrap();
                    let limit: u64 = args[3 + keys].parse().unwrap();
                    assert!(
                        limit <= batch,
                        "{what}: {args:?}: a reap of at most {batch}"
                    );
                }
            }
            "HGETALL" | "HKEYS" | "HVALS" => panic!("{what}: a whole-key read: {args:?}"),
            _ => {}
        }
    }
    eprintln!("{what}: {calls:?} on the allowlist's keys, each bounded");
    calls
}

/// The arguments of every logged call on the allowlist's keys of `prefix`,
/// oldest first; fails if SLOWLOG dropped any (it keeps the newest `LOG_MAX`).
fn allowlist_calls(conn: &mut redis::Connection, prefix: &str) -> Vec<Vec<String>> {
    let len: u64 = redis::cmd("SLOWLOG").arg("LEN").query(conn).unwrap();
    assert!(
        len < LOG_MAX,
        "SLOWLOG filled up ({len} calls): raise LOG_MAX"
    );
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(conn)
        .unwrap();
    // The allowlist's hash tag, `{...}`, as tollgate's keys carry it.
    let meta = allow_keys(prefix).meta;
    let tag = &meta[meta.find('{').unwrap()..=meta.find('}').unwrap()];
    let mut calls: Vec<Vec<String>> = log
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let args: Vec<String> = redis::from_redis_value_ref(&fields[3]).ok()?;
            args.iter().any(|a| a.contains(tag)).then_some(args)
        })
        .collect();
    calls.reverse();
    calls
}
