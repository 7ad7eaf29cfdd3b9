//! The embedded store: the four algorithms in process memory, with the same
//! semantics as the Lua scripts. One replica only: nothing is shared.
//! Also serves as the per-replica fallback when Redis is away.
//! Bounded in bytes (`local_store.max_bytes`, see `memory_bound.rs`).

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::RwLock;
use std::time::Instant;

use dashmap::DashMap;
use prometheus_client::metrics::counter::Counter;

use super::fixed_window::{self, FixedSlot};
use super::gcra::{self, GcraSlot};
use super::memory_bound::Budget;
use super::sliding_log::{self, LogSlot};
use super::sliding_window::{self, WindowSlot};
use super::{Algorithm, Call, Grant, Outcome, Slot};
use crate::rate::Rate;

pub struct LocalStore {
    /// Keyed by the call's key base (as its hash); one entry holds all limits
    /// of the call, so the entry's lock makes check-and-charge of every limit
    /// one atomic step.
    map: DashMap<KeyHash, Slots, BuildHasherDefault<PassThrough>>,
    /// Two independent, per-process random SipHash keys: together a 128-bit
    /// keyed hash of the key base.
    hashers: (RandomState, RandomState),
    origin: Instant,
    budget: Budget,
    /// A request's rules decided together (`check_all`) hold this for
    /// writing, so that no single call charges between their check and their
    /// charge; a single call (the usual case) holds it for reading.
    together: RwLock<()>,
}

/// A key base's 128-bit keyed hash. The map holds this instead of the string:
/// 16 bytes in place of a 24-byte `String` and its heap block, which is most
/// of what a million clients cost. Two bases share counters only if both
/// 64-bit halves collide (2^-128 a pair); the keys are random per process, so
/// no client can choose bases that collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct KeyHash(u64, u64);

/// `KeyHash` is already uniformly random: the map uses it as its own hash
/// instead of hashing it again.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// What one key base holds. The usual call (fixed_window or gcra, one limit)
/// is held inline, with no heap block: 24 bytes beside its key.
enum Slots {
    Fixed(Period, FixedSlot),
    Gcra(Period, GcraSlot),
    /// One sliding_log limit: its log grows, so it lives on the heap, but
    /// without the general form's vectors around it.
    Log(Period, Box<LogSlot>),
    /// Several limits, a period over `u32::MAX` ms, or the algorithms whose
    /// slots are larger (sliding_window) or grow (sliding_log).
    Many(Box<Many>),
}

/// A single limit's period in ms (`u32`, so that the inline variants stay at 24 bytes).
type Period = u32;

struct Many {
    /// `periods[i]` is the period of the i-th slot: like Redis's one key per
    /// period, a counter is shared by every call that names its period.
    periods: Vec<u64>,
    slots: ManySlots,
}

enum ManySlots {
    Fixed(Vec<FixedSlot>),
    Window(Vec<WindowSlot>),
    Log(Vec<LogSlot>),
    Gcra(Vec<GcraSlot>),
}

/// Estimated bytes of one map entry beyond its own size: hashbrown's control
/// byte, and a table that is between half and seven eighths full (counted as half).
const fn table_bytes(entry: usize) -> usize {
    2 * entry + 2
}
const ENTRY_BYTES: usize = table_bytes(std::mem::size_of::<(KeyHash, Slots)>());

impl Slots {
    /// A fresh entry for a call: inline when it can be.
    fn new(algorithm: Algorithm, limits: &[Rate]) -> Slots {
        let one = match limits {
            [rate] => Period::try_from(rate.period_ms).ok(),
            _ => None,
        };
        match (algorithm, one) {
            (Algorithm::FixedWindow, Some(p)) => Slots::Fixed(p, FixedSlot::default()),
            (Algorithm::Gcra, Some(p)) => Slots::Gcra(p, GcraSlot::default()),
            (Algorithm::SlidingLog, Some(p)) => Slots::Log(p, Box::default()),
            _ => Slots::Many(Box::new(Many {
                periods: Vec::new(),
                slots: ManySlots::new(algorithm),
            })),
        }
    }

