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

mod held;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use held::State;

use super::{Call, Outcome, Store};
use crate::metrics::{LeaseLabels, LeaseMetrics};
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
    /// `tollgate_lease_decisions_total{how}`, `tollgate_lease_units_granted_total`.
    metrics: LeaseMetrics,
    keys: DashMap<String, Arc<Held>>,
    /// Last sweep, as µs since `origin` (at most one a second).
    swept_us: AtomicU64,
    origin: OnceOrigin,
    /// The table is at `MAX_KEYS`: logged once entering, once leaving.
    full: AtomicBool,
}

/// What a decision of a lease rule does next.
pub enum Ask {
    /// Not a lease decision (cold key, a cost above 1, a check without
    /// charge, no lease, the embedded store): the usual store call.
    Plain,
    /// Answered from the slice this replica holds.
    Spent(Outcome),
    /// A hot key with nothing held: take a slice (`Held::take`, which
    /// counts how it went).
    Take(Arc<Held>, LeaseSize, LeaseMetrics),
}

impl Leases {
    pub fn new(metrics: LeaseMetrics) -> Leases {
        Leases {
            metrics,
            ..Leases::default()
        }
    }

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
            self.counted("slice");
            return Ask::Spent(outcome);
        }
        if state.hot() {
            drop(state);
            Ask::Take(held, size, self.metrics.clone())
        } else {
            Ask::Plain
        }
    }

    fn counted(&self, how: &'static str) {
        self.metrics
            .decisions
            .get_or_create(&LeaseLabels { how })
            .inc();
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
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        keys = MAX_KEYS,
                        "lease table full: keys not tracked yet decide without a lease (one Redis call each) until idle keys are swept"
                    );
                }
                return None;
            }
        }
        if self.full.swap(false, Ordering::Relaxed) {
            tracing::info!("lease table has room again: new hot keys may lease");
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

impl Held {
    /// Take a slice for `call` (whose unit the asking request spends), or
    /// the slice another request took while this one waited. `Err(None)`:
    /// the take this one waited on failed; go to `on_redis_error` without
    /// asking Redis again (the breaker has the error). The flag: whether
    /// this request made the store call (only those are timed as one).
    pub async fn take(
        &self,
        store: &Store,
        call: Call<'_>,
        size: LeaseSize,
        replicas: u64,
        metrics: &LeaseMetrics,
    ) -> (Result<Outcome, Option<StoreError>>, bool) {
        let count = |how| metrics.decisions.get_or_create(&LeaseLabels { how }).inc();
        let before = self.takes.load(Ordering::Acquire);
        let mut last = self.taking.lock().await;
        let now = Instant::now();
        let cap = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(outcome) = state.spend(now, &call) {
                count("slice");
                return (Ok(outcome), false);
            }
            state.cap(now, call.cost, size.cap())
        };
        if self.takes.load(Ordering::Acquire) != before {
            // Answered by the take this one waited on: no call of its own.
            if last.failed {
                count("slice");
                return (Err(None), false);
            }
            if let Some(denied) = &last.denied {
                count("slice");
                return (Ok(denied.clone()), false);
            }
        }
        let sent = Instant::now();
        let result = store.lease(call, divisor(replicas), cap).await;
        *last = Last {
            denied: None,
            failed: result.is_err(),
        };
        self.takes.fetch_add(1, Ordering::Release);
        let grant = match result {
            Ok(grant) => grant,
            Err(e) => {
                count("take_failed");
                return (Err(Some(e)), true);
            }
        };
        if grant.granted == 0 {
            count("take_denied");
            last.denied = Some(grant.outcome.clone());
        } else {
            count("take_granted");
            metrics.units_granted.inc_by(grant.granted);
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.hold(&grant, sent, &call);
        }
        (Ok(grant.outcome), true)
    }
}

#[cfg(test)]
mod tests;
