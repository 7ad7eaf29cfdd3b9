//! Quota leases (`lease = "auto"` or a size on a fixed_window rule, or a gcra
//! rule with one limit): a replica that decides one key often takes a slice
//! of the key's remaining quota from the store in one call
//! (`lua/lease_<algorithm>.lua`) and answers from it in memory until it is
//! spent or past. The anchor is Google's Doorman: capacity handed out in
//! advance, never admitted past the limit.
//!
//! Why it stays exact: a slice is charged in Redis (the window's counters,
//! or gcra's TAT) before any of it is handed out, so every admitted unit was
//! counted there first, and the scripts never count past the limit.
//! - fixed_window: a slice expires at the window's end as measured from
//!   *before* the call was sent (never later than Redis's own end), so each
//!   unit is admitted inside the window that counted it.
//! - gcra: a slice is a run of the bucket's next emissions, emission k
//!   starting at `first + k × interval`; a unit is admitted only while its
//!   emission starts at or after now (`first` measured from before the call
//!   was sent), so, as in plain gcra, every admitted unit has its own
//!   interval of the timeline, starting no earlier than its admission and
//!   ending within `tau` of it: `burst + t × rate` in any interval `t` holds.
//!
//! Unspent units are never given back: they are lost with their window (or
//! their emission time): under-admission, at most the units out on leases.
//!
//! Sizing: a slice is at most `room / (2 × replicas seen)` (the fleet
//! registry's live count), at most the fixed size, at least 1: it shrinks as
//! the quota runs out, so the last units are decided one by one in Redis.
//!
//! Only hot keys lease: a key of a lease rule that this replica decided at
//! least `HOT` times in the current or the previous second. Below that every
//! decision is one script call, as without a lease (a per-address login
//! limit never strands a unit). At most `MAX_KEYS` keys are tracked; past
//! that, new keys are decided without a lease. A request's several rules
//! (`check_all` with more than one) never use leases: they are charged
//! together in one script, as before.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{Call, LimitState, Outcome, Store};
use crate::rate::Rate;
use crate::redis_conn::StoreError;

/// Decisions a second on this replica that make a key hot (lease-worthy).
pub const HOT: u32 = 20;
/// Keys whose hotness and slice are tracked; past this, new keys decide
/// without a lease (entries idle for 2 s are swept, at most once a second).
pub const MAX_KEYS: usize = 10_000;

/// A rule's `lease` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseSize {
    /// At most `room / (2 × replicas)` a slice.
    Auto,
    /// That, and at most this many units.
    Fixed(u64),
}

impl LeaseSize {
    /// The script's cap (0: none).
    fn cap(self) -> u64 {
        match self {
            LeaseSize::Auto => 0,
            LeaseSize::Fixed(n) => n,
        }
    }
}

impl fmt::Display for LeaseSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseSize::Auto => f.write_str("auto"),
            LeaseSize::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// What the store handed out: `granted` units (0: denied), and the outcome
/// of the asking request with the whole slice counted as spent. gcra: the
/// run of emissions starts `ahead_us` after the script's time (rounded down).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub granted: u64,
    pub outcome: Outcome,
    pub ahead_us: u64,
}

impl Grant {
    /// From the script's reply `{granted, retry_after_ms, remaining_1,
    /// reset_ms_1, ...}`, then `ahead_us` for gcra.
    pub fn from_reply(reply: &[i64], limits: &[Rate]) -> Option<Grant> {
        let granted = *reply.first()?;
        let mut flat = reply.to_vec();
        flat[0] = i64::from(granted > 0);
        let ahead_us = match flat.len() - 2 * limits.len() {
            2 => 0,
            3 => flat.pop()?.max(0) as u64,
            _ => return None,
        };
        Some(Grant {
            granted: granted.max(0) as u64,
            outcome: Outcome::from_reply(&flat, limits)?,
            ahead_us,
        })
    }
}

/// The divisor of a slice: 2 × the live replicas (0, not seen yet: 1).
pub fn divisor(replicas: u64) -> u64 {
    2 * replicas.max(1)
}

/// The slices this replica holds, by key base.
#[derive(Default)]
pub struct Leases {
    keys: DashMap<String, Arc<Held>>,
    /// Last sweep, as µs since `origin` (at most one a second).
    swept_us: AtomicU64,
    origin: OnceOrigin,
}

/// What a decision of a lease rule does next.
pub enum Ask {
    /// Not a lease decision (cold key, a cost above 1, a check without
    /// charge, no lease, the embedded store): the usual store call.
    Plain,
    /// Answered from the slice this replica holds.
    Spent(Outcome),
    /// A hot key with nothing held: take a slice (`Held::take`).
    Take(Arc<Held>, LeaseSize),
}

