//! The allowlist at scale: paged snapshots that race writes, removes and
//! expiries and still end equal to Redis entry by entry; a 200 000-entry
//! resync of several nodes at once that never holds Redis over 5 ms (`SLOW_US`)
//! while limiter calls keep succeeding; 20 000 entries expiring in one second.
//! Redis is filled with pipelined HSET/ZADD, not through the API (fast).
//! The harness here (a SLOWLOG-timed Redis, the fill, reading entries back,
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
/// of CPU, which SLOWLOG then counts as call time. A tokio lock: a failed test
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
# Loose for a loaded test machine: what counts is that Redis never holds a
# call long (SLOWLOG), not the scheduling of this process.
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

/// Longest allowlist call the tests accept: issue 17's 5 ms. A call's work
/// is well under 1 ms (bench/README: about 0.4 ms for a page of 200), so the
/// margin is for the machine, which these tests keep out of the way: they
/// run in a test binary of their own (`tests/scale.rs`), one at a time
/// (`HEAVY`), with Redis at a real-time priority (`timed_redis`). Before
/// those, a 23 ms wall time was once logged for a call that is one `INCR`
/// (the whole suite beside a `wrk` benchmark on both cores): a stall of the
/// machine, not work, and what the three measures are for.
const SLOW_US: u64 = 5_000;
/// SLOWLOG logs every call over this, so a test can report its largest
/// allowlist call even when none comes near `SLOW_US`.
const LOG_US: u64 = 500;

/// A Redis of its own whose SLOWLOG logs calls over `LOG_US`. Its main
/// thread gets a higher CPU priority (when the test may raise it: as root,
/// or with CAP_SYS_NICE; the test prints whether it could), so SLOWLOG
/// measures the calls' work more than the scheduler.
fn timed_redis() -> (RedisServer, redis::Connection) {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse::<u32>().ok())
        .unwrap();
    // SAFETY: both only read their arguments; a refusal leaves the thread as it was.
    let nice = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, -15) } == 0;
    // Real-time, at the lowest real-time priority: Redis's main thread runs as
    // soon as it is woken and is not preempted mid-call by the test's own
    // threads or a compiler (the kernel still keeps 5 % of each second for
    // everything else: sched_rt_runtime_us).
    let param = libc::sched_param { sched_priority: 1 };
    let realtime =
        unsafe { libc::sched_setscheduler(pid as libc::pid_t, libc::SCHED_FIFO, &param) } == 0;
    eprintln!(
        "redis pid {pid}: nice -15 {}, SCHED_FIFO {}",
        if nice { "set" } else { "refused" },
        if realtime { "set" } else { "refused" },
    );
    let _: () = redis::cmd("CONFIG")
        .arg(&[
            "SET",
            "slowlog-log-slower-than",
            &LOG_US.to_string(),
            "slowlog-max-len",
            "100000",
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

/// Assert that no allowlist call of `prefix` took over `SLOW_US`, and say
/// how long the largest took (`what`: the test's name for them).
fn assert_no_slow_allowlist_call(conn: &mut redis::Connection, prefix: &str, what: &str) {
    let mut logged = slow_allowlist_calls(conn, prefix);
    logged.sort_by_key(|(us, _)| std::cmp::Reverse(*us));
    match logged.first() {
        Some((us, cmd)) => eprintln!(
            "{what}: largest allowlist call {us} µs ({cmd}); {} over {LOG_US} µs, the largest: {:?}",
            logged.len(),
            logged.iter().take(5).map(|(us, c)| (us, c.split(' ').next().unwrap_or(""))).collect::<Vec<_>>()
        ),
        None => eprintln!("{what}: no allowlist call over {LOG_US} µs"),
    }
    let slow: Vec<_> = logged.iter().filter(|(us, _)| *us > SLOW_US).collect();
    assert!(
        slow.is_empty(),
        "{what}: allowlist calls over {SLOW_US} µs: {slow:?}"
    );
}

/// SLOWLOG entries (duration µs, command) on the allowlist's keys of `prefix`.
fn slow_allowlist_calls(conn: &mut redis::Connection, prefix: &str) -> Vec<(u64, String)> {
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(conn)
        .unwrap();
    // The allowlist's hash tag, `{...}`, as tollgate's keys carry it.
    let meta = allow_keys(prefix).meta;
    let tag = &meta[meta.find('{').unwrap()..=meta.find('}').unwrap()];
    log.iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let us: u64 = redis::from_redis_value_ref(&fields[2]).ok()?;
            let args: Vec<String> = redis::from_redis_value_ref(&fields[3]).ok()?;
            let text = args.join(" ");
            text.contains(tag)
                .then(|| (us, text.chars().take(120).collect()))
        })
        .collect()
}
