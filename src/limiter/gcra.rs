//! In-process twin of `lua/gcra.lua`, with the same exact representation:
//! the TAT is whole microseconds plus a fraction `frac / limit`, and the
//! interval `period / limit` is `q + r / limit`, so nothing ever rounds.

use super::{ceil_ms, LimitState, Outcome, Slot};
use crate::rate::Rate;

#[derive(Clone, Debug, Default)]
pub(crate) struct GcraSlot {
    /// Theoretical arrival time, whole µs (0: empty slot).
    tat_us: u64,
    /// Plus `frac / limit` µs; below the limit (clamped if a reload lowered it).
    frac: u64,
}

impl Slot for GcraSlot {
    fn expires_us(&self) -> u64 {
        if self.tat_us == 0 {
            0
        } else {
            self.tat_us + 1
        }
    }
}

/// Time ahead of now in `1/limit` µs units (u128: no overflow for any input).
fn scaled(us: u64, frac: u64, limit: u64) -> u128 {
    us as u128 * limit as u128 + frac as u128
}

pub(crate) fn check(
    now: u64,
    limits: &[Rate],
    slots: &mut [GcraSlot],
    cost: u64,
    burst: Option<u64>,
) -> Outcome {
    let mut allowed = true;
    let mut retry = 0;
    // Per limit: (ahead of now, ahead after this request), in 1/limit µs.
    let mut ahead = Vec::with_capacity(limits.len());
    for (slot, rate) in slots.iter_mut().zip(limits) {
        let limit = rate.limit.max(1);
        let period = rate.period_ms.max(1) as u128 * 1000;
        let tau = burst.unwrap_or(limit) as u128 * period;
        slot.frac = slot.frac.min(limit - 1);
        let diff = if slot.tat_us >= now {
            scaled(slot.tat_us - now, slot.frac, limit)
        } else {
            0
        };
        let new_diff = diff + cost as u128 * period;
        if new_diff > tau {
            allowed = false;
            let wait_us = (new_diff - tau).div_ceil(limit as u128);
            retry = retry.max(ceil_ms(wait_us.min(u64::MAX as u128) as u64).max(1));
        }
        ahead.push((diff, new_diff));
    }
    let mut states = Vec::with_capacity(limits.len());
    for ((slot, rate), (diff, new_diff)) in slots.iter_mut().zip(limits).zip(ahead) {
        let limit = rate.limit.max(1) as u128;
        let period = rate.period_ms.max(1) as u128 * 1000;
        let tau = burst.unwrap_or(rate.limit) as u128 * period;
        let d = if allowed && cost > 0 {
            let whole = (new_diff / limit).min((u64::MAX - now) as u128) as u64;
            slot.tat_us = now + whole;
            slot.frac = (new_diff % limit) as u64;
            new_diff
        } else {
            diff
        };
        states.push(LimitState {
            limit: rate.limit,
            period_ms: rate.period_ms,
            remaining: (tau.saturating_sub(d) / period).min(u64::MAX as u128) as u64,
            reset_ms: ceil_ms(d.div_ceil(limit).min(u64::MAX as u128) as u64),
        });
    }
    Outcome {
        allowed,
        retry_after_ms: retry,
        limits: states,
    }
}
