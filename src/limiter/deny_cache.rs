//! Denials remembered until their `retry_after`, so a flood of blocked clients
//! does not hammer Redis. Exact for every algorithm: a denied request consumes
//! nothing, and until `retry_after` the shared state can only get fuller
//! (other replicas only add), so the answer from Redis would be a denial too.
//! Only cost-1 denials are cached: a smaller cost might fit where a larger one
//! did not. Bounded in bytes (`redis.deny_cache_bytes`): the least recently
//! used entries are evicted, which is always safe (an evicted denial is asked
//! of Redis again); each eviction counts in `tollgate_deny_cache_evictions_total`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwapOption, Guard};
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use super::Outcome;
use crate::rate::Rate;

/// Bytes an entry costs beyond its key and limits: the `Entry`, its `Arc`, the
/// cache's own bookkeeping (an estimate, on the high side).
const ENTRY_OVERHEAD: u64 = 192;

type Inner = Cache<String, Arc<Entry>, ByBytes, DefaultHashBuilder, CountEvictions>;

pub struct DenyCache {
    /// Keyed by the call's key base (rule, key, algorithm). `None`: off
    /// (0 bytes). Replaced whole when a reload changes the bound (`resize`).
    cache: ArcSwapOption<Inner>,
    evictions: Counter,
    /// Whether resets from other replicas are being heard (see
    /// `server/resets.rs`); while not, nothing is cached or answered, since a
    /// reset made elsewhere could be missed.
    live: AtomicBool,
    /// Resets seen so far (any key): a store call notes it before asking.
    generation: AtomicU64,
}

/// An entry's weight is its estimated size in bytes.
#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Arc<Entry>> for ByBytes {
    fn weight(&self, key: &String, e: &Arc<Entry>) -> u64 {
        ENTRY_OVERHEAD
            + key.len() as u64
            + (e.limits.len() * std::mem::size_of::<Rate>()) as u64
            + (e.outcome.limits.len() * std::mem::size_of::<super::LimitState>()) as u64
    }
}

#[derive(Clone)]
struct CountEvictions(Counter);

