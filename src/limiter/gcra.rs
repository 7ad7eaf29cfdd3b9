//! In-process twin of `lua/gcra.lua`. Here the arithmetic is exact integers:
//! times are kept multiplied by the limit, so period / limit never rounds.

use super::{ceil_ms, LimitState, Outcome, Slot};
use crate::rate::Rate;

#[derive(Clone, Debug, Default)]
pub(crate) struct GcraSlot {
    /// Theoretical arrival time in µs, multiplied by `scale`.
    tat_scaled: u128,
    /// The limit `tat_scaled` was multiplied by (0: empty slot).
    scale: u64,
}

impl Slot for GcraSlot {
    fn expires_us(&self) -> u64 {
        if self.scale == 0 {
            0
        } else {
            (self.tat_scaled / self.scale as u128) as u64 + 1
        }
    }
}

pub(crate) fn check(now: u64, limits: &[Rate], slots: &mut [GcraSlot], cost: u64) -> Outcome {
    let mut allowed = true;
    let mut retry = 0;
    // Per limit: (units ahead of now, units ahead after this request), scaled.
    let mut ahead = Vec::with_capacity(limits.len());
    for (slot, rate) in slots.iter_mut().zip(limits) {
        let limit = rate.limit as u128;
        let period = rate.period_ms as u128 * 1000;
        if slot.scale != rate.limit {
            // A reload changed the limit: carry the TAT over in the new scale.
            let tat = if slot.scale == 0 {
                0
            } else {
                slot.tat_scaled / slot.scale as u128
            };
            *slot = GcraSlot {
                tat_scaled: tat * limit,
                scale: rate.limit,
            };
        }
        let now_scaled = now as u128 * limit;
        let diff = slot.tat_scaled.saturating_sub(now_scaled);
        let new_diff = diff + cost as u128 * period;
        if new_diff > period * limit {
            allowed = false;
            let wait_us = ((new_diff - period * limit).div_ceil(limit)) as u64;
            retry = retry.max(ceil_ms(wait_us).max(1));
        }
        ahead.push((diff, new_diff));
    }
    let mut states = Vec::with_capacity(limits.len());
    for ((slot, rate), (diff, new_diff)) in slots.iter_mut().zip(limits).zip(ahead) {
        let limit = rate.limit as u128;
        let period = rate.period_ms as u128 * 1000;
        let d = if allowed && cost > 0 {
            slot.tat_scaled = now as u128 * limit + new_diff;
            new_diff
        } else {
            diff
        };
        states.push(LimitState {
            limit: rate.limit,
            period_ms: rate.period_ms,
            remaining: ((period * limit - d.min(period * limit)) / period) as u64,
            reset_ms: ceil_ms(d.div_ceil(limit) as u64),
        });
    }
    Outcome {
        allowed,
        retry_after_ms: retry,
        limits: states,
    }
}
