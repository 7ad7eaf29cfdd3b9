//! Once a second, what the recorder gathered goes to Redis in one pipelined
//! call (one per key family on a Redis Cluster, where a pipeline must stay in
//! one slot), each tracked rule-hour in track script calls of at most
//! `PATHS_PER_CALL` paths. A failed flush loses that second's counts: they are counted in
//! `tollgate_activity_lost_total{kind}`, the failure in
//! `tollgate_activity_flush_failures_total`, and the state is logged once on
//! entering it and once on leaving it (`tollgate_activity_flush_up`).
//! On shutdown the last second is flushed before the task ends.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use redis::{Cmd, Value};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::recorder::Pending;
use super::{now_ms, Activity, CALL_TIMEOUT, MS_PER_DAY};
use crate::redis_conn::StoreError;

/// `lua/activity_track.lua`, sent with EVAL: a pipeline cannot retry a
/// NOSCRIPT the way `Script::invoke` does, and 2 KB a second is nothing.
const TRACK_SCRIPT: &str = include_str!("../../lua/activity_track.lua");
/// Members per ZADD / PFADD command.
const CHUNK: usize = 1000;
/// Paths per track script call: the bound each recorder shard keeps
/// (`LOCAL_PATHS_PER_FLUSH`). A second merges up to 16 shards, up to
/// 16 × 4 096 paths of one rule-hour: one call would hold Redis for all of
/// them, so the merged second goes in several calls of at most this many,
/// one after another in the same pipeline (each path is decided on its own,
/// so the split changes no count).
pub const PATHS_PER_CALL: usize = super::recorder::LOCAL_PATHS_PER_FLUSH;
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
const MS_PER_MINUTE: u64 = 60_000;
/// Limited keys kept per rule and minute in Redis (the most limited).
pub const TOP_KEPT: usize = 1000;
/// Minutes of limited keys kept in Redis: the longest `top` query.
pub const TOP_MINUTES_KEPT: u64 = 60;

/// The flush task; `track_paths` names each tracked rule's path bound (the
/// rules live above this module and change on reload).
pub async fn run<F>(activity: Arc<Activity>, track_paths: F, stop: CancellationToken)
where
    F: Fn(&str) -> Option<u32> + Send + Sync + 'static,
{
    flush_loop(activity, track_paths, stop)
        .instrument(tracing::info_span!("activity_flush"))
        .await
}

