//! Rate-limit decisions: the algorithms, their outcome, and the stores that
//! run them (Redis Lua scripts, or the embedded in-process store).

mod breaker;
mod deny_cache;
mod fixed_window;
mod gcra;
pub mod lease;
mod local_store;
mod memory_bound;
#[cfg(test)]
mod properties;
mod redis_store;
mod sliding_log;
mod sliding_window;
pub mod slot_breaker;

pub use breaker::Breaker;
pub use deny_cache::DenyCache;
pub use lease::{Grant, LeaseSize, Leases};
pub use local_store::LocalStore;
pub use redis_store::{all_rules_source, lease_source, script_source, RedisStore};
pub use slot_breaker::SlotBreaker;

use crate::named::named_enum;
use crate::rate::Rate;
use crate::redis_conn::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    FixedWindow,
    SlidingWindow,
    SlidingLog,
    Gcra,
}

named_enum!(Algorithm, "algorithm", {
    "fixed_window" => FixedWindow,
    "sliding_window" => SlidingWindow,
    "sliding_log" => SlidingLog,
    "gcra" => Gcra,
});

impl Algorithm {
    /// Short tag in key names (memory per counter matters).
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fw",
            Algorithm::SlidingWindow => "sw",
            Algorithm::SlidingLog => "sl",
            Algorithm::Gcra => "gc",
        }
    }
}

/// One decision for one (rule, key): every limit checked and charged together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// 0 when allowed; else how long until the request would pass.
    pub retry_after_ms: u64,
    /// One per limit, in the rule's order.
    pub limits: Vec<LimitState>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u64,
    pub period_ms: u64,
    /// Units left after this request.
    pub remaining: u64,
    /// Until the quota is restored (algorithm-specific; see each script).
    pub reset_ms: u64,
}

impl Outcome {
    /// Build an outcome from a script's flat reply
    /// `{allowed, retry_after_ms, remaining_1, reset_ms_1, ...}`.
    pub fn from_reply(reply: &[i64], limits: &[Rate]) -> Option<Outcome> {
        if reply.len() != 2 + 2 * limits.len() {
            return None;
        }
        let nonneg = |v: i64| v.max(0) as u64;
        Some(Outcome {
            allowed: reply[0] == 1,
            retry_after_ms: nonneg(reply[1]),
            limits: limits
                .iter()
                .enumerate()
                .map(|(i, r)| LimitState {
                    limit: r.limit,
                    period_ms: r.period_ms,
                    remaining: nonneg(reply[2 + 2 * i]),
                    reset_ms: nonneg(reply[3 + 2 * i]),
                })
                .collect(),
        })
    }

    /// The limit with the least room left (ties: the one resetting last);
    /// it is what the `X-RateLimit-*` headers and `POST /v1/check` report.
    pub fn tightest(&self) -> Option<&LimitState> {
        tightest(&self.limits)
    }
}

/// The state with the least room left (ties: the one resetting last).
pub fn tightest<'a>(states: impl IntoIterator<Item = &'a LimitState>) -> Option<&'a LimitState> {
    states
        .into_iter()
        .min_by_key(|l| (l.remaining, std::cmp::Reverse(l.reset_ms)))
}

/// One limiter call: the limits of one rule for one key.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub algorithm: Algorithm,
    /// Key base from `KeySpace::limit_base`.
    pub base: &'a str,
    pub limits: &'a [Rate],
    pub cost: u64,
    /// gcra only: the bucket size of every limit (None: the limit itself).
    pub burst: Option<u64>,
    /// false: check whether `cost` would pass and charge nothing (a rule with
    /// `count = "reported"`, which the application charges with a report).
    pub charge: bool,
}

/// Where counters live.
pub enum Store {
    Redis(RedisStore),
    Local(LocalStore),
}

impl Store {
    pub async fn check(&self, call: Call<'_>) -> Result<Outcome, StoreError> {
        match self {
            Store::Redis(r) => r.check(call).await,
            Store::Local(l) => Ok(l.check(call)),
        }
    }

    /// A slice of a fixed_window call's quota for a lease (`limiter/lease.rs`).
    pub async fn lease(&self, call: Call<'_>, divisor: u64, cap: u64) -> Result<Grant, StoreError> {
        match self {
            Store::Redis(r) => r.lease(call, divisor, cap).await,
            Store::Local(l) => Ok(l.lease(call, divisor, cap)),
        }
    }

    /// The state of a call's counters without charging anything (cost 0).
    pub async fn peek(&self, call: Call<'_>) -> Result<Outcome, StoreError> {
        self.check(Call { cost: 0, ..call }).await
    }

    /// Delete a call's counters; with Redis, announce it on `channel` so every
    /// replica drops the key from its deny cache.
    pub async fn reset(
        &self,
        base: &str,
        limits: &[Rate],
        channel: &str,
    ) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.reset(base, limits, channel).await,
            Store::Local(l) => {
                l.reset(base);
                Ok(())
            }
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Store::Local(_))
    }
}

/// Shared by the in-process algorithms: the state of one limit's counter.
pub(crate) trait Slot: Default {
    /// After this instant (µs on the store's clock) the slot holds nothing.
    fn expires_us(&self) -> u64;

    /// Bytes the slot holds on the heap (what `local_store.max_bytes` counts beyond its size).
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// Milliseconds, rounded up, from microseconds.
pub(crate) fn ceil_ms(us: u64) -> u64 {
    us.div_ceil(1000)
}
