//! Exactness under sustained load: three replicas on one Redis, 40 client
//! connections, two short limits (`100/s`, `7/200ms`) hammered for several
//! periods, so windows roll, logs prune and buckets refill during the run.
//!
//! What is counted is what the servers admitted, on Redis's own record:
//! snapshots of the keys (with Redis `TIME`, in one MULTI) taken more often
//! than a period, so no window, member or count is missed. fixed_window: the
//! windows (PEXPIRETIME) and their counters; sliding_window: each aligned
//! window's final count (`c`, then `p` after the roll); sliding_log: every
//! member with its exact score. The number of admitted answers must match
//! that record. gcra's state is one TAT, so its answers are placed in time by
//! their bracket [sent, received] on this host's clock (which is Redis's
//! clock, `TIME` being gettimeofday on the same machine): an interval only
//! counts answers whose whole bracket lies inside it, a lower bound of what
//! Redis admitted there, so the check can only fail on a real excess.
//! Every run also asserts it admitted close to the most the limit allows,
//! so none of this can pass by admitting nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::keys::KeySpace;
use tollgate::limiter::Algorithm;

use crate::support::{shared_redis, unique_prefix, TestServer};

const SERVERS: usize = 3;
const CLIENTS_PER_RULE: usize = 20;
const RUN: Duration = Duration::from_millis(2500);
/// (rule, limit, period in ms)
const RULES: [(&str, u64, u64); 2] = [("per_s", 100, 1000), ("per_200ms", 7, 200)];

static ONE_RUN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub sent_us: u64,
    pub received_us: u64,
    pub allowed: bool,
    pub remaining: u64,
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn config(algorithm: &str) -> String {
    let mut text = "[redis]\ntimeout = \"5s\"\n".to_string();
    for (name, limit, period) in RULES {
        text += &format!(
            "[[rule]]\nname = \"{name}\"\nlimits = [\"{limit}/{period}ms\"]\nalgorithm = \"{algorithm}\"\non_redis_error = \"deny\"\n"
        );
    }
    text
}

/// Every client asks `rule` for key "k" on the servers in turn until `RUN` ends.
async fn hammer(servers: &[TestServer], rule: &'static str) -> Vec<Answer> {
    let mut all = hammer_with(servers, rule, CLIENTS_PER_RULE, RUN).await;
    all.retain(|a| a.allowed);
    all
}