impl Lifecycle<String, Arc<Entry>> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _: String, _: Arc<Entry>) {
        self.0.inc();
    }
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
    /// At most `max_bytes` (estimated) of entries; 0 disables the cache. It
    /// starts not live: nothing is cached until [`set_live`](Self::set_live)
    /// says resets are heard.
    /// `evictions` counts entries dropped to stay under the bound.
    pub fn new(max_bytes: usize, evictions: Counter) -> Self {
        DenyCache {
            cache: ArcSwapOption::from(build(max_bytes, &evictions)),
            evictions,
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// A reload's new `redis.deny_cache_bytes`: an empty cache of that bound
    /// (0: off). What was cached is dropped, as a reload drops it anyway.
    pub fn resize(&self, max_bytes: usize) {
        self.cache.store(build(max_bytes, &self.evictions));
    }

    /// The remembered denial, with times counted down, if still in force.
    pub fn get(&self, base: &str, limits: &[Rate]) -> Option<Outcome> {
        let cache = self.in_use()?;
        let e = cache.as_ref()?.get(base)?;
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

    /// Bumped by every `remove` and `clear` (a reset): see `insert_unless_reset`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Remember a denial computed by a store call that started at
    /// `generation`, unless a reset came in since: a denial read before a
    /// `limits reset` whose message cleared the cache first must not be
    /// stored after it (the client would stay denied from memory until the
    /// old `retry_after`). The generation is read again after the insert: a
    /// reset either bumped it by then (and this insert is undone here) or
    /// removes the entry itself afterwards.
    pub fn insert_unless_reset(
        &self,
        base: &str,
        limits: &[Rate],
        outcome: &Outcome,
        generation: u64,
    ) {
        if self.generation() != generation {
            return;
        }
        self.insert(base, limits, outcome);
        if self.generation() != generation {
            if let Some(cache) = &*self.cache.load() {
                cache.remove(base);
            }
        }
    }

    pub fn insert(&self, base: &str, limits: &[Rate], outcome: &Outcome) {
        let Some(cache) = self.in_use() else { return };
        let Some(cache) = cache.as_ref() else { return };
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

    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
    }

    fn in_use(&self) -> Option<Guard<Option<Arc<Inner>>>> {
        self.live.load(Ordering::Relaxed).then(|| self.cache.load())
    }

    pub fn remove(&self, base: &str) {
        // Before the removal: a store call in flight then cannot store its
        // (pre-reset) denial after it (`insert_unless_reset`).
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &*self.cache.load() {
            cache.remove(base);
        }
    }

    /// Forget everything (after a reload, or when resets may have been missed).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &*self.cache.load() {
            cache.clear();
        }
    }

    /// The bound in bytes (0: off).
    pub fn capacity(&self) -> u64 {
        self.cache.load().as_ref().map_or(0, |c| c.capacity())
    }

    pub fn len(&self) -> usize {
        self.cache.load().as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held (never above the bound).
    pub fn bytes(&self) -> u64 {
        self.cache.load().as_ref().map_or(0, |c| c.weight())
    }
}

/// A cache of at most `max_bytes` (estimated); `None` for 0.
fn build(max_bytes: usize, evictions: &Counter) -> Option<Arc<Inner>> {
    let max = max_bytes as u64;
    (max > 0).then(|| {
        let estimated_items = (max / (ENTRY_OVERHEAD + 64)).max(1) as usize;
        Arc::new(Cache::with(
            estimated_items,
            max,
            ByBytes,
            DefaultHashBuilder::default(),
            CountEvictions(evictions.clone()),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::LimitState;

    fn denial() -> Outcome {
        Outcome {
            allowed: false,
            retry_after_ms: 60_000,
            limits: vec![LimitState {
                limit: 1,
                period_ms: 60_000,
                remaining: 0,
                reset_ms: 60_000,
            }],
        }
    }

    #[test]
    fn a_denial_read_before_a_reset_is_not_cached_after_it() {
        let cache = DenyCache::new(64 * 1024, Counter::default());
        cache.set_live(true);
        let limits = [Rate {
            limit: 1,
            period_ms: 60_000,
        }];
        // A store call starts, the reset's message clears the key, then the
        // call's (pre-reset) denial comes back.
        let started = cache.generation();
        cache.remove("tg:rl:{login|ip}:fw");
        cache.insert_unless_reset("tg:rl:{login|ip}:fw", &limits, &denial(), started);
        assert_eq!(cache.get("tg:rl:{login|ip}:fw", &limits), None);
        // With no reset in between, the denial is cached as before.
        let started = cache.generation();
        cache.insert_unless_reset("tg:rl:{login|ip}:fw", &limits, &denial(), started);
        assert!(cache.get("tg:rl:{login|ip}:fw", &limits).is_some());
        // A clear (reload, missed resets) counts as a reset too.
        let started = cache.generation();
        cache.clear();
        cache.insert_unless_reset("k", &limits, &denial(), started);
        assert_eq!(cache.get("k", &limits), None);
    }

    #[test]
    fn the_cache_stays_under_its_byte_bound_and_counts_evictions() {
        let evictions = Counter::default();
        let cache = DenyCache::new(64 * 1024, evictions.clone());
        cache.set_live(true);
        let limits = [Rate {
            limit: 1,
            period_ms: 60_000,
        }];
        // Keys of 1 KiB each: far more bytes than the bound, in few entries.
        let long = "k".repeat(1024);
        for i in 0..1_000 {
            cache.insert(&format!("{i}:{long}"), &limits, &denial());
            assert!(cache.bytes() <= 64 * 1024, "{} bytes", cache.bytes());
        }
        assert!(cache.len() < 64, "{} entries of over 1 KiB", cache.len());
        assert!(evictions.get() > 900, "{} evictions", evictions.get());
        // What is left still answers.
        let kept = (0..1_000)
            .filter(|i| cache.get(&format!("{i}:{long}"), &limits).is_some())
            .count();
        assert_eq!(kept, cache.len());
    }

    #[test]
    fn a_resized_cache_is_empty_and_holds_to_its_new_bound() {
        let cache = DenyCache::new(0, Counter::default());
        cache.set_live(true);
        let limits = [Rate {
            limit: 1,
            period_ms: 60_000,
        }];
        cache.insert("a", &limits, &denial());
        assert!(cache.get("a", &limits).is_none(), "0 bytes: off");
        cache.resize(4096);
        assert_eq!(cache.capacity(), 4096);
        cache.insert("a", &limits, &denial());
        assert!(cache.get("a", &limits).is_some(), "on after a resize");
        cache.resize(8192);
        assert!(cache.is_empty(), "what was cached is dropped");
        cache.resize(0);
        cache.insert("a", &limits, &denial());
        assert!(cache.get("a", &limits).is_none(), "off again");
    }
}