impl Leases {
    /// Count this decision toward the key's hotness and spend a held unit if
    /// there is one. `lease` is `None` for a rule without one (or when the
    /// store is in process: nothing to save).
    pub fn ask(&self, lease: Option<LeaseSize>, call: &Call<'_>) -> Ask {
        let Some(size) = lease else {
            return Ask::Plain;
        };
        if call.cost != 1 || !call.charge {
            return Ask::Plain;
        }
        let Some(held) = self.held(call.base) else {
            return Ask::Plain;
        };
        let now = Instant::now();
        let mut state = held.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen(now);
        if let Some(outcome) = state.spend(now, call) {
            return Ask::Spent(outcome);
        }
        if state.hot() {
            drop(state);
            Ask::Take(held, size)
        } else {
            Ask::Plain
        }
    }

    /// Drop what is held for `base`: its counters were reset, so units taken
    /// from the old ones would otherwise be admitted on top of a fresh window.
    pub fn forget(&self, base: &str) {
        self.keys.remove(base);
    }

    /// Units held now for `base` (tests and the admin view).
    pub fn held_units(&self, base: &str) -> u64 {
        self.keys.get(base).map_or(0, |h| {
            let s = h.state.lock().unwrap_or_else(|e| e.into_inner());
            s.slice.units(Instant::now())
        })
    }

    fn held(&self, base: &str) -> Option<Arc<Held>> {
        if let Some(h) = self.keys.get(base) {
            return Some(h.clone());
        }
        if self.keys.len() >= MAX_KEYS {
            self.sweep();
            if self.keys.len() >= MAX_KEYS {
                return None;
            }
        }
        Some(self.keys.entry(base.to_string()).or_default().clone())
    }

    /// Drop keys idle for 2 s with nothing held (at most once a second).
    fn sweep(&self) {
        let now_us = self.origin.get().elapsed().as_micros() as u64;
        let last = self.swept_us.load(Ordering::Relaxed);
        if now_us < last + 1_000_000
            || self
                .swept_us
                .compare_exchange(last, now_us, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let now = Instant::now();
        self.keys.retain(|_, h| {
            let s = h.state.lock().unwrap_or_else(|e| e.into_inner());
            now.duration_since(s.second) < Duration::from_secs(2) || s.slice.units(now) > 0
        });
    }
}

/// `Instant` has no default: the table's clock origin, set on first use.
#[derive(Default)]
struct OnceOrigin(std::sync::OnceLock<Instant>);

impl OnceOrigin {
    fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

/// One key's slice and hotness.
#[derive(Default)]
pub struct Held {
    state: Mutex<State>,
    /// One take at a time per key: the others wait for its slice instead of
    /// each asking Redis (held only across that one bounded call).
    taking: tokio::sync::Mutex<Last>,
    /// Takes finished, so a waiter knows whether one ended while it waited.
    takes: AtomicU64,
}

/// How the last take ended, for the requests that waited on it.
#[derive(Default)]
struct Last {
    /// Redis denied it: the waiters get the same answer.
    denied: Option<Outcome>,
    /// Redis failed: the waiters go to `on_redis_error` without another call.
    failed: bool,
}

struct State {
    /// The limits and burst the held units were taken for (a reload may change them).
    limits: Vec<Rate>,
    burst: Option<u64>,
    slice: Slice,
    /// Redis's answer to the take (remaining with the slice spent, reset).
    states: Vec<LimitState>,
    taken_at: Instant,
    /// Hotness: decisions in the second starting at `second`, and in the one before.
    second: Instant,
    this_second: u32,
    last_second: u32,
}

/// What is held, by algorithm.
#[derive(Clone, Copy, Debug)]
enum Slice {
    /// fixed_window: `units` of the window ending at `expires` (measured
    /// from before the take was sent: never later than Redis's end).
    Window { units: u64, expires: Instant },
    /// gcra: emissions `next..granted` of a run whose emission k starts at
    /// `first + floor(k × period_us / limit)` µs (`first` measured from
    /// before the take was sent: never later than Redis's). Emission k is
    /// spent only while it starts at or after now; those passed are lost.
    Emissions {
        first: Instant,
        period_us: u64,
        limit: u64,
        next: u64,
        granted: u64,
    },
}

impl Slice {
    /// Spend one unit at `now`; how many remain after it.
    fn spend(&mut self, now: Instant) -> Option<u64> {
        match self {
            Slice::Window { units, expires } => {
                if *units == 0 || now >= *expires {
                    return None;
                }
                *units -= 1;
                Some(*units)
            }
            Slice::Emissions {
                first,
                period_us,
                limit,
                next,
                granted,
            } => {
                // The first emission starting at or after now.
                let late_us = now
                    .saturating_duration_since(*first)
                    .as_nanos()
                    .div_ceil(1000);
                let due = (late_us * u128::from(*limit)).div_ceil(u128::from(*period_us));
                let k = u128::from(*next).max(due);
                if k >= u128::from(*granted) {
                    return None;
                }
                *next = k as u64 + 1;
                Some(*granted - *next)
            }
        }
    }

