//! The in-memory side of the activity counters: what a decision or a
//! heartbeat touches. No await and no Redis here; a shard's mutex is held for
//! a hash-map update only, and each worker thread has its own shard, so two
//! requests contend only when the flush swaps a shard out once a second.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustc_hash::{FxHashMap, FxHashSet};

/// Shards: more than the worker threads of a small machine; a thread keeps its own.
const SHARDS: usize = 16;

/// Distinct paths one shard keeps for one rule-hour between two flushes;
/// more in that second are counted under `other` at once. The global bound
/// (`track_paths`) is decided in Redis; this one only bounds a replica's
/// memory when a client sprays paths (100 000 distinct paths a second would
/// otherwise become 100 000 map entries).
pub const LOCAL_PATHS_PER_FLUSH: usize = 4096;

/// Distinct limited keys one shard keeps for one rule between two flushes;
/// more in that second are not counted (`tollgate_activity_lost_total{kind="limited"}`):
/// the keys that matter are the ones limited again and again, which are in
/// the map already. Bounds memory at 16 shards x 1 024 keys a rule.
pub const LOCAL_LIMITED_PER_FLUSH: usize = 1024;

/// The path name of everything beyond the bound. Real paths start with '/'.
pub const OTHER: &str = "other";

/// One path's second: requests and its distinct clients.
#[derive(Debug, Default)]
pub struct PathCount {
    pub requests: u64,
    pub clients: FxHashSet<IpAddr>,
}

/// What one shard gathered since the last flush.
#[derive(Debug, Default)]
pub struct Pending {
    /// Presence member (`ip:…` or `id:…`) -> last seen, ms since the epoch.
    pub heartbeats: FxHashMap<String, u64>,
    /// rule -> hour -> path -> counts.
    pub tracked: FxHashMap<String, FxHashMap<u64, FxHashMap<String, PathCount>>>,
    /// rule -> key -> times limited this second ("who is hurting").
    pub limited: FxHashMap<String, FxHashMap<String, u64>>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.heartbeats.is_empty() && self.tracked.is_empty() && self.limited.is_empty()
    }

    /// Requests held (what a failed flush loses).
    pub fn requests(&self) -> u64 {
        self.tracked
            .values()
            .flat_map(|hours| hours.values())
            .flat_map(|paths| paths.values())
            .map(|p| p.requests)
            .sum()
    }

    /// Fold another shard's second into this one.
    pub fn merge(&mut self, other: Pending) {
        for (member, seen) in other.heartbeats {
            let e = self.heartbeats.entry(member).or_default();
            *e = (*e).max(seen);
        }
        for (rule, keys) in other.limited {
            let mine = self.limited.entry(rule).or_default();
            for (key, n) in keys {
                *mine.entry(key).or_default() += n;
            }
        }
        for (rule, hours) in other.tracked {
            let mine = self.tracked.entry(rule).or_default();
            for (hour, paths) in hours {
                let mine = mine.entry(hour).or_default();
                for (path, count) in paths {
                    let e = mine.entry(path).or_default();
                    e.requests += count.requests;
                    e.clients.extend(count.clients);
                }
            }
        }
    }
}

/// One shard's share of `max_online` distinct members a second.
fn per_shard(max_online: u64) -> usize {
    (max_online as usize / SHARDS).max(1024)
}

pub struct Recorder {
    shards: Vec<Mutex<Pending>>,
    /// Most distinct heartbeat members one shard holds between two flushes
    /// (from `activity.max_online`, which a reload may change).
    max_heartbeats_per_shard: AtomicUsize,
}