    /// Estimated bytes held, counted against `local_store.max_bytes`.
    fn bytes(&self) -> u64 {
        let heap = match self {
            Slots::Fixed(..) | Slots::Gcra(..) => 0,
            Slots::Log(_, s) => std::mem::size_of::<LogSlot>() + s.heap_bytes(),
            Slots::Many(m) => {
                std::mem::size_of::<Many>()
                    + m.periods.capacity() * std::mem::size_of::<u64>()
                    + m.slots.bytes()
            }
        };
        (ENTRY_BYTES + heap) as u64
    }

    fn expires_us(&self) -> u64 {
        match self {
            Slots::Fixed(_, s) => s.expires_us(),
            Slots::Gcra(_, s) => s.expires_us(),
            Slots::Log(_, s) => s.expires_us(),
            Slots::Many(m) => m.slots.expires_us(),
        }
    }

    /// The slots of `limits`, in order: the inline slot when the call names
    /// its one period, else (after moving an inline slot out) the general form.
    fn run(&mut self, now: u64, call: &Call<'_>) -> Outcome {
        let (limits, cost) = (call.limits, call.cost);
        if let [rate] = limits {
            match self {
                Slots::Fixed(p, s) if u64::from(*p) == rate.period_ms => {
                    return fixed_window::check(now, limits, std::slice::from_mut(s), cost)
                }
                Slots::Gcra(p, s) if u64::from(*p) == rate.period_ms => {
                    return gcra::check(now, limits, std::slice::from_mut(s), cost, call.burst)
                }
                Slots::Log(p, s) if u64::from(*p) == rate.period_ms => {
                    return sliding_log::check(now, limits, std::slice::from_mut(&mut **s), cost)
                }
                _ => {}
            }
        }
        let many = self.spill();
        let periods = &mut many.periods;
        match &mut many.slots {
            ManySlots::Fixed(s) => {
                fixed_window::check(now, limits, arrange(periods, s, limits), cost)
            }
            ManySlots::Window(s) => {
                sliding_window::check(now, limits, arrange(periods, s, limits), cost)
            }
            ManySlots::Log(s) => sliding_log::check(now, limits, arrange(periods, s, limits), cost),
            ManySlots::Gcra(s) => {
                gcra::check(now, limits, arrange(periods, s, limits), cost, call.burst)
            }
        }
    }

    /// The general form, moving an inline slot into it (a call that names
    /// another period, or several, for a key held inline: rare).
    fn spill(&mut self) -> &mut Many {
        let many = match std::mem::replace(self, Slots::Many(Box::new(Many::empty()))) {
            Slots::Fixed(p, s) => Many {
                periods: vec![p.into()],
                slots: ManySlots::Fixed(vec![s]),
            },
            Slots::Gcra(p, s) => Many {
                periods: vec![p.into()],
                slots: ManySlots::Gcra(vec![s]),
            },
            Slots::Log(p, s) => Many {
                periods: vec![p.into()],
                slots: ManySlots::Log(vec![*s]),
            },
            Slots::Many(m) => *m,
        };
        *self = Slots::Many(Box::new(many));
        match self {
            Slots::Many(m) => m,
            _ => unreachable!("just set"),
        }
    }
}

impl Many {
    fn empty() -> Many {
        Many {
            periods: Vec::new(),
            slots: ManySlots::Fixed(Vec::new()),
        }
    }
}

impl ManySlots {
    fn new(algorithm: Algorithm) -> ManySlots {
        match algorithm {
            Algorithm::FixedWindow => ManySlots::Fixed(Vec::new()),
            Algorithm::SlidingWindow => ManySlots::Window(Vec::new()),
            Algorithm::SlidingLog => ManySlots::Log(Vec::new()),
            Algorithm::Gcra => ManySlots::Gcra(Vec::new()),
        }
    }