    fn units(&self, now: Instant) -> u64 {
        let mut probe = *self;
        probe.spend(now).map_or(0, |left| left + 1)
    }
}

impl Default for State {
    fn default() -> Self {
        let now = Instant::now();
        State {
            limits: Vec::new(),
            burst: None,
            slice: Slice::Window {
                units: 0,
                expires: now,
            },
            states: Vec::new(),
            taken_at: now,
            second: now,
            this_second: 0,
            last_second: 0,
        }
    }
}

impl State {
    fn seen(&mut self, now: Instant) {
        let since = now.duration_since(self.second);
        if since >= Duration::from_secs(1) {
            self.last_second = if since < Duration::from_secs(2) {
                self.this_second
            } else {
                0
            };
            self.this_second = 0;
            self.second = now;
        }
        self.this_second = self.this_second.saturating_add(1);
    }

    fn hot(&self) -> bool {
        self.this_second.max(self.last_second) >= HOT
    }

    /// One held unit, if any is left for this call's limits. The outcome's
    /// remaining is Redis's at the take plus what is still held here (other
    /// replicas' slices are not known): an estimate.
    fn spend(&mut self, now: Instant, call: &Call<'_>) -> Option<Outcome> {
        if self.limits != call.limits || self.burst != call.burst {
            return None;
        }
        let left = self.slice.spend(now)?;
        let elapsed = now.duration_since(self.taken_at).as_millis() as u64;
        Some(Outcome {
            allowed: true,
            retry_after_ms: 0,
            limits: self
                .states
                .iter()
                .map(|s| LimitState {
                    remaining: s.remaining + left,
                    reset_ms: s.reset_ms.saturating_sub(elapsed).max(1),
                    ..s.clone()
                })
                .collect(),
        })
    }

    /// A new slice (the old one is spent or past: takes happen only then),
    /// of which the asking request spent the first unit.
    fn hold(&mut self, grant: &Grant, sent: Instant, call: &Call<'_>) {
        let outcome = &grant.outcome;
        self.slice = match (call.algorithm, call.limits) {
            (super::Algorithm::Gcra, [rate]) => Slice::Emissions {
                first: sent + Duration::from_micros(grant.ahead_us),
                period_us: rate.period_ms.max(1) * 1000,
                limit: rate.limit.max(1),
                next: 1,
                granted: grant.granted,
            },
            _ => {
                // PTTL is whole ms of Redis's ms clock: the window may end up
                // to 1 ms before `sent + PTTL` when the call took under 1 ms.
                let end = outcome.limits.iter().map(|l| l.reset_ms).min().unwrap_or(0);
                Slice::Window {
                    units: grant.granted - 1,
                    expires: sent + Duration::from_millis(end.saturating_sub(1)),
                }
            }
        };
        self.limits = call.limits.to_vec();
        self.burst = call.burst;
        self.states = outcome.limits.clone();
        self.taken_at = sent;
    }
}

impl Held {
    /// Take a slice for `call` (whose unit the asking request spends), or
    /// the slice another request took while this one waited. `Err(None)`:
    /// the take this one waited on failed; go to `on_redis_error` without
    /// asking Redis again (the breaker has the error).
    pub async fn take(
        &self,
        store: &Store,
        call: Call<'_>,
        size: LeaseSize,
        replicas: u64,
    ) -> Result<Outcome, Option<StoreError>> {
        let before = self.takes.load(Ordering::Acquire);
        let mut last = self.taking.lock().await;
        let now = Instant::now();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(outcome) = state.spend(now, &call) {
                return Ok(outcome);
            }
        }
        if self.takes.load(Ordering::Acquire) != before {
            if last.failed {
                return Err(None);
            }
            if let Some(denied) = &last.denied {
                return Ok(denied.clone());
            }
        }
        let sent = Instant::now();
        let result = store.lease(call, divisor(replicas), size.cap()).await;
        *last = Last {
            denied: None,
            failed: result.is_err(),
        };
        self.takes.fetch_add(1, Ordering::Release);
        let grant = result.map_err(Some)?;
        if grant.granted == 0 {
            last.denied = Some(grant.outcome.clone());
        } else {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.hold(&grant, sent, &call);
        }
        Ok(grant.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Algorithm;

    fn call<'a>(algorithm: Algorithm, limits: &'a [Rate]) -> Call<'a> {
        Call {
            algorithm,
            base: "b",
            limits,
            cost: 1,
            burst: None,
            charge: true,
        }
    }

