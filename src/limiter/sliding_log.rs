//! In-process twin of `lua/sliding_log.lua`: exact, O(limit) memory.
//! Units admitted together are kept as one run (time, count), so a large
//! cost costs one entry, not one per unit.

use std::collections::VecDeque;

use super::{ceil_ms, LimitState, Outcome, Slot};
use crate::rate::Rate;

/// Bytes of one run in the log.
pub(crate) const RUN_BYTES: usize = std::mem::size_of::<u64>();

/// A run's units are its low 16 bits; its time, in µs after the slot's
/// `base_us`, the high 48 (8.9 years). One `u64` a run, not a `(u64, u64)`:
/// sliding_log's memory is its runs.
const UNIT_BITS: u32 = 16;
const MAX_RUN_UNITS: u64 = (1 << UNIT_BITS) - 1;
const MAX_OFFSET_US: u64 = (1 << (64 - UNIT_BITS)) - 1;

#[derive(Clone, Debug, Default)]
pub(crate) struct LogSlot {
    /// Runs admitted in the last period, oldest first, packed (see `UNIT_BITS`).
    log: VecDeque<u64>,
    /// Times in `log` are offsets from this instant (µs).
    base_us: u64,
    /// Units in `log` (the sum of its counts).
    units: u64,
    period_us: u64,
}

impl Slot for LogSlot {
    fn expires_us(&self) -> u64 {
        self.newest()
            .map_or(0, |newest| newest.saturating_add(self.period_us))
    }

    fn heap_bytes(&self) -> usize {
        self.log.capacity() * RUN_BYTES
    }
}

impl LogSlot {
    fn unpack(&self, run: u64) -> (u64, u64) {
        (self.base_us + (run >> UNIT_BITS), run & MAX_RUN_UNITS)
    }

    fn newest(&self) -> Option<u64> {
        self.log.back().map(|&r| self.unpack(r).0)
    }

    fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.log.iter().map(|&r| self.unpack(r))
    }

    /// Arrival time of the `index`-th oldest unit (0-based), if there is one.
    fn unit_at(&self, mut index: u64) -> Option<u64> {
        for (at, count) in self.runs() {
            if index < count {
                return Some(at);
            }
            index -= count;
        }
        None
    }

    /// Drop the runs at or before `cutoff`.
    fn prune(&mut self, cutoff: u64) {
        while let Some(&run) = self.log.front() {
            let (at, count) = self.unpack(run);
            if at > cutoff {
                break;
            }
            self.log.pop_front();
            self.units -= count;
        }
    }

    /// Log `cost` units arriving at `now` (not before the newest run).
    fn admit(&mut self, now: u64, mut cost: u64) {
        self.units += cost;
        if self.log.is_empty() {
            self.base_us = now;
        } else if now.saturating_sub(self.base_us) > MAX_OFFSET_US {
            self.rebase();
        }
        let offset = now.saturating_sub(self.base_us) << UNIT_BITS;
        if let Some(back) = self.log.back_mut() {
            let (at, count) = (*back >> UNIT_BITS, *back & MAX_RUN_UNITS);
            if at << UNIT_BITS == offset && count < MAX_RUN_UNITS {
                let add = cost.min(MAX_RUN_UNITS - count);
                *back += add;
                cost -= add;
            }
        }
        // A cost above a run's capacity takes several runs at the same time.
        while cost > 0 {
            let add = cost.min(MAX_RUN_UNITS);
            self.log.push_back(offset | add);
            cost -= add;
        }
    }

    /// Move `base_us` to the oldest run (a key logging for 8.9 years).
    fn rebase(&mut self) {
        let shift = self.log.front().map_or(0, |&r| r >> UNIT_BITS);
        for run in self.log.iter_mut() {
            *run -= shift << UNIT_BITS;
        }
        self.base_us += shift;
    }
}

pub(crate) fn check(now: u64, limits: &[Rate], slots: &mut [LogSlot], cost: u64) -> Outcome {
    let mut allowed = true;
    let mut retry = 0;
    for (slot, rate) in slots.iter_mut().zip(limits) {
        slot.period_us = rate.period_ms.saturating_mul(1000);
        slot.prune(now.saturating_sub(slot.period_us));
        let count = slot.units;
        if count.saturating_add(cost) > rate.limit {
            allowed = false;
            // The (count + cost - limit)-th oldest unit must leave first; if
            // there is none, cost > limit can never pass: a period, like the script.
            let wait = match slot.unit_at(count.saturating_add(cost) - rate.limit - 1) {
                Some(at) => ceil_ms((at + slot.period_us).saturating_sub(now)),
                None => rate.period_ms,
            };
            retry = retry.max(wait.max(1));
        }
    }
    let mut states = Vec::with_capacity(limits.len());
    for (slot, rate) in slots.iter_mut().zip(limits) {
        if allowed && cost > 0 {
            slot.admit(now, cost);
        }
        let reset = slot.newest().map_or(0, |newest| {
            ceil_ms((newest + slot.period_us).saturating_sub(now))
        });
        states.push(LimitState {
            limit: rate.limit,
            period_ms: rate.period_ms,
            remaining: rate.limit.saturating_sub(slot.units),
            reset_ms: reset,
        });
    }
    Outcome {
        allowed,
        retry_after_ms: retry,
        limits: states,
    }
}