impl Recorder {
    pub fn new(max_online: u64) -> Recorder {
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_heartbeats_per_shard: AtomicUsize::new(per_shard(max_online)),
        }
    }

    pub fn set_max_online(&self, max_online: u64) {
        self.max_heartbeats_per_shard
            .store(per_shard(max_online), Ordering::Relaxed);
    }

    /// This thread's shard.
    fn shard(&self) -> &Mutex<Pending> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static MINE: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        &self.shards[MINE.with(Cell::get)]
    }

    /// A request a tracked rule matched. `false`: not recorded (a poisoned shard).
    pub fn request(&self, rule: &str, hour: u64, path: &str, client: IpAddr) -> bool {
        let Ok(mut pending) = self.shard().lock() else {
            return false;
        };
        // Look up by &str first: only a rule-hour-path seen for the first time
        // this second allocates.
        if !pending.tracked.contains_key(rule) {
            pending
                .tracked
                .insert(rule.to_string(), FxHashMap::default());
        }
        let hours = pending.tracked.get_mut(rule).expect("inserted above");
        let paths = hours.entry(hour).or_default();
        let count = match paths.get_mut(path) {
            Some(c) => c,
            None => {
                let key = if paths.len() >= LOCAL_PATHS_PER_FLUSH {
                    OTHER
                } else {
                    path
                };
                paths.entry(key.to_string()).or_default()
            }
        };
        count.requests += 1;
        count.clients.insert(client);
        true
    }

    /// A decision `rule` limited for `key`. `false`: not recorded (this
    /// second already holds the shard's bound of distinct keys for the rule).
    pub fn limited(&self, rule: &str, key: &str) -> bool {
        let Ok(mut pending) = self.shard().lock() else {
            return false;
        };
        if !pending.limited.contains_key(rule) {
            pending
                .limited
                .insert(rule.to_string(), FxHashMap::default());
        }
        let keys = pending.limited.get_mut(rule).expect("inserted above");
        if let Some(n) = keys.get_mut(key) {
            *n += 1;
            return true;
        }
        if keys.len() >= LOCAL_LIMITED_PER_FLUSH {
            return false;
        }
        keys.insert(key.to_string(), 1);
        true
    }

    /// A heartbeat. `false`: not recorded (this second already holds the
    /// shard's share of `max_online` distinct members).
    pub fn heartbeat(&self, member: &str, now_ms: u64) -> bool {
        let Ok(mut pending) = self.shard().lock() else {
            return false;
        };
        if let Some(seen) = pending.heartbeats.get_mut(member) {
            *seen = (*seen).max(now_ms);
            return true;
        }
        if pending.heartbeats.len() >= self.max_heartbeats_per_shard.load(Ordering::Relaxed) {
            return false;
        }
        pending.heartbeats.insert(member.to_string(), now_ms);
        true
    }

    /// Everything gathered since the last call; the shards start empty again.
    pub fn take(&self) -> Pending {
        let mut all = Pending::default();
        for shard in &self.shards {
            let taken = match shard.lock() {
                Ok(mut p) => std::mem::take(&mut *p),
                Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
            };
            all.merge(taken);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fold_into_other_past_the_local_path_bound() {
        let r = Recorder::new(1000);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..LOCAL_PATHS_PER_FLUSH + 10 {
            assert!(r.request("pages", 7, &format!("/p{i}"), ip));
        }
        r.request("pages", 7, "/p0", "10.0.0.2".parse().unwrap());
        let p = r.take();
        let paths = &p.tracked["pages"][&7];
        assert_eq!(paths.len(), LOCAL_PATHS_PER_FLUSH + 1);
        assert_eq!(paths[OTHER].requests, 10);
        assert_eq!(paths["/p0"].requests, 2);
        assert_eq!(paths["/p0"].clients.len(), 2);
        assert_eq!(p.requests(), LOCAL_PATHS_PER_FLUSH as u64 + 11);
        assert!(r.take().is_empty(), "take empties the shards");
    }

    #[test]
    fn limited_keys_count_per_rule_within_a_bound() {
        let r = Recorder::new(1000);
        assert!(r.limited("login", "203.0.113.9"));
        assert!(r.limited("login", "203.0.113.9"));
        for i in 0..LOCAL_LIMITED_PER_FLUSH + 10 {
            r.limited("api", &format!("k{i}"));
        }
        assert!(r.limited("api", "k0"), "a key held already still counts");
        assert!(!r.limited("api", "new"), "past the bound");
        let p = r.take();
        assert_eq!(p.limited["login"]["203.0.113.9"], 2);
        assert_eq!(p.limited["api"].len(), LOCAL_LIMITED_PER_FLUSH);
        assert_eq!(p.limited["api"]["k0"], 2);
    }

    #[test]
    fn heartbeats_keep_the_latest_time_and_a_bound() {
        let r = Recorder::new(1);
        assert!(r.heartbeat("id:a", 5));
        assert!(r.heartbeat("id:a", 3));
        for i in 0..2000 {
            r.heartbeat(&format!("id:{i}"), 1);
        }
        assert!(!r.heartbeat("id:new", 1), "past the per-second bound");
        let p = r.take();
        assert_eq!(p.heartbeats["id:a"], 5);
        assert_eq!(p.heartbeats.len(), 1024);
    }
}
