//! In-process twin of `lua/sliding_window.lua` (same estimate, same error bound).

use super::{LimitState, Outcome, Slot};
use crate::rate::Rate;

#[derive(Clone, Debug, Default)]
pub(crate) struct WindowSlot {
    /// Index of the current window: floor(now_ms / period_ms).
    win: u64,
    cur: u64,
    prev: u64,
    expires_us: u64,
}

impl Slot for WindowSlot {
    fn expires_us(&self) -> u64 {
        self.expires_us
    }
}

pub(crate) fn check(now_us: u64, limits: &[Rate], slots: &mut [WindowSlot], cost: u64) -> Outcome {
    let now = now_us / 1000;
    let mut allowed = true;
    let mut retry = 0u64;
    let mut estimates = Vec::with_capacity(limits.len());
    for (slot, rate) in slots.iter_mut().zip(limits) {
        let period = rate.period_ms;
        let win = now / period;
        let elapsed = now - win * period;
        if slot.win + 1 == win {
            *slot = WindowSlot {
                win,
                cur: 0,
                prev: slot.cur,
                expires_us: slot.expires_us,
            };
        } else if slot.win != win {
            *slot = WindowSlot {
                win,
                ..Default::default()
            };
        }
        let (c, p, limit) = (slot.cur as f64, slot.prev as f64, rate.limit as f64);
        let est = p * (period - elapsed) as f64 / period as f64 + c;
        estimates.push(est);
        if est + cost as f64 > limit + 1e-9 {
            allowed = false;
            let costf = cost as f64;
            let wait = if c + costf <= limit && p > 0.0 {
                (period as f64 * (1.0 - (limit - c - costf) / p)).ceil() - elapsed as f64
            } else {
                let mut w = (period - elapsed) as f64;
                if c > 0.0 {
                    w += (period as f64 * (1.0 - (limit - costf) / c))
                        .ceil()
                        .max(0.0);
                }
                w
            };
            retry = retry.max(wait.max(1.0) as u64);
        }
    }
    let mut states = Vec::with_capacity(limits.len());
    for ((slot, rate), est) in slots.iter_mut().zip(limits).zip(estimates) {
        let mut used = est;
        if allowed && cost > 0 {
            slot.cur = slot.cur.saturating_add(cost);
            slot.expires_us = now_us.saturating_add(rate.period_ms.saturating_mul(2000));
            used += cost as f64;
        }
        states.push(LimitState {
            limit: rate.limit,
            period_ms: rate.period_ms,
            remaining: (rate.limit as f64 - used + 1e-9).floor().max(0.0) as u64,
            reset_ms: (slot.win + 1) * rate.period_ms - now,
        });
    }
    Outcome {
        allowed,
        retry_after_ms: retry,
        limits: states,
    }
}