    fn bytes(&self) -> usize {
        fn sum<S: Slot>(v: &Vec<S>) -> usize {
            v.capacity() * std::mem::size_of::<S>() + v.iter().map(Slot::heap_bytes).sum::<usize>()
        }
        match self {
            ManySlots::Fixed(v) => sum(v),
            ManySlots::Window(v) => sum(v),
            ManySlots::Log(v) => sum(v),
            ManySlots::Gcra(v) => sum(v),
        }
    }

    fn expires_us(&self) -> u64 {
        fn latest<S: Slot>(v: &[S]) -> u64 {
            v.iter().map(Slot::expires_us).max().unwrap_or(0)
        }
        match self {
            ManySlots::Fixed(v) => latest(v),
            ManySlots::Window(v) => latest(v),
            ManySlots::Log(v) => latest(v),
            ManySlots::Gcra(v) => latest(v),
        }
    }
}

impl LocalStore {
    /// At most `max_bytes` (estimated) of counters; `refusals` counts the
    /// calls refused at the bound.
    pub fn new(max_bytes: usize, refusals: Counter) -> Self {
        LocalStore {
            map: DashMap::default(),
            hashers: (RandomState::new(), RandomState::new()),
            origin: Instant::now(),
            budget: Budget::new(max_bytes, refusals),
            together: RwLock::new(()),
        }
    }

