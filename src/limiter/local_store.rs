//! The embedded store: the four algorithms in process memory, with the same
//! semantics as the Lua scripts. One replica only: nothing is shared.
//! Also serves as the per-replica fallback when Redis is away.
//! Bounded in bytes (`local_store.max_bytes`, see `memory_bound.rs`).

use std::time::Instant;

use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;

use super::fixed_window::{self, FixedSlot};
use super::gcra::{self, GcraSlot};
use super::memory_bound::Budget;
use super::sliding_log::{self, LogSlot};
use super::sliding_window::{self, WindowSlot};
use super::{Algorithm, Call, Outcome, Slot};
use crate::rate::Rate;

pub struct LocalStore {
    /// Keyed by the call's key base; one entry holds all limits of the call, so
    /// the entry's lock makes check-and-charge of every limit one atomic step.
    map: DashMap<String, Entry>,
    origin: Instant,
    budget: Budget,
}

/// Bytes of one entry beyond its key and slots: the map's bucket, the key's
/// `String`, the `Entry` and its `Vec`s (an estimate, on the high side).
const ENTRY_OVERHEAD: usize = 128;

struct Entry {
    /// `periods[i]` is the period of `slots[i]`: like Redis's one key per
    /// period, a counter is shared by every call that names its period.
    periods: Vec<u64>,
    slots: Slots,
    /// What this entry counts against the budget (as of its last call).
    bytes: u64,
}

impl Entry {
    fn bytes(&self, key_len: usize) -> u64 {
        (ENTRY_OVERHEAD
            + key_len
            + self.periods.capacity() * std::mem::size_of::<u64>()
            + self.slots.bytes()) as u64
    }
}

enum Slots {
    Fixed(Vec<FixedSlot>),
    Window(Vec<WindowSlot>),
    Log(Vec<LogSlot>),
    Gcra(Vec<GcraSlot>),
}

impl Slots {
    fn new(algorithm: Algorithm, n: usize) -> Slots {
        match algorithm {
            Algorithm::FixedWindow => Slots::Fixed(vec![Default::default(); n]),
            Algorithm::SlidingWindow => Slots::Window(vec![Default::default(); n]),
            Algorithm::SlidingLog => Slots::Log(vec![Default::default(); n]),
            Algorithm::Gcra => Slots::Gcra(vec![Default::default(); n]),
        }
    }

    fn bytes(&self) -> usize {
        fn sum<S: Slot>(v: &Vec<S>) -> usize {
            v.capacity() * std::mem::size_of::<S>() + v.iter().map(Slot::heap_bytes).sum::<usize>()
        }
        match self {
            Slots::Fixed(v) => sum(v),
            Slots::Window(v) => sum(v),
            Slots::Log(v) => sum(v),
            Slots::Gcra(v) => sum(v),
        }
    }

    fn expires_us(&self) -> u64 {
        fn latest<S: Slot>(v: &[S]) -> u64 {
            v.iter().map(Slot::expires_us).max().unwrap_or(0)
        }
        match self {
            Slots::Fixed(v) => latest(v),
            Slots::Window(v) => latest(v),
            Slots::Log(v) => latest(v),
            Slots::Gcra(v) => latest(v),
        }
    }
}

impl LocalStore {
    /// At most `max_bytes` (estimated) of counters; `refusals` counts the
    /// calls refused at the bound.
    pub fn new(max_bytes: usize, refusals: Counter) -> Self {
        LocalStore {
            map: DashMap::new(),
            origin: Instant::now(),
            budget: Budget::new(max_bytes, refusals),
        }
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Bytes a call may add: a new entry (`new_key`), and a sliding_log's new members.
    fn growth(call: &Call<'_>, new_key: bool) -> u64 {
        let n = call.limits.len();
        // An admission is one run (time, units) per limit, whatever its cost.
        let log = if call.algorithm == Algorithm::SlidingLog {
            n * std::mem::size_of::<(u64, u64)>()
        } else {
            0
        };
        let new = if new_key {
            ENTRY_OVERHEAD + call.base.len() + n * 64
        } else {
            0
        };
        (log + new) as u64
    }

    /// Microseconds on a monotonic clock; offset so that it is never near 0.
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64 + 1_000_000_000_000
    }

    pub fn check(&self, call: Call<'_>) -> Outcome {
        self.check_at(call, self.now_us())
    }

    /// `check` at a given time (µs; must not go backwards for one key), so
    /// a test can feed this store and a Redis script the same clock.
    pub fn check_at(&self, call: Call<'_>, now: u64) -> Outcome {
        // Far from the bound (the usual case) no lookup is needed to know a call fits.
        let growth = match self.budget.fits(Self::growth(&call, true)) {
            true => 0,
            false => Self::growth(&call, !self.map.contains_key(call.base)),
        };
        if growth > 0 && !self.budget.fits(growth) {
            if self.budget.may_sweep() {
                self.sweep();
            }
            if !self.budget.fits(growth) {
                return self.budget.refuse(call.limits);
            }
        }
        // A known key is looked up by `&str`; only a new one allocates its String.
        let mut entry = match self.map.get_mut(call.base) {
            Some(e) => e,
            None => self
                .map
                .entry(call.base.to_string())
                .or_insert_with(|| Entry {
                    periods: Vec::new(),
                    slots: Slots::new(call.algorithm, 0),
                    bytes: 0,
                }),
        };
        let outcome = Self::run(&mut entry, now, call);
        let bytes = entry.bytes(call.base.len());
        self.budget.changed(entry.bytes, bytes);
        entry.bytes = bytes;
        outcome
    }