/// `clients` connections ask `rule` for key "k", spread over the servers,
/// until `run` ends: every answer, sorted by when it was received.
pub(crate) async fn hammer_with(
    servers: &[TestServer],
    rule: &'static str,
    clients: usize,
    run: Duration,
) -> Vec<Answer> {
    let end = Instant::now() + run;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = servers[c % servers.len()].url("/v1/check");
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut out = Vec::new();
            while Instant::now() < end {
                let sent_us = now_us();
                let resp = http
                    .post(&url)
                    .json(&serde_json::json!({"rule": rule, "key": "k"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let v: serde_json::Value = resp.json().await.unwrap();
                out.push(Answer {
                    sent_us,
                    received_us: now_us(),
                    allowed: v["allowed"].as_bool().unwrap(),
                    remaining: v["remaining"].as_u64().unwrap(),
                });
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|a| a.received_us);
    all
}

/// Start the servers, run both rules at once, stop; the admitted answers per rule.
/// One run at a time: four at once on a small machine starve the snapshots.
async fn run(algorithm: &str, prefix: &str) -> Vec<Vec<Answer>> {
    let redis = shared_redis();
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(TestServer::start(&config(algorithm), Some(&redis.url()), prefix).await);
    }
    let (a, b) = tokio::join!(hammer(&servers, RULES[0].0), hammer(&servers, RULES[1].0));
    for s in servers {
        s.stop().await;
    }
    vec![a, b]
}

/// Snapshots of `keys` every few ms on a thread of its own (the runtime is
/// busy with the load) until `stop`: per key, (Redis time in µs, the replies
/// of `query`'s commands after its first, TIME, as one tuple).
pub(crate) fn snapshot<T: redis::FromRedisValue + Send + 'static>(
    mut conn: redis::Connection,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    query: fn(&str) -> redis::Pipeline,
) -> std::thread::JoinHandle<Vec<Vec<(u64, T)>>> {
    std::thread::spawn(move || {
        let mut taken: Vec<Vec<(u64, T)>> = keys.iter().map(|_| Vec::new()).collect();
        loop {
            let last = stop.load(Ordering::Relaxed);
            for (key, out) in keys.iter().zip(&mut taken) {
                let mut pipe = query(key);
                let mut values: Vec<redis::Value> = pipe.atomic().query(&mut conn).unwrap();
                let rest = redis::Value::Array(values.split_off(1));
                let (s, us): (u64, u64) = redis::from_redis_value(values[0].clone()).unwrap();
                let reply: T = redis::from_redis_value(rest).unwrap();
                out.push((s * 1_000_000 + us, reply));
            }
            if last {
                return taken;
            }
            // The sampling pace of the snapshots, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

pub(crate) fn time_then(cmd: &str, key: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("TIME").cmd(cmd).arg(key);
    pipe
}

/// Run `algorithm` while snapshotting its keys with `query`.
async fn run_recorded<T: redis::FromRedisValue + Send + 'static>(
    algorithm: &str,
    query: fn(&str) -> redis::Pipeline,
) -> Vec<(Vec<Answer>, Vec<(u64, T)>)> {
    let alg: Algorithm = algorithm.parse().unwrap();
    let _one_at_a_time = ONE_RUN.lock().await;
    // A snapshot late by a period could miss a window or a member: such a
    // run proves nothing, and is made again.
    for _ in 0..3 {
        let prefix = unique_prefix("sus");
        let keys: Vec<String> = RULES
            .iter()
            .map(|(name, _, period)| {
                let base = KeySpace::new(&prefix).limit_base(alg, name, "k");
                KeySpace::limit_key(&base, *period)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let snapshots = snapshot::<T>(shared_redis().conn(), keys, stop.clone(), query);
        let runs = run(algorithm, &prefix).await;
        stop.store(true, Ordering::Relaxed);
        let taken = snapshots.join().unwrap();
        let dense = RULES.iter().zip(&taken).all(|((_, _, period), t)| {
            t.windows(2)
                .all(|pair| pair[1].0 - pair[0].0 < period * 1000)
        });
        if dense {
            return runs.into_iter().zip(taken).collect();
        }
    }
    panic!("{algorithm}: in three runs, snapshots were never less than a period apart");
}

/// At least 70% of what `limit` per `period` allows over the run.
fn assert_near_capacity(what: &str, admitted: usize, limit: u64, period_ms: u64) {
    let capacity = limit * RUN.as_millis() as u64 / period_ms;
    assert!(
        admitted as u64 * 10 >= capacity * 7,
        "{what}: only {admitted} admitted of about {capacity} possible"
    );
}

/// Most answers whose bracket lies inside any [sent_i, received_j]; `bound`
/// says how many that span may hold.
pub(crate) fn assert_spans(what: &str, admitted: &[Answer], bound: impl Fn(u64) -> u64) {
    let mut by_sent: Vec<&Answer> = admitted.iter().collect();
    by_sent.sort_by_key(|a| a.sent_us);
    for (i, first) in by_sent.iter().enumerate() {
        let mut inside = 0;
        // `admitted` is sorted by received: count those sent after `first`.
        for a in admitted {
            if a.sent_us < first.sent_us {
                continue;
            }
            inside += 1;
            let span = a.received_us - first.sent_us;
            assert!(
                inside <= bound(span),
                "{what}: {inside} admitted within {span} us (from answer {i})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_window_never_admits_more_than_the_limit_in_a_window_under_sustained_load() {
    // PEXPIRETIME, not TIME + PTTL: under load Redis's TIME and the clock its
    // PTTL is computed from can be milliseconds apart in one MULTI, which made
    // one window look like two ending 6 ms apart on a fresh machine.
    let runs = run_recorded::<(Option<u64>, i64)>("fixed_window", |key| {
        let mut pipe = time_then("GET", key);
        pipe.cmd("PEXPIRETIME").arg(key);
        pipe
    })
    .await;
    for ((name, limit, period), (admitted, taken)) in RULES.into_iter().zip(runs) {
        assert_near_capacity(name, admitted.len(), limit, period);
        // Each window is its counter's life: it ends at the key's expiry time.
        let mut ends: Vec<u64> = Vec::new();
        for (_, (count, expires_at)) in &taken {
            let Some(count) = count else { continue };
            assert!(*count <= limit, "{name}: a counter at {count}");
            assert!(
                *expires_at >= 0,
                "{name}: a counter without TTL ({expires_at})"
            );
            let end = *expires_at as u64;
            if ends.last() != Some(&end) {
                ends.push(end);
            }
        }
        // A window only starts after the last one ended: ends a period apart.
        for pair in ends.windows(2) {
            assert!(
                pair[1] - pair[0] + 2 >= period,
                "{name}: windows ending at {} and {} ms overlap",
                pair[0],
                pair[1]
            );
        }
        // And what the servers answered fits in those windows: at most
        // `limit` each, every `remaining` value once per window.
        let windows = ends.len();
        assert!(
            admitted.len() <= windows * limit as usize,
            "{name}: {} admitted in {windows} windows",
            admitted.len()
        );
        for r in 0..limit {
            let n = admitted.iter().filter(|a| a.remaining == r).count();
            assert!(
                n <= windows,
                "{name}: remaining {r} answered {n} times in {windows} windows"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcra_never_admits_more_than_burst_plus_elapsed_rate_under_sustained_load() {
    let runs = {
        let _one_at_a_time = ONE_RUN.lock().await;
        run("gcra", &unique_prefix("sus-gc")).await
    };
    for ((name, limit, period), admitted) in RULES.into_iter().zip(runs) {
        // A burst of `limit`, then one every period / limit.
        assert_near_capacity(name, admitted.len(), limit, period);
        assert_spans(name, &admitted, |span_us| {
            limit + span_us * limit / (period * 1000)
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sliding_window_stays_within_its_documented_bound_under_sustained_load() {
    let runs =
        run_recorded::<((Option<u64>, Option<u64>, Option<u64>),)>("sliding_window", |key| {
            let mut pipe = redis::pipe();
            pipe.cmd("TIME")
                .cmd("HMGET")
                .arg(key)
                .arg("w")
                .arg("c")
                .arg("p");
            pipe
        })
        .await;
    for ((name, limit, period), (admitted, taken)) in RULES.into_iter().zip(runs) {
        assert_near_capacity(name, admitted.len(), limit, period);
        // Window w's final count: its `c`, or `p` once w + 1 has begun.
        let mut finals = std::collections::BTreeMap::<u64, u64>::new();
        for (_, ((w, c, p),)) in &taken {
            let Some(w) = *w else { continue };
            for (win, n) in [(w, c.unwrap_or(0)), (w - 1, p.unwrap_or(0))] {
                let f = finals.entry(win).or_default();
                *f = (*f).max(n);
            }
        }
        for (w, n) in &finals {
            assert!(*n <= limit, "{name}: aligned window {w} admitted {n}");
        }
        assert_eq!(
            finals.values().sum::<u64>(),
            admitted.len() as u64,
            "{name}: the windows' counts are the admitted answers"
        );
        // Over any sliding period: under twice the limit (the documented bound).
        assert_spans(name, &admitted, |span_us| {
            if span_us < period * 1000 {
                2 * limit - 1
            } else {
                u64::MAX
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sliding_log_admits_exactly_the_limit_in_every_sliding_period_under_sustained_load() {
    let runs = run_recorded::<(Vec<(String, u64)>,)>("sliding_log", |key| {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME")
            .cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe
    })
    .await;
    for ((name, limit, period), (admitted, taken)) in RULES.into_iter().zip(runs) {
        assert_near_capacity(name, admitted.len(), limit, period);
        // A member stays at least a period (only a later call prunes it), so
        // the snapshots together hold every one.
        let mut members = std::collections::HashMap::new();
        for (_, (list,)) in &taken {
            members.extend(list.iter().cloned());
        }
        assert_eq!(
            members.len(),
            admitted.len(),
            "{name}: every admitted request is one member of the log"
        );
        let mut scores: Vec<u64> = members.into_values().collect();
        scores.sort();
        for (i, w) in scores.windows(limit as usize + 1).enumerate() {
            assert!(
                w[limit as usize] - w[0] >= period * 1000,
                "{name}: {} admitted within {} us (from unit {i})",
                limit + 1,
                w[limit as usize] - w[0]
            );
        }
    }
}