async fn flush_loop<F>(activity: Arc<Activity>, track_paths: F, stop: CancellationToken)
where
    F: Fn(&str) -> Option<u32>,
{
    if !activity.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let pending = activity.recorder.take();
        if !pending.is_empty() {
            let (requests, heartbeats) = (pending.requests(), pending.heartbeats.len() as u64);
            match flush(&activity, pending, &track_paths).await {
                Ok(folded) => {
                    activity.metrics.folded_paths.inc_by(folded);
                    if failing {
                        failing = false;
                        activity.metrics.flush_up.set(1);
                        tracing::info!("activity flush back: counts reach Redis again");
                    }
                }
                Err(e) => {
                    activity.forget_connection();
                    activity.metrics.flush_failures.inc();
                    activity.metrics.lose("requests", requests);
                    activity.metrics.lose("heartbeats", heartbeats);
                    if !failing {
                        failing = true;
                        activity.metrics.flush_up.set(0);
                        tracing::warn!(error = %e, "activity flush failed: each second's counts are lost until Redis answers (tollgate_activity_lost_total)");
                    }
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Write one second; the number of paths counted under `other`.
async fn flush<F>(activity: &Activity, pending: Pending, track_paths: &F) -> Result<u64, StoreError>
where
    F: Fn(&str) -> Option<u32>,
{
    let families = commands(activity, pending, now_ms(), track_paths);
    let conn = activity.conn().await?;
    let groups: Vec<Vec<Step>> = if activity.is_cluster() {
        families
    } else {
        vec![families.into_iter().flatten().collect()]
    };
    let calls = groups.iter().map(|steps| {
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        for step in steps {
            pipe.add_command(step.cmd.clone());
        }
        async move {
            let replies =
                tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<Vec<Value>>(&mut conn))
                    .await
                    .map_err(|_| StoreError::Timeout(CALL_TIMEOUT))?
                    .map_err(StoreError::from)?;
            // The track script answers how many of its paths went to `other`.
            Ok::<u64, StoreError>(
                steps
                    .iter()
                    .zip(replies)
                    .filter(|(s, _)| s.track)
                    .map(|(_, v)| match v {
                        Value::Int(n) => n.max(0) as u64,
                        _ => 0,
                    })
                    .sum(),
            )
        }
    });
    let mut folded = 0;
    for r in join_all(calls).await {
        folded += r?;
    }
    Ok(folded)
}

/// One command of a flush; `track`: a call of the track script.
pub struct Step {
    pub cmd: Cmd,
    pub track: bool,
}

fn plain(cmd: Cmd) -> Step {
    Step { cmd, track: false }
}

/// The commands of one second, one list per key family (one hash tag each).
pub fn commands<F>(
    activity: &Activity,
    pending: Pending,
    now: u64,
    track_paths: &F,
) -> Vec<Vec<Step>>
where
    F: Fn(&str) -> Option<u32>,
{
    let keys = &activity.keys;
    let cfg = activity.config.load();
    let mut families = Vec::new();
    if !pending.heartbeats.is_empty() {
        let presence = keys.presence();
        let window_ms = cfg.online_window.as_millis() as u64;
        let mut cmds = Vec::new();
        let members: Vec<(&String, &u64)> = pending.heartbeats.iter().collect();
        for chunk in members.chunks(CHUNK) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&presence);
            for (member, seen) in chunk {
                zadd.arg(**seen).arg(member.as_str());
            }
            cmds.push(plain(zadd));
        }
        // Trimmed as it goes: by age, then by count (the oldest first).
        cmds.push(plain(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(&presence)
                .arg("-inf")
                .arg(format!("({}", now.saturating_sub(window_ms)))
                .clone(),
        ));
        cmds.push(plain(
            redis::cmd("ZREMRANGEBYRANK")
                .arg(&presence)
                .arg(0)
                .arg(-(cfg.max_online as i64) - 1)
                .clone(),
        ));
        cmds.push(plain(
            redis::cmd("PEXPIRE")
                .arg(&presence)
                .arg(window_ms + FLUSH_EVERY.as_millis() as u64)
                .clone(),
        ));
        families.push(cmds);

        // Active days: a client that sent a heartbeat that day.
        let mut by_day: std::collections::BTreeMap<u64, Vec<&str>> = Default::default();
        for (member, seen) in &pending.heartbeats {
            by_day.entry(seen / MS_PER_DAY).or_default().push(member);
        }
        let day_ttl = u64::from(cfg.retention_days) * 86_400 + 86_400;
        let mut cmds = Vec::new();
        for (day, members) in by_day {
            let key = keys.active_day(super::day_number(day));
            for chunk in members.chunks(CHUNK) {
                cmds.push(plain(redis::cmd("PFADD").arg(&key).arg(chunk).clone()));
            }
            cmds.push(plain(redis::cmd("EXPIRE").arg(&key).arg(day_ttl).clone()));
        }
        families.push(cmds);
    }
    if !pending.limited.is_empty() {
        // Who is hurting: per rule and minute, ZINCRBY each limited key, then
        // keep the TOP_KEPT most limited (a key limited less often in a
        // minute than the thousandth is not worth naming).
        let minute = now / MS_PER_MINUTE;
        let mut cmds = Vec::new();
        for (rule, counted) in &pending.limited {
            let key = keys.limited_minute(rule, minute);
            for (member, n) in counted {
                cmds.push(plain(
                    redis::cmd("ZINCRBY").arg(&key).arg(*n).arg(member).clone(),
                ));
            }
            cmds.push(plain(
                redis::cmd("ZREMRANGEBYRANK")
                    .arg(&key)
                    .arg(0)
                    .arg(-(TOP_KEPT as i64) - 1)
                    .clone(),
            ));
            cmds.push(plain(
                redis::cmd("EXPIRE")
                    .arg(&key)
                    .arg(TOP_MINUTES_KEPT * 60 + 60)
                    .clone(),
            ));
        }
        families.push(cmds);
    }
    let hour_ttl = u64::from(cfg.retention_days) * 86_400 + 3_600;
    for (rule, hours) in pending.tracked {
        let limit = track_paths(&rule).unwrap_or(super::DEFAULT_TRACK_PATHS);
        let mut cmds = Vec::new();
        for (hour, paths) in hours {
            let k = keys.rule_hour(&rule, hour);
            let paths: Vec<(String, super::recorder::PathCount)> = paths.into_iter().collect();
            for part in paths.chunks(PATHS_PER_CALL) {
                let mut eval = redis::cmd("EVAL");
                eval.arg(TRACK_SCRIPT)
                    .arg(4 + part.len())
                    .arg(&k.paths)
                    .arg(&k.requests)
                    .arg(&k.clients)
                    .arg(k.path_clients(super::OTHER));
                for (path, _) in part {
                    eval.arg(k.path_clients(path));
                }
                eval.arg(limit).arg(hour_ttl).arg(part.len());
                for (path, count) in part {
                    eval.arg(path.as_str())
                        .arg(count.requests)
                        .arg(count.clients.len());
                    for ip in &count.clients {
                        eval.arg(ip.to_string());
                    }
                }
                cmds.push(Step {
                    cmd: eval,
                    track: true,
                });
            }
        }
        families.push(cmds);
    }
    families
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::ActivityConfig;
    use crate::keys::KeySpace;

    /// A track script call's paths (its ARGV after track_paths, ttl, n).
    fn paths_of(cmd: &Cmd) -> Vec<String> {
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        let keys: usize = args[2].parse().unwrap();
        let argv = &args[3 + keys..];
        let n: usize = argv[2].parse().unwrap();
        assert_eq!(keys, 4 + n, "one key per path");
        let (mut at, mut paths) = (3, Vec::new());
        for _ in 0..n {
            paths.push(argv[at].clone());
            let clients: usize = argv[at + 2].parse().unwrap();
            at += 3 + clients;
        }
        assert_eq!(at, argv.len());
        paths
    }

    #[test]
    fn a_second_merged_from_many_shards_goes_in_track_calls_of_at_most_a_shards_paths() {
        let activity = Activity::new(
            ActivityConfig {
                retention_days: 30,
                online_window: Duration::from_secs(3600),
                max_online: 10,
            },
            KeySpace::new("t").activity(),
            None,
            &mut Default::default(),
        );
        // Four shards' worth of distinct paths of one rule-hour, as `take` merges them.
        let sent = 4 * PATHS_PER_CALL + 5;
        let mut pending = Pending::default();
        let hour = pending.tracked.entry("pages".into()).or_default();
        let paths = hour.entry(7).or_default();
        for i in 0..sent {
            let c = paths.entry(format!("/p/{i}")).or_default();
            c.requests = 2;
            c.clients.insert("10.0.0.1".parse().unwrap());
        }
        let families = commands(&activity, pending, 0, &|_: &str| Some(50));
        let calls: Vec<Vec<String>> = families
            .iter()
            .flatten()
            .filter(|s| s.track)
            .map(|s| paths_of(&s.cmd))
            .collect();
        assert_eq!(calls.len(), 5, "{sent} paths in calls of {PATHS_PER_CALL}");
        assert!(calls.iter().all(|c| c.len() <= PATHS_PER_CALL));
        let all: BTreeSet<&String> = calls.iter().flatten().collect();
        assert_eq!(all.len(), sent, "every path in exactly one call");
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), sent);
    }
}