    fn run(entry: &mut Entry, now: u64, call: Call<'_>) -> Outcome {
        let Entry { periods, slots, .. } = entry;
        let (limits, cost) = (call.limits, call.cost);
        match slots {
            Slots::Fixed(s) => fixed_window::check(now, limits, arrange(periods, s, limits), cost),
            Slots::Window(s) => {
                sliding_window::check(now, limits, arrange(periods, s, limits), cost)
            }
            Slots::Log(s) => sliding_log::check(now, limits, arrange(periods, s, limits), cost),
            Slots::Gcra(s) => {
                gcra::check(now, limits, arrange(periods, s, limits), cost, call.burst)
            }
        }
    }

    /// Forget the counters of one key base (all its limits).
    pub fn reset(&self, base: &str) -> bool {
        match self.map.remove(base) {
            Some((_, e)) => {
                self.budget.changed(e.bytes, 0);
                true
            }
            None => false,
        }
    }

    /// Drop entries whose every slot has expired; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.now_us();
        self.map.retain(|_, e| {
            let live = e.slots.expires_us() > now;
            if !live {
                self.budget.changed(e.bytes, 0);
            }
            live
        });
        self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Order `slots` so that its first `limits.len()` entries are the slots of
/// `limits`, in order, creating any that are missing; returns that prefix.
fn arrange<'a, S: Default>(
    periods: &mut Vec<u64>,
    slots: &'a mut Vec<S>,
    limits: &[Rate],
) -> &'a mut [S] {
    for (i, rate) in limits.iter().enumerate() {
        let j = match periods[i..].iter().position(|&p| p == rate.period_ms) {
            Some(offset) => i + offset,
            None => {
                periods.push(rate.period_ms);
                slots.push(S::default());
                periods.len() - 1
            }
        };
        periods.swap(i, j);
        slots.swap(i, j);
    }
    &mut slots[..limits.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(algorithm: Algorithm, base: &'a str, limits: &'a [Rate], cost: u64) -> Call<'a> {
        Call {
            algorithm,
            base,
            limits,
            cost,
            burst: None,
        }
    }

    #[test]
    fn a_full_store_refuses_new_keys_and_keeps_counting_the_ones_it_holds() {
        let refusals = Counter::default();
        let store = LocalStore::new(16 * 1024, refusals.clone());
        let limits = [Rate {
            limit: 2,
            period_ms: 3_600_000,
        }];
        let held = "tg:rl:{r|held}:fw";
        assert!(
            store
                .check(call(Algorithm::FixedWindow, held, &limits, 1))
                .allowed
        );
        // A flood of new keys: the store stops growing at its bound.
        let mut refused = 0;
        for i in 0..10_000 {
            let key = format!("tg:rl:{{r|client-{i}}}:fw");
            if !store
                .check(call(Algorithm::FixedWindow, &key, &limits, 1))
                .allowed
            {
                refused += 1;
            }
            assert!(store.bytes() <= 16 * 1024, "{} bytes", store.bytes());
        }
        assert!(refused > 9_000, "only {refused} refused");
        assert_eq!(refusals.get(), refused);
        // The held key is neither evicted nor reset: its second unit passes, its third does not.
        assert!(
            store
                .check(call(Algorithm::FixedWindow, held, &limits, 1))
                .allowed
        );
        let third = store.check(call(Algorithm::FixedWindow, held, &limits, 1));
        assert!(!third.allowed);
        assert!(third.retry_after_ms > 1_000, "a real denial, not a refusal");
        // Once counters are gone, new keys are accepted again.
        store.reset(held);
        for i in 0..10_000 {
            store.reset(&format!("tg:rl:{{r|client-{i}}}:fw"));
        }
        assert_eq!(store.bytes(), 0);
        assert!(
            store
                .check(call(Algorithm::FixedWindow, "tg:rl:{r|new}:fw", &limits, 1))
                .allowed
        );
    }

    #[test]
    fn a_sliding_log_cannot_grow_a_full_store() {
        let store = LocalStore::new(4 * 1024, Counter::default());
        let limits = [Rate {
            limit: 100_000,
            period_ms: 3_600_000,
        }];
        let base = "tg:rl:{r|k}:sl";
        // Each admission at its own time is one more run (time, units) held.
        let mut admitted = 0u64;
        for i in 0..1_000u64 {
            let now = 1_000_000_000_000 + i * 10;
            if store
                .check_at(call(Algorithm::SlidingLog, base, &limits, 1), now)
                .allowed
            {
                admitted += 1;
            }
        }
        assert!(admitted < 500, "{admitted} runs logged in 4 KiB");
        assert!(store.bytes() <= 8 * 1024, "{} bytes", store.bytes());
    }
}
