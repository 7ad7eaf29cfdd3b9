//! A byte budget for the in-process store (`local_store.max_bytes`).
//!
//! At the bound, a call that would need more memory (a key not yet held, or a
//! `sliding_log` admission that grows its log) first sweeps expired counters
//! (at most every 100 ms), and if that frees too little it is **refused**:
//! answered as limited for one second, counted in
//! `tollgate_local_store_refusals_total`. Keys already held keep their exact
//! counters: evicting one would reset it and admit beyond its limit, so
//! nothing is ever evicted early. "Full" is logged once on entering, once on leaving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use super::{LimitState, Outcome};
use crate::rate::Rate;

/// How long a refusal asks the client to wait.
const REFUSAL_RETRY_MS: u64 = 1000;
/// Sweeps triggered by a full store are at least this far apart.
const SWEEP_EVERY_MS: u64 = 100;

pub(crate) struct Budget {
    /// `local_store.max_bytes`; a reload may change it (`set_max`).
    max: AtomicU64,
    used: AtomicU64,
    refusals: Counter,
    full: AtomicBool,
    last_sweep_ms: AtomicU64,
    origin: Instant,
}

impl Budget {
    pub fn new(max_bytes: usize, refusals: Counter) -> Budget {
        Budget {
            max: AtomicU64::new(max_bytes as u64),
            used: AtomicU64::new(0),
            refusals,
            full: AtomicBool::new(false),
            last_sweep_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// A reload's new bound: calls that would grow the store past it are
    /// refused from now on (what is held already stays until it expires).
    pub fn set_max(&self, max_bytes: usize) {
        self.max.store(max_bytes as u64, Ordering::Relaxed);
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether `extra` more bytes fit.
    pub fn fits(&self, extra: u64) -> bool {
        self.used().saturating_add(extra) <= self.max()
    }

    /// Whether the caller should sweep now (the store is full and no sweep ran lately).
    pub fn may_sweep(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + SWEEP_EVERY_MS;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        now >= last + SWEEP_EVERY_MS
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// An entry went from `old` to `new` bytes (0 for a new or removed entry).
    pub fn changed(&self, old: u64, new: u64) {
        if new >= old {
            self.used.fetch_add(new - old, Ordering::Relaxed);
        } else {
            // Saturating: estimates never make the total wrap.
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(old - new))
                });
        }
        if self.full.load(Ordering::Relaxed) && self.used() < self.max() / 10 * 9 {
            self.full.store(false, Ordering::Relaxed);
            tracing::info!(
                used_bytes = self.used(),
                "in-process store below local_store.max_bytes again: new keys accepted"
            );
        }
    }

    /// The answer for a call that would grow a full store.
    pub fn refuse(&self, limits: &[Rate]) -> Outcome {
        self.refusals.inc();
        if !self.full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_bytes = self.max(),
                "in-process store full (local_store.max_bytes): calls that need more memory are answered as limited"
            );
        }
        Outcome {
            allowed: false,
            retry_after_ms: REFUSAL_RETRY_MS,
            limits: limits
                .iter()
                .map(|r| LimitState {
                    limit: r.limit,
                    period_ms: r.period_ms,
                    remaining: 0,
                    reset_ms: REFUSAL_RETRY_MS,
                })
                .collect(),
        }
    }
}
