//! Denials remembered until their `retry_after`, so a flood of blocked clients
//! does not hammer Redis. Exact for every algorithm: a denied request consumes
//! nothing, and until `retry_after` the shared state can only get fuller
//! (other replicas only add), so the answer from Redis would be a denial too.
//! Only cost-1 denials are cached: a smaller cost might fit where a larger one
//! did not. Bounded: least recently used keys are evicted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use super::Outcome;
use crate::rate::Rate;

pub struct DenyCache {
    /// Keyed by the call's key base (rule, key, algorithm).
    cache: Option<Cache<String, Arc<Entry>>>,
    /// Whether resets from other replicas are being heard (see
    /// `server/resets.rs`); while not, nothing is cached or answered, since a
    /// reset made elsewhere could be missed.
    live: AtomicBool,
}

struct Entry {
    /// The limits the denial was for (a rule reload or an ad-hoc call with
    /// other limits must not be answered from it).
    limits: Vec<Rate>,
    at: Instant,
    until: Instant,
    outcome: Outcome,
}

impl DenyCache {
    /// `capacity` 0 disables the cache. It starts not live: nothing is
    /// cached until [`set_live`](Self::set_live) says resets are heard.
    pub fn new(capacity: usize) -> Self {
        DenyCache {
            cache: (capacity > 0).then(|| Cache::new(capacity)),
            live: AtomicBool::new(false),
        }
    }

    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
    }

    fn in_use(&self) -> Option<&Cache<String, Arc<Entry>>> {
        self.cache
            .as_ref()
            .filter(|_| self.live.load(Ordering::Relaxed))
    }

    /// The remembered denial, with times counted down, if still in force.
    pub fn get(&self, base: &str, limits: &[Rate]) -> Option<Outcome> {
        let e = self.in_use()?.get(base)?;
        let now = Instant::now();
        if now >= e.until || e.limits != limits {
            return None;
        }
        let elapsed = now.duration_since(e.at).as_millis() as u64;
        let mut outcome = e.outcome.clone();
        outcome.retry_after_ms = e.until.duration_since(now).as_millis().max(1) as u64;
        for l in &mut outcome.limits {
            l.reset_ms = l.reset_ms.saturating_sub(elapsed);
        }
        Some(outcome)
    }

    pub fn insert(&self, base: &str, limits: &[Rate], outcome: &Outcome) {
        let Some(cache) = self.in_use() else { return };
        if outcome.allowed || outcome.retry_after_ms == 0 {
            return;
        }
        let at = Instant::now();
        cache.insert(
            base.to_string(),
            Arc::new(Entry {
                limits: limits.to_vec(),
                at,
                until: at + Duration::from_millis(outcome.retry_after_ms),
                outcome: outcome.clone(),
            }),
        );
    }

    pub fn remove(&self, base: &str) {
        if let Some(cache) = &self.cache {
            cache.remove(base);
        }
    }

    /// Forget everything (after a reload, or when resets may have been missed).
    pub fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
