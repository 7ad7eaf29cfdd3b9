//! The beat task: every `BEAT_EVERY`, one `lua/fleet_beat.lua` call writes
//! this replica's last beat and description, drops replicas silent for
//! `TTL`, and answers the live fleet; the count goes to `LiveCount` (what
//! the `local` fallback divides by, merged with the replicas seen within the
//! TTL: `fleet::merge`). On shutdown the replica leaves the registry, so a
//! replica that starts later does not count it.
//!
//! A failed beat changes nothing the fallback uses (the count stays as last
//! seen, which is the point): it is logged once on entering the state and
//! once on leaving it, with `tollgate_fleet_registry_up` 0 meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Description, Fleet, Member, Seen, BEAT_EVERY, CALL_TIMEOUT, TTL};
use crate::redis_conn::StoreError;

/// `lua/fleet_beat.lua`, sent with EVAL every time: 2 KB every 2 s is
/// nothing, and EVALSHA stays the limiter's alone (what counts its calls,
/// like the deny cache's tests, sees no beat).
const SCRIPT: &str = include_str!("../../lua/fleet_beat.lua");

/// The beat task, until `stop`. `listen` is this replica's decision
/// listener; `config_hash` the hash of the config it runs now (a reload
/// changes it).
pub async fn run<F>(fleet: Arc<Fleet>, listen: String, config_hash: F, stop: CancellationToken)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    if !fleet.enabled() {
        return;
    }
    beat_loop(&fleet, &listen, &config_hash, &stop)
        .instrument(tracing::info_span!("fleet_beat", replica = %fleet.id))
        .await
}

async fn beat_loop(
    fleet: &Fleet,
    listen: &str,
    config_hash: &(dyn Fn() -> String + Sync),
    stop: &CancellationToken,
) {
    let mut tick = tokio::time::interval(BEAT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let me = Description {
            version: env!("CARGO_PKG_VERSION").into(),
            config_hash: config_hash(),
            uptime_ms: fleet.started.elapsed().as_millis() as u64,
            listen: listen.to_string(),
        };
        match call(fleet, &me, "beat").await {
            Ok(answered) => {
                fleet.saw(answered, Instant::now());
                if failing {
                    failing = false;
                    tracing::info!(
                        replicas = fleet.live.get(),
                        "fleet registry back: beats reach Redis again"
                    );
                }
            }
            Err(e) => {
                if let Some(conn) = &fleet.conn {
                    conn.forget();
                }
                fleet.up.set(0);
                if !failing {
                    failing = true;
                    tracing::warn!(cause = %redis_words(&e), live = fleet.live.get(), "fleet registry unreachable: on_redis_error = \"local\" keeps dividing by the replicas last seen");
                }
            }
        }
    }
    // Leave, so the others count one fewer at their next beat (not after the
    // TTL). Best effort, and not tried while beats fail (shutdown would wait
    // on a Redis that is away): a replica that cannot leave expires.
    if failing {
        return;
    }
    let me = Description::default();
    if let Err(e) = call(fleet, &me, "leave").await {
        tracing::info!(cause = %redis_words(&e), "could not leave the fleet registry: the others drop this replica after {TTL:?}");
    }
}

/// Redis's own words for a failed beat. Not the error's whole text: the
/// limiter logs the state ("Redis unreachable", "Redis refuses (oom)") in a
/// line of its own, once, and this line must not read as a second one.
fn redis_words(e: &StoreError) -> String {
    match std::error::Error::source(e) {
        Some(redis) => redis.to_string(),
        None => e.to_string(),
    }
}

/// One script call: `beat` or `leave`; the fleet as it stands after it.
async fn call(fleet: &Fleet, me: &Description, action: &str) -> Result<Vec<Member>, StoreError> {
    let Some(shared) = &fleet.conn else {
        return Err(StoreError::Unsupported("the embedded store has no fleet"));
    };
    let mut conn = shared.get().await?;
    let json = serde_json::to_string(me).map_err(|e| StoreError::Reply(e.to_string()))?;
    let mut eval = redis::cmd("EVAL");
    eval.arg(SCRIPT)
        .arg(2)
        .arg(&fleet.keys.seen)
        .arg(&fleet.keys.info)
        .arg(&fleet.id)
        .arg(json)
        .arg(TTL.as_millis() as u64)
        .arg(action);
    let reply: Vec<String> = tokio::time::timeout(CALL_TIMEOUT, eval.query_async(&mut conn))
        .await
        .map_err(|_| StoreError::Timeout(CALL_TIMEOUT))?
        .map_err(StoreError::from)?;
    parse(&reply, Instant::now())
}

/// `{now, id, last_seen, json, …}` (the script's reply), arrived at `at`:
/// the members the registry holds, sorted by id.
fn parse(reply: &[String], at: Instant) -> Result<Vec<Member>, StoreError> {
    let bad = || StoreError::Reply(format!("fleet_beat: {reply:?}"));
    let (now, rest) = reply.split_first().ok_or_else(bad)?;
    let now: u64 = now.parse().map_err(|_| bad())?;
    if rest.len() % 3 != 0 {
        return Err(bad());
    }
    let mut members = rest
        .chunks(3)
        .map(|m| {
            let last: u64 = m[1].parse().map_err(|_| bad())?;
            let age = Duration::from_millis(now.saturating_sub(last));
            Ok(Member {
                id: m[0].clone(),
                last_seen: at.checked_sub(age).unwrap_or(at),
                // A description this version cannot read still counts as a replica.
                description: serde_json::from_str(&m[2]).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(members)
}

impl Fleet {
    /// A successful beat: merged with what this replica saw before (see
    /// `merge`), the count the fallback divides by, the gauges, and one log
    /// line when the count changes.
    fn saw(&self, answered: Vec<Member>, at: Instant) {
        let previous = self.seen();
        let members = super::merge(
            previous.as_ref().map_or(&[][..], |p| &p.members[..]),
            answered,
            at,
        );
        let n = members.len() as u64;
        let before = self.live.get();
        self.live.set(n);
        self.replicas.set(n as i64);
        self.up.set(1);
        if n != before {
            tracing::info!(
                replicas = n,
                was = before,
                "fleet: {n} live replica(s) share this Redis; with fallback_replicas = \"auto\", on_redis_error = \"local\" divides each limit by {n}"
            );
        }
        self.seen.store(Some(Arc::new(Seen { at, members })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_reply_reads_as_the_live_members() {
        let reply: Vec<String> = [
            "1000",
            "a-1",
            "990",
            r#"{"version":"0.1.0","config_hash":"abc","uptime_ms":5,"listen":"127.0.0.1:8080"}"#,
            "b-2",
            "1000",
            "not json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let at = Instant::now();
        let members = parse(&reply, at).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].id, "a-1");
        assert_eq!(members[0].last_seen, at - Duration::from_millis(10));
        assert_eq!(members[0].description.config_hash, "abc");
        assert_eq!(members[1].last_seen, at);
        assert_eq!(members[1].description, Description::default());
        assert!(parse(&reply[..3], at).is_err());
        assert!(parse(&[], at).is_err());
    }
}
