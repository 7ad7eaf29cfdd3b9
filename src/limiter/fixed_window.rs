//! In-process twin of `lua/fixed_window.lua`.

use super::{ceil_ms, LimitState, Outcome, Slot};
use crate::rate::Rate;

#[derive(Clone, Debug, Default)]
pub(crate) struct FixedSlot {
    count: u64,
    /// The window ends here (µs); set by the first hit.
    ends_us: u64,
}

impl Slot for FixedSlot {
    fn expires_us(&self) -> u64 {
        self.ends_us
    }
}

pub(crate) fn check(now: u64, limits: &[Rate], slots: &mut [FixedSlot], cost: u64) -> Outcome {
    let mut allowed = true;
    let mut retry = 0;
    for (slot, rate) in slots.iter_mut().zip(limits) {
        if now >= slot.ends_us {
            *slot = FixedSlot::default();
        }
        let ttl = if slot.count == 0 {
            rate.period_ms
        } else {
            ceil_ms(slot.ends_us - now)
        };
        if slot.count.saturating_add(cost) > rate.limit {
            allowed = false;
            retry = retry.max(ttl);
        }
    }
    let mut states = Vec::with_capacity(limits.len());
    for (slot, rate) in slots.iter_mut().zip(limits) {
        if allowed && cost > 0 {
            if slot.count == 0 {
                slot.ends_us = now.saturating_add(rate.period_ms.saturating_mul(1000));
            }
            slot.count = slot.count.saturating_add(cost);
        }
        let ttl = if slot.count == 0 {
            rate.period_ms
        } else {
            ceil_ms(slot.ends_us - now)
        };
        states.push(LimitState {
            limit: rate.limit,
            period_ms: rate.period_ms,
            remaining: rate.limit.saturating_sub(slot.count),
            reset_ms: ttl,
        });
    }
    Outcome {
        allowed,
        retry_after_ms: retry,
        limits: states,
    }
}
