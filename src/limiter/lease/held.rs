//! What one key's lease holds: its slice (a window's units, or a run of gcra
//! emissions) and its hotness; how a unit is spent from it.

use std::time::{Duration, Instant};

use super::Grant;
use crate::limiter::{Algorithm, Call, LimitState, Outcome};
use crate::rate::Rate;

/// How long past a window slice's end its window may still be open in
/// Redis: the slice ends 1 ms before Redis's end as measured from before its
/// take was sent, so Redis's window outlives it by about 1 ms plus that
/// take's round trip.
const CLOSING: Duration = Duration::from_millis(2);

pub(super) struct State {
    /// The limits and burst the held units were taken for (a reload may change them).
    pub(super) limits: Vec<Rate>,
    pub(super) burst: Option<u64>,
    pub(super) slice: Slice,
    /// Redis's answer to the take (remaining with the slice spent, reset).
    pub(super) states: Vec<LimitState>,
    pub(super) taken_at: Instant,
    /// Hotness: decisions in the second starting at `second`, and in the one before.
    pub(super) second: Instant,
    pub(super) this_second: u32,
    pub(super) last_second: u32,
}

/// What is held, by algorithm.
#[derive(Clone, Copy, Debug)]
pub(super) enum Slice {
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
    pub(super) fn spend(&mut self, now: Instant) -> Option<u64> {
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

    pub(super) fn units(&self, now: Instant) -> u64 {
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
    pub(super) fn seen(&mut self, now: Instant) {
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

    pub(super) fn hot(&self) -> bool {
        self.this_second.max(self.last_second) >= super::HOT
    }

    /// One held unit, if any is left for this call's limits. The outcome's
    /// remaining is Redis's at the take plus what is still held here (other
    /// replicas' slices are not known): an estimate.
    pub(super) fn spend(&mut self, now: Instant, call: &Call<'_>) -> Option<Outcome> {
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

    /// The script's cap for the next take (`cap`: the rule's, 0 for none).
    /// Just past a window slice's end, its window may still be open in Redis
    /// for a millisecond or two: a slice taken then would end before it could
    /// be spent (at most 1 ms left), so every request of that last
    /// millisecond would take again, each charging `room / divisor` of the
    /// window, until the window's whole remainder was stranded and the key
    /// denied far below its limit (the benchmark saw it: `1000000/s` driven
    /// at 9 % of it). There only the asking request's units are taken.
    pub(super) fn cap(&self, now: Instant, cost: u64, cap: u64) -> u64 {
        match self.slice {
            Slice::Window { expires, .. } if now >= expires && now < expires + CLOSING => cost,
            _ => cap,
        }
    }

    /// A new slice (the old one is spent or past: takes happen only then),
    /// of which the asking request spent the first unit.
    pub(super) fn hold(&mut self, grant: &Grant, sent: Instant, call: &Call<'_>) {
        let outcome = &grant.outcome;
        self.slice = match (call.algorithm, call.limits) {
            (Algorithm::Gcra, [rate]) => Slice::Emissions {
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
