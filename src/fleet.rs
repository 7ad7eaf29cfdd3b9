//! The fleet registry: every replica sharing a Redis (and a prefix) says it is
//! alive, and learns how many others are.
//!
//! Why: with `on_redis_error = "local"`, each replica enforces its share of a
//! limit while Redis is away. The share must be `limit / replicas`, and the
//! number of replicas is what this module keeps: each replica beats every
//! [`BEAT_EVERY`] (`fleet/beat.rs`, `lua/fleet_beat.lua`), and one that has
//! not beaten for [`TTL`] is gone. Two keys under one hash tag
//! (`KeySpace::fleet`): a sorted set of last beats (Redis time) and a hash of
//! descriptions, so the beat is one script call on a Cluster too.
//!
//! The count the fallback divides by is the live replicas the last
//! successful beat saw ([`LiveCount`]), with those this replica saw within
//! the TTL ([`merge`]): while Redis is down no beat succeeds, so the count
//! stays what it was when Redis was last up, and a Redis back empty does not
//! lower it. A replica that has never reached Redis divides by 1.
//!
//! The rounding ([`share`]): each replica admits `max(1, floor(limit / n))`,
//! so the fleet admits at most `n × max(1, floor(limit / n)) ≤ max(limit, n)`
//! per period while Redis is away.

pub mod beat;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::{Config, FallbackReplicas};
use crate::keys::FleetKeys;
use crate::redis_conn::{Endpoint, SharedConn};

/// How often each replica beats.
pub const BEAT_EVERY: Duration = Duration::from_secs(2);
/// A replica not seen for this long is dropped from the fleet (five missed beats).
pub const TTL: Duration = Duration::from_secs(10);
/// Bounds each beat (not on the request path).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// What each `local` fallback divides by, given the setting and the live
/// replicas last seen (0: never seen).
pub fn divisor(setting: FallbackReplicas, live: u64) -> u64 {
    match setting {
        FallbackReplicas::Fixed(n) => u64::from(n).max(1),
        FallbackReplicas::Auto => live.max(1),
    }
}

/// One replica's share of a limit (or of a gcra burst): floor, at least 1.
pub fn share(value: u64, divisor: u64) -> u64 {
    (value / divisor.max(1)).max(1)
}

/// The live replicas the last successful beat saw (0: none yet). Written by
/// the beat task, read by the limiter's fallback on every `local` call.
#[derive(Clone, Default)]
pub struct LiveCount(Arc<AtomicU64>);

impl LiveCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// What a replica says about itself in each beat (the `info` hash's JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Description {
    pub version: String,
    /// [`config_hash`] of the config it runs (after a reload, the new one).
    pub config_hash: String,
    /// Its uptime when it sent this beat.
    pub uptime_ms: u64,
    /// Its decision listener (`server.listen`, as bound).
    pub listen: String,
}

/// One replica as this one knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    /// Its last beat, on this replica's clock (the beat's age on Redis's
    /// clock, taken from when the answer arrived: no two clocks compared).
    pub last_seen: Instant,
    pub description: Description,
}

/// The fleet as this replica counts it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the last beat that reached Redis answered.
    pub at: Instant,
    /// Sorted by id.
    pub members: Vec<Member>,
}

/// The live replicas after a beat: those the registry answered, and those
/// this replica saw less than [`TTL`] ago that the registry no longer
/// holds. The second kind is why: a Redis that comes back empty answers
/// the first beats with only the replicas that have beaten since, and a
/// second outage then must not find the count low. The price: a replica
/// that stopped cleanly still counts here until its TTL (a larger divisor,
/// the safe side).
pub fn merge(previous: &[Member], answered: Vec<Member>, now: Instant) -> Vec<Member> {
    let mut members = answered;
    for old in previous {
        let fresh = now.saturating_duration_since(old.last_seen) <= TTL;
        if fresh && !members.iter().any(|m| m.id == old.id) {
            members.push(old.clone());
        }
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members
}

/// The registry as this replica takes part in it.
pub struct Fleet {
    /// This replica's id in the registry: host name and a random suffix
    /// (replicas in containers share host names and ports).
    pub id: String,
    pub keys: FleetKeys,
    /// `None`: the embedded store (one replica, nothing to register).
    conn: Option<SharedConn>,
    pub live: LiveCount,
    seen: ArcSwapOption<Seen>,
    pub started: Instant,
    /// `tollgate_fleet_replicas`: the live replicas last seen.
    replicas: Gauge,
    /// `tollgate_fleet_registry_up`: 1 while beats reach Redis.
    up: Gauge,
}

impl Fleet {
    pub fn new(
        endpoint: Option<Endpoint>,
        keys: FleetKeys,
        live: LiveCount,
        registry: &mut Registry,
    ) -> Fleet {
        let (replicas, up) = (Gauge::default(), Gauge::default());
        registry.register(
            "fleet_replicas",
            "Live replicas the last fleet registry beat saw (what on_redis_error = \"local\" divides by with fallback_replicas = \"auto\")",
            replicas.clone(),
        );
        registry.register(
            "fleet_registry_up",
            "1 while this replica's fleet registry beats reach Redis",
            up.clone(),
        );
        Fleet {
            id: format!("{}-{:06x}", host_name(), rand::random::<u32>() & 0xff_ffff),
            keys,
            conn: endpoint.map(|e| SharedConn::new(e, CALL_TIMEOUT)),
            live,
            seen: ArcSwapOption::empty(),
            started: Instant::now(),
            replicas,
            up,
        }
    }

    /// Whether this replica takes part in a registry (it has a Redis).
    pub fn enabled(&self) -> bool {
        self.conn.is_some()
    }

    /// The last successful beat's answer, if any.
    pub fn seen(&self) -> Option<Arc<Seen>> {
        self.seen.load_full()
    }

    /// Whether the last beat reached Redis.
    pub fn registry_up(&self) -> bool {
        self.up.get() == 1
    }
}

/// A short fingerprint of the settings every replica of a fleet should share
/// (rules, prefix, `[api]`, `[client_ip]`, `[allowlist]`, `[local_store]`,
/// `[activity]`, the fallback settings): 12 hex digits of SHA-1 over their
/// effective values. Listen addresses, the admin token and Redis credentials
/// are left out, so replicas that differ only there show the same hash. Two
/// replicas of one version with one hash enforce the same rules.
pub fn config_hash(config: &Config) -> String {
    let fallback = config
        .redis
        .as_ref()
        .map(|r| (r.timeout, r.fallback_replicas, r.deny_cache_bytes));
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        config.prefix,
        config.rules,
        config.api,
        config.client_ip,
        config.allowlist,
        config.local_store,
        config.activity,
        fallback,
    );
    let mut hash = sha1_smol::Sha1::from(text).digest().to_string();
    hash.truncate(12);
    hash
}

