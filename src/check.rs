//! One limiter call as the hot path makes it:
//!
//! 1. the deny cache (a key denied until T is answered from memory until T);
//! 2. the circuit breaker (while Redis is away, no call waits on it);
//! 3. the store, bounded by `redis.timeout`, never retried blindly;
//! 4. on failure, the rule's `on_redis_error`: allow, deny, or the in-process
//!    limiter with `limit / fallback_replicas`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::{ApiConfig, Config};
use crate::keys::{KeySpace, AD_HOC_RULE};
use crate::limiter::{
    slot_breaker, Algorithm, Breaker, Call, DenyCache, LimitState, LocalStore, Outcome, RedisStore,
    SlotBreaker, Store,
};
use crate::metrics::{KindLabels, Metrics};
use crate::rate::Rate;
use crate::redis_conn::StoreError;
use crate::rule::{OnRedisError, Rule};

/// The limiter as the hot path calls it: the store and everything in front
/// of it (deny cache, breakers) and behind it (the fallback). The App holds
/// one; nothing here knows about rules beyond a call's `LimitSpec`.
pub struct Limiter {
    pub store: Store,
    /// Per-replica limiter for `on_redis_error = "local"` while Redis is away.
    pub fallback: LocalStore,
    /// Open while Redis is away: calls go straight to `on_redis_error`.
    pub breaker: Breaker,
    /// With a Redis Cluster: a breaker per slot, so one failed master sends
    /// only its own keys to `on_redis_error`.
    pub slots: Option<SlotBreaker>,
    pub deny_cache: DenyCache,
    keys: KeySpace,
    /// `redis.fallback_replicas`: the fallback's share of each limit (a
    /// reload may change it: `set_fallback_replicas`).
    fallback_replicas: AtomicU64,
    /// `[api]`: what one call may ask; a reload swaps them (`set_caps`).
    caps: ArcSwap<ApiConfig>,
    deny_cache_hits: Counter,
    redis_call_duration: Histogram,
    redis_errors: Family<KindLabels, Counter>,
}

/// What one limiter call needs beyond its key.
pub struct LimitSpec<'a> {
    pub rule: &'a str,
    pub algorithm: Algorithm,
    pub limits: &'a [Rate],
    /// gcra only (see `Rule::burst`).
    pub burst: Option<u64>,
    pub on_redis_error: OnRedisError,
}

impl<'a> From<&'a Rule> for LimitSpec<'a> {
    fn from(rule: &'a Rule) -> Self {
        LimitSpec {
            rule: &rule.name,
            algorithm: rule.algorithm,
            limits: &rule.limits,
            burst: rule.burst,
            on_redis_error: rule.on_redis_error,
        }
    }
}

/// Where an outcome came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Store,
    DenyCache,
    /// Redis failed or the breaker is open: `on_redis_error` decided.
    Fallback,
}

impl Limiter {
    pub fn new(config: &Config, metrics: &Metrics) -> Limiter {
        let store = match &config.redis {
            Some(r) => Store::Redis(RedisStore::new(r.endpoint.clone(), r.timeout)),
            None => Store::Local(LocalStore::new(
                config.local_store.max_bytes,
                metrics.local_store_refusals.clone(),
            )),
        };
        let deny_cache_bytes = config.redis.as_ref().map_or(0, |r| r.deny_cache_bytes);
        Limiter {
            store,
            fallback: LocalStore::new(
                config.local_store.max_bytes,
                metrics.local_store_refusals.clone(),
            ),
            breaker: Breaker::new(metrics.redis_up.clone()),
            slots: config
                .redis
                .as_ref()
                .filter(|r| r.endpoint.is_cluster())
                .map(|_| SlotBreaker::new(metrics.redis_open_slots.clone())),
            deny_cache: DenyCache::new(deny_cache_bytes, metrics.deny_cache_evictions.clone()),
            keys: KeySpace::new(&config.prefix),
            fallback_replicas: AtomicU64::new(
                config.redis.as_ref().map_or(1, |r| r.fallback_replicas) as u64,
            ),
            caps: ArcSwap::from_pointee(config.api.clone()),
            deny_cache_hits: metrics.deny_cache_hits.clone(),
            redis_call_duration: metrics.redis_call_duration.clone(),
            redis_errors: metrics.redis_errors.clone(),
        }
    }

