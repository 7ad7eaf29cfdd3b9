//! In-process twin of `lua/sliding_log.lua`: exact, O(limit) memory.
//! Units admitted together are kept as one run (time, count), so a large
//! cost costs one entry, not one per unit.

use std::collections::VecDeque;

use super::{ceil_ms, LimitState, Outcome, Slot};
use crate::rate::Rate;

#[derive(Clone, Debug, Default)]
pub(crate) struct LogSlot {
    /// (arrival µs, units) of the calls admitted in the last period, oldest first.
    log: VecDeque<(u64, u64)>,
    /// Units in `log` (the sum of its counts).
    units: u64,
    period_us: u64,
}

impl Slot for LogSlot {
    fn expires_us(&self) -> u64 {
        self.log
            .back()
            .map_or(0, |(newest, _)| newest.saturating_add(self.period_us))
    }

    fn heap_bytes(&self) -> usize {
        self.log.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

impl LogSlot {
    /// Arrival time of the `index`-th oldest unit (0-based), if there is one.
    fn unit_at(&self, mut index: u64) -> Option<u64> {
        for &(at, count) in &self.log {
            if index < count {
                return Some(at);
            }
            index -= count;
        }
        None
    }
}

pub(crate) fn check(now: u64, limits: &[Rate], slots: &mut [LogSlot], cost: u64) -> Outcome {
    let mut allowed = true;
    let mut retry = 0;
    for (slot, rate) in slots.iter_mut().zip(limits) {
        slot.period_us = rate.period_ms.saturating_mul(1000);
        let cutoff = now.saturating_sub(slot.period_us);
        while let Some(&(at, count)) = slot.log.front() {
            if at > cutoff {
                break;
            }
            slot.log.pop_front();
            slot.units -= count;
        }
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
            match slot.log.back_mut() {
                Some((at, count)) if *at == now => *count += cost,
                _ => slot.log.push_back((now, cost)),
            }
            slot.units += cost;
        }
        let reset = slot.log.back().map_or(0, |&(newest, _)| {
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