    /// A reload's new `local_store.max_bytes`.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        self.budget.set_max(max_bytes);
    }

    fn key(&self, base: &str) -> KeyHash {
        KeyHash(self.hashers.0.hash_one(base), self.hashers.1.hash_one(base))
    }

    /// Estimated bytes held.
    pub fn bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Bytes a call may add: a new entry (`new_key`), and a sliding_log's new members.
    fn growth(call: &Call<'_>, new_key: bool) -> u64 {
        let n = call.limits.len();
        // An admission is one run per limit, whatever its cost (counted high).
        let log = if call.algorithm == Algorithm::SlidingLog {
            n * 2 * sliding_log::RUN_BYTES
        } else {
            0
        };
        let new = if new_key {
            Slots::new(call.algorithm, call.limits).bytes() as usize + n * 64
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
        let _single = self.together.read().unwrap_or_else(|e| e.into_inner());
        self.check_at(call, self.now_us())
    }

    /// A request's rules decided together, as `lua/all_rules.lua` does: each
    /// call with whether it decides (a shadow rule does not). Unless every
    /// deciding call passes, none is charged.
    pub fn check_all(&self, calls: &[(Call<'_>, bool)]) -> Vec<Outcome> {
        let _all = self.together.write().unwrap_or_else(|e| e.into_inner());
        let now = self.now_us();
        // A peek (cost 0) writes nothing; a call passes when every limit has
        // room for its cost (each algorithm's `remaining` is exactly that room).
        let peeks: Vec<Outcome> = calls
            .iter()
            .map(|(call, _)| self.check_at(Call { cost: 0, ..*call }, now))
            .collect();
        let fits = |call: &Call<'_>, peek: &Outcome| {
            peek.allowed && peek.limits.iter().all(|l| l.remaining >= call.cost)
        };
        let pass = calls
            .iter()
            .zip(&peeks)
            .all(|((call, decides), peek)| !decides || fits(call, peek));
        calls
            .iter()
            .zip(peeks)
            .map(|((call, _), peek)| {
                // A call that does not fit is denied by its own check, which
                // charges nothing and tells when it would pass.
                if pass || !fits(call, &peek) {
                    self.check_at(*call, now)
                } else {
                    peek
                }
            })
            .collect()
    }

    /// The twin of `lua/lease_<algorithm>.lua`: a slice of the call's
    /// remaining quota, at least its cost, at most `room / divisor` and `cap`
    /// (0: no cap), charged at once.
    pub fn lease(&self, call: Call<'_>, divisor: u64, cap: u64) -> Grant {
        self.lease_at(call, divisor, cap, self.now_us())
    }

    /// `lease` at a given time (see `check_at`).
    pub fn lease_at(&self, call: Call<'_>, divisor: u64, cap: u64, now: u64) -> Grant {
        // Peek and charge as one step, as the script is.
        let _one = self.together.write().unwrap_or_else(|e| e.into_inner());
        let peek = self.charge_at(Call { cost: 0, ..call }, now);
        let room = peek.limits.iter().map(|l| l.remaining).min().unwrap_or(0);
        if !peek.allowed || room < call.cost {
            // Denied by its own check: nothing written, and when it would pass.
            let outcome = self.charge_at(call, now);
            return Grant {
                granted: 0,
                outcome,
                ahead_us: 0,
            };
        }
        let mut granted = (room / divisor.max(1)).max(call.cost);
        if cap > 0 {
            granted = granted.min(cap).max(call.cost);
        }
        let outcome = self.charge_at(
            Call {
                cost: granted,
                ..call
            },
            now,
        );
        // gcra's run starts where the TAT was: the peek's reset (whole ms,
        // rounded up) less a ms is never later than the script's whole µs.
        let ahead_us = match call.algorithm {
            Algorithm::Gcra => peek.limits[0].reset_ms.saturating_sub(1) * 1000,
            _ => 0,
        };
        Grant {
            granted,
            outcome,
            ahead_us,
        }
    }

    /// `check` at a given time (µs; must not go backwards for one key), so
    /// a test can feed this store and a Redis script the same clock.
    pub fn check_at(&self, call: Call<'_>, now: u64) -> Outcome {
        if !call.charge && call.cost > 0 {
            // Only checks (a reported rule): a peek says whether the cost
            // fits; a cost that does not is denied by its own check, which
            // writes nothing and tells when it would pass (as in `check_all`).
            let peek = self.charge_at(Call { cost: 0, ..call }, now);
            if peek.allowed && peek.limits.iter().all(|l| l.remaining >= call.cost) {
                return peek;
            }
            return self.charge_at(call, now);
        }
        self.charge_at(call, now)
    }

    /// One call as it comes: charged when it passes (cost 0: a peek).
    fn charge_at(&self, call: Call<'_>, now: u64) -> Outcome {
        let key = self.key(call.base);
        // Far from the bound (the usual case) no lookup is needed to know a call fits.
        let growth = match self.budget.fits(Self::growth(&call, true)) {
            true => 0,
            false => Self::growth(&call, !self.map.contains_key(&key)),
        };
        if growth > 0 && !self.budget.fits(growth) {
            if self.budget.may_sweep() {
                self.sweep();
            }
            if !self.budget.fits(growth) {
                return self.budget.refuse(call.limits);
            }
        }
        let mut fresh = false;
        let mut entry = self.map.entry(key).or_insert_with(|| {
            fresh = true;
            Slots::new(call.algorithm, call.limits)
        });
        let before = if fresh { 0 } else { entry.bytes() };
        let outcome = entry.run(now, &call);
        self.budget.changed(before, entry.bytes());
        outcome
    }

    /// Forget the counters of one key base (all its limits).
    pub fn reset(&self, base: &str) -> bool {
        match self.map.remove(&self.key(base)) {
            Some((_, e)) => {
                self.budget.changed(e.bytes(), 0);
                true
            }
            None => false,
        }
    }

    /// Drop entries whose every slot has expired; returns how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.now_us();
        self.map.retain(|_, e| {
            let live = e.expires_us() > now;
            if !live {
                self.budget.changed(e.bytes(), 0);
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
            charge: true,
        }
    }

    #[test]
    fn a_requests_rules_are_charged_all_or_nothing_and_a_shadow_rule_refuses_nothing() {
        let store = LocalStore::new(1 << 20, Counter::default());
        let one: [Rate; 1] = ["1/h".parse().unwrap()];
        let many: [Rate; 1] = ["50/h".parse().unwrap()];
        for alg in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::SlidingLog,
            Algorithm::Gcra,
        ] {
            let (tight, loose) = (format!("t:{alg}"), format!("l:{alg}"));
            let both = |tight_decides| {
                store.check_all(&[
                    (call(alg, &tight, &one, 1), tight_decides),
                    (call(alg, &loose, &many, 1), true),
                ])
            };
            let first = both(true);
            assert!(first.iter().all(|o| o.allowed), "{alg}");
            // The tight rule is spent: nothing of the loose one is charged.
            for _ in 0..3 {
                let o = both(true);
                assert!(!o[0].allowed && o[1].allowed, "{alg}");
                assert_eq!(o[1].limits[0].remaining, 49, "{alg}: charged on a denial");
            }
            // As a shadow rule, the tight one refuses nothing.
            let o = both(false);
            assert!(!o[0].allowed, "{alg}");
            assert_eq!(o[1].limits[0].remaining, 48, "{alg}");
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

    #[test]
    fn a_one_limit_fixed_window_or_gcra_client_is_held_in_forty_bytes_with_no_heap_block() {
        // The memory target (<= 100 B a client at 1 M clients, table slack
        // included) rests on this layout: a 16-byte key hash and a 24-byte value.
        assert_eq!(std::mem::size_of::<(KeyHash, Slots)>(), 40);
        let limits = [Rate {
            limit: 5,
            period_ms: 60_000,
        }];
        let store = LocalStore::new(usize::MAX, Counter::default());
        for algorithm in [Algorithm::FixedWindow, Algorithm::Gcra] {
            store.check(call(algorithm, "tg:rl:{r|a}:x", &limits, 1));
            let entry = store.map.get(&store.key("tg:rl:{r|a}:x")).unwrap();
            assert!(!matches!(*entry, Slots::Many(_)), "{algorithm:?} spilled");
            drop(entry);
            store.reset("tg:rl:{r|a}:x");
        }
    }

    #[test]
    fn a_key_held_inline_keeps_its_count_when_a_call_names_another_period_too() {
        let store = LocalStore::new(usize::MAX, Counter::default());
        let minute = Rate {
            limit: 3,
            period_ms: 60_000,
        };
        let hour = Rate {
            limit: 10,
            period_ms: 3_600_000,
        };
        let base = "tg:rl:{r|k}:fw";
        for _ in 0..2 {
            assert!(
                store
                    .check(call(
                        Algorithm::FixedWindow,
                        base,
                        std::slice::from_ref(&minute),
                        1
                    ))
                    .allowed
            );
        }
        // Both limits now: the minute's 2 units are still there, so one more fits, not two.
        let both = [hour, minute.clone()];
        let third = store.check(call(Algorithm::FixedWindow, base, &both, 1));
        assert!(third.allowed);
        assert_eq!(third.limits[1].remaining, 0);
        assert_eq!(third.limits[0].remaining, 9);
        assert!(
            !store
                .check(call(
                    Algorithm::FixedWindow,
                    base,
                    std::slice::from_ref(&minute),
                    1
                ))
                .allowed
        );
        let bytes = store.bytes();
        store.reset(base);
        assert_eq!(store.bytes(), 0, "{bytes} counted, all returned");
    }

    #[test]
    fn a_sliding_log_cost_beyond_one_run_is_counted_whole() {
        let store = LocalStore::new(usize::MAX, Counter::default());
        let limits = [Rate {
            limit: 1_000_000,
            period_ms: 1_000,
        }];
        let base = "tg:rl:{r|big}:sl";
        let t0 = 1_000_000_000_000;
        let first = store.check_at(call(Algorithm::SlidingLog, base, &limits, 300_000), t0);
        assert_eq!(first.limits[0].remaining, 700_000);
        let second = store.check_at(call(Algorithm::SlidingLog, base, &limits, 700_001), t0 + 10);
        assert!(!second.allowed);
        // The units that must leave first arrived at t0: free one period after it.
        assert_eq!(second.retry_after_ms, 1_000);
        let later = store.check_at(call(Algorithm::SlidingLog, base, &limits, 700_000), t0 + 20);
        assert!(later.allowed);
        assert_eq!(later.limits[0].remaining, 0);
        // One period after t0 the 300 000 leave together.
        let after = store.check_at(
            call(Algorithm::SlidingLog, base, &limits, 300_000),
            t0 + 1_000_000,
        );
        assert!(after.allowed);
    }
}