    /// One limiter call for one (rule, key).
    pub async fn check(&self, spec: LimitSpec<'_>, key: &str, cost: u64) -> (Outcome, Source) {
        let base = self.keys.limit_base(spec.algorithm, spec.rule, key);
        // The deny cache tells limits apart, not bursts: an ad-hoc call naming
        // its own burst is always asked of the store.
        let cacheable = cost == 1 && (spec.burst.is_none() || spec.rule != AD_HOC_RULE);
        if cacheable {
            if let Some(outcome) = self.deny_cache.get(&base, spec.limits) {
                self.deny_cache_hits.inc();
                return (outcome, Source::DenyCache);
            }
        }
        let call = Call {
            algorithm: spec.algorithm,
            base: &base,
            limits: spec.limits,
            cost,
            burst: spec.burst,
        };
        // With a cluster, the breaker that matters is the one of this key's slot
        // (the global one only covers start-up, until the scripts are loaded).
        let slot = self.slots.as_ref().map(|_| slot_breaker::slot(&base));
        let skip = match (&self.slots, slot) {
            (Some(slots), Some(slot)) => self.breaker.is_open() || slots.should_skip(slot),
            _ => self.breaker.is_open(),
        };
        // The breakers stand in front of Redis only: the embedded store never fails.
        let remote = !self.store.is_local();
        let result = if remote && skip {
            Err(None)
        } else {
            let started = Instant::now();
            let r = self.store.check(call).await;
            if remote {
                self.redis_call_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            r.map_err(Some)
        };
        match result {
            Ok(outcome) => {
                if let (Some(slots), Some(slot)) = (&self.slots, slot) {
                    slots.succeeded(slot);
                }
                if cacheable && remote {
                    self.deny_cache.insert(&base, spec.limits, &outcome);
                }
                (outcome, Source::Store)
            }
            Err(err) => {
                if let Some(err) = err {
                    self.redis_failed(spec.rule, slot, &err);
                }
                (self.fallback(&spec, call), Source::Fallback)
            }
        }
    }

    fn redis_failed(&self, rule: &str, slot: Option<u16>, err: &StoreError) {
        self.redis_errors
            .get_or_create(&KindLabels {
                kind: err.kind().label(),
            })
            .inc();
        if err.is_transient() {
            // Redis is slow or away: stop sending it requests until the probe says so.
            match (&self.slots, slot) {
                (Some(slots), Some(slot)) => slots.trip(slot, err),
                _ => self.breaker.trip(err),
            }
        } else {
            // Redis answered with an error (a script bug, OOM): this call only.
            tracing::error!(rule, error = %err, "Redis refused a limiter call")
        }
    }

    fn fallback(&self, spec: &LimitSpec<'_>, call: Call<'_>) -> Outcome {
        match spec.on_redis_error {
            OnRedisError::Allow => unknown_state(spec.limits, true),
            OnRedisError::Deny => unknown_state(spec.limits, false),
            OnRedisError::Local => {
                let replicas = self.fallback_replicas.load(Ordering::Relaxed).max(1);
                let shares: Vec<Rate> = spec
                    .limits
                    .iter()
                    .map(|r| Rate {
                        limit: (r.limit / replicas).max(1),
                        period_ms: r.period_ms,
                    })
                    .collect();
                self.fallback.check(Call {
                    limits: &shares,
                    burst: call.burst.map(|b| (b / replicas).max(1)),
                    ..call
                })
            }
        }
    }
}

// === impl Limiter: settings a reload applies ===

impl Limiter {
    /// The `[api]` caps in force now.
    pub fn caps(&self) -> arc_swap::Guard<Arc<ApiConfig>> {
        self.caps.load()
    }

    pub fn set_caps(&self, caps: ApiConfig) {
        self.caps.store(Arc::new(caps));
    }

    pub fn set_fallback_replicas(&self, replicas: u32) {
        self.fallback_replicas
            .store(u64::from(replicas.max(1)), Ordering::Relaxed);
    }
}

/// The answer when no store could be asked: full quota shown, or a 1 s denial.
fn unknown_state(limits: &[Rate], allowed: bool) -> Outcome {
    Outcome {
        allowed,
        retry_after_ms: if allowed { 0 } else { 1000 },
        limits: limits
            .iter()
            .map(|r| LimitState {
                limit: r.limit,
                period_ms: r.period_ms,
                remaining: if allowed { r.limit } else { 0 },
                reset_ms: r.period_ms,
            })
            .collect(),
    }
}
