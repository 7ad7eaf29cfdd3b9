//! In-process twin of `lua/sliding_log.lua`: exact, O(limit) memory.

use std::collections::VecDeque;

use super::{ceil_ms, LimitState, Outcome, Slot};
use crate::rate::Rate;

#[derive(Clone, Debug, Default)]
pub(crate) struct LogSlot {
    /// Arrival times (µs) of the units admitted in the last period, oldest first.
    log: VecDeque<u64>,
    period_us: u64,
}

impl Slot for LogSlot {
    fn expires_us(&self) -> u64 {
        self.log.back().map_or(0, |newest| newest + self.period_us)
    }

    fn heap_bytes(&self) -> usize {
        self.log.capacity() * std::mem::size_of::<u64>()
    }
}

pub(crate) fn check(now: u64, limits: &[Rate], slots: &mut [LogSlot], cost: u64) -> Outcome {
    let mut allowed = true;
    let mut retry = 0;
    for (slot, rate) in slots.iter_mut().zip(limits) {
        slot.period_us = rate.period_ms * 1000;
        let cutoff = now.saturating_sub(slot.period_us);
        while slot.log.front().is_some_and(|&t| t <= cutoff) {
            slot.log.pop_front();
        }
        let count = slot.log.len() as u64;
        if count + cost > rate.limit {
            allowed = false;
            let oldest_needed = slot.log[(count + cost - rate.limit - 1) as usize];
            retry = retry.max(ceil_ms(oldest_needed + slot.period_us - now).max(1));
        }
    }
    let mut states = Vec::with_capacity(limits.len());
    for (slot, rate) in slots.iter_mut().zip(limits) {
        if allowed {
            slot.log.extend(std::iter::repeat_n(now, cost as usize));
        }
        let reset = slot
            .log
            .back()
            .map_or(0, |&newest| ceil_ms(newest + slot.period_us - now));
        states.push(LimitState {
            limit: rate.limit,
            period_ms: rate.period_ms,
            remaining: rate.limit.saturating_sub(slot.log.len() as u64),
            reset_ms: reset,
        });
    }
    Outcome {
        allowed,
        retry_after_ms: retry,
        limits: states,
    }
}
