//! The embedded store: the four algorithms in process memory, with the same
//! semantics as the Lua scripts. One replica only: nothing is shared.
//! Also serves as the per-replica fallback when Redis is away.

use std::time::Instant;

use dashmap::DashMap;

use super::fixed_window::{self, FixedSlot};
use super::gcra::{self, GcraSlot};
use super::sliding_log::{self, LogSlot};
use super::sliding_window::{self, WindowSlot};
use super::{Algorithm, Call, Outcome, Slot};
use crate::rate::Rate;

pub struct LocalStore {
    /// Keyed by the call's key base; one entry holds all limits of the call, so
    /// the entry's lock makes check-and-charge of every limit one atomic step.
    map: DashMap<String, Entry>,
    origin: Instant,
}

struct Entry {
    /// `periods[i]` is the period of `slots[i]`: like Redis's one key per
    /// period, a counter is shared by every call that names its period.
    periods: Vec<u64>,
    slots: Slots,
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

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalStore {
    pub fn new() -> Self {
        LocalStore {
            map: DashMap::new(),
            origin: Instant::now(),
        }
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
        let mut entry = self
            .map
            .entry(call.base.to_string())
            .or_insert_with(|| Entry {
                periods: Vec::new(),
                slots: Slots::new(call.algorithm, 0),
            });
        let Entry { periods, slots } = &mut *entry;
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
        self.map.remove(base).is_some()
    }

    /// Drop entries whose every slot has expired; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.now_us();
        self.map.retain(|_, e| e.slots.expires_us() > now);
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