    fn grant(granted: u64, ahead_us: u64, limits: &[Rate]) -> Grant {
        Grant {
            granted,
            outcome: Outcome::from_reply(&[1, 0, 40, 1000], limits).unwrap(),
            ahead_us,
        }
    }

    #[test]
    fn a_key_is_hot_after_enough_decisions_in_a_second() {
        let mut s = State::default();
        let now = Instant::now();
        for _ in 0..HOT - 1 {
            s.seen(now);
        }
        assert!(!s.hot());
        s.seen(now);
        assert!(s.hot());
        // The next second still counts the previous one: no cold edge.
        s.seen(now + Duration::from_millis(1500));
        assert!(s.hot());
        s.seen(now + Duration::from_millis(4000));
        assert!(!s.hot());
    }

    #[test]
    fn a_window_slice_is_spent_once_and_not_past_the_window() {
        let limits: Vec<Rate> = vec!["100/1s".parse().unwrap()];
        let c = call(Algorithm::FixedWindow, &limits);
        let mut s = State::default();
        let sent = Instant::now();
        s.hold(&grant(3, 0, &limits), sent, &c);
        let first = s.spend(sent, &c).unwrap();
        assert_eq!(first.limits[0].remaining, 41);
        assert!(s.spend(sent, &c).is_some());
        assert!(
            s.spend(sent, &c).is_none(),
            "three granted, one for the taker"
        );
        s.hold(&grant(6, 0, &limits), sent, &c);
        // The window ends 1000 ms after the script read it: 1 ms is kept
        // for PTTL's rounding.
        assert!(s.spend(sent + Duration::from_millis(998), &c).is_some());
        assert!(s.spend(sent + Duration::from_millis(999), &c).is_none());
        let other: Vec<Rate> = vec!["50/1s".parse().unwrap()];
        let o = call(Algorithm::FixedWindow, &other);
        assert!(s.spend(sent, &o).is_none(), "taken for other limits");
    }

    #[test]
    fn gcra_emissions_are_spent_only_while_they_lie_ahead() {
        // 1000/s: one emission a ms; a run of 10 starting 2 ms after the take.
        let limits: Vec<Rate> = vec!["1000/1s".parse().unwrap()];
        let c = call(Algorithm::Gcra, &limits);
        let mut s = State::default();
        let sent = Instant::now();
        s.hold(&grant(10, 2000, &limits), sent, &c);
        // Emissions 1..9 start at 3..11 ms: at once, all of them may go.
        assert_eq!(s.slice.units(sent), 9);
        for _ in 0..3 {
            assert!(s.spend(sent, &c).is_some());
        }
        // At 7.5 ms, emissions 4 and 5 (6, 7 ms) are past: the next is 6 (8 ms).
        let later = sent + Duration::from_micros(7500);
        assert_eq!(s.slice.units(later), 4);
        assert!(s.spend(later, &c).is_some());
        assert_eq!(s.slice.units(later), 3);
        assert_eq!(s.slice.units(sent + Duration::from_millis(12)), 0);
    }

    #[test]
    fn a_grant_of_nothing_is_a_denial() {
        let limits: Vec<Rate> = vec!["100/1s".parse().unwrap()];
        let g = Grant::from_reply(&[0, 300, 0, 300], &limits).unwrap();
        assert!(!g.outcome.allowed && g.granted == 0);
        let g = Grant::from_reply(&[7, 0, 10, 900], &limits).unwrap();
        assert!(g.outcome.allowed && g.granted == 7 && g.ahead_us == 0);
        let g = Grant::from_reply(&[7, 0, 10, 900, 2500], &limits).unwrap();
        assert_eq!(g.ahead_us, 2500);
        assert!(Grant::from_reply(&[7, 0, 10], &limits).is_none());
        assert_eq!(divisor(0), 2);
        assert_eq!(divisor(3), 6);
    }
}