/// The machine's name, for a readable replica id ("tollgate" if unknown).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tollgate".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_admits_the_floor_of_its_share_and_at_least_one() {
        assert_eq!(share(5, 1), 5);
        assert_eq!(share(5, 2), 2);
        assert_eq!(share(5, 3), 1);
        assert_eq!(share(6, 3), 2);
        // More replicas than the limit: one each (the fleet may admit n > limit).
        assert_eq!(share(5, 8), 1);
        assert_eq!(share(0, 3), 1);
        assert_eq!(share(7, 0), 7);
    }

    #[test]
    fn the_fleet_admits_at_most_the_limit_or_one_per_replica() {
        for limit in 1..=200u64 {
            for n in 1..=40u64 {
                let fleet = n * share(limit, n);
                assert!(
                    fleet <= limit.max(n),
                    "limit {limit}, {n} replicas: {fleet}"
                );
                // The floor leaves out less than one request per replica.
                if limit >= n {
                    assert!(fleet + n > limit, "limit {limit}, {n} replicas: {fleet}");
                }
            }
        }
    }

    fn member(id: &str, last_seen: Instant) -> Member {
        Member {
            id: id.into(),
            last_seen,
            description: Description::default(),
        }
    }

    #[test]
    fn replicas_the_registry_lost_still_count_until_their_ttl() {
        let t0 = Instant::now();
        let before = vec![member("a", t0), member("b", t0), member("c", t0)];
        // Redis came back empty: the first beat answers only this replica.
        let now = t0 + BEAT_EVERY;
        let after = merge(&before, vec![member("a", now)], now);
        let ids: Vec<&str> = after.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(after[0].last_seen, now);
        // Past the TTL, only what the registry answers.
        let later = t0 + TTL + Duration::from_millis(1);
        let after = merge(&after, vec![member("a", later), member("c", later)], later);
        let ids: Vec<&str> = after.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn auto_divides_by_the_live_replicas_last_seen_and_a_number_is_fixed() {
        assert_eq!(divisor(FallbackReplicas::Auto, 3), 3);
        // Never seen the registry (Redis down since start): the whole limit.
        assert_eq!(divisor(FallbackReplicas::Auto, 0), 1);
        assert_eq!(divisor(FallbackReplicas::Fixed(4), 3), 4);
        assert_eq!(divisor(FallbackReplicas::Fixed(0), 3), 1);
    }

    #[test]
    fn the_config_hash_ignores_listen_addresses_and_follows_the_rules() {
        let text = "[[rule]]\nname = \"a\"\nmatch = { path_prefix = \"/\" }\nlimits = [\"5/m\"]\n";
        let ov = crate::config::Overrides::default();
        let a = crate::config::parse("a.toml", text, &ov).unwrap();
        let mut b = a.clone();
        b.server.listen = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_eq!(config_hash(&a).len(), 12);
        let c = crate::config::parse("c.toml", &text.replace("5/m", "6/m"), &ov).unwrap();
        assert_ne!(config_hash(&a), config_hash(&c));
    }

    #[test]
    fn fallback_replicas_is_auto_by_default_or_a_number_and_anything_else_is_named() {
        let parse = |line: &str| {
            let text = format!("[redis]\nurl = \"redis://127.0.0.1:6379\"\n{line}\n");
            crate::config::parse("t.toml", &text, &Default::default())
                .map(|c| c.redis.unwrap().fallback_replicas)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(""), Ok(FallbackReplicas::Auto));
        assert_eq!(
            parse("fallback_replicas = \"auto\""),
            Ok(FallbackReplicas::Auto)
        );
        assert_eq!(
            parse("fallback_replicas = 3"),
            Ok(FallbackReplicas::Fixed(3))
        );
        for bad in ["0", "-2", "\"many\"", "2.5", "[1]"] {
            let err = parse(&format!("fallback_replicas = {bad}")).unwrap_err();
            assert!(
                err.contains("t.toml:3: redis.fallback_replicas"),
                "{bad}: {err}"
            );
            assert!(err.contains("\"auto\""), "{bad}: {err}");
        }
    }
}
