//! One limiter call as the hot path makes it:
//!
//! 0. a stored override of the (rule, key) (`check/overridden.rs`, a lookup
//!    in this node's table): its rates replace the rule's, or `unlimited` /
//!    `deny` answer without going further;
//! 1. the caps (`check/caps.rs`): a charge past one is refused, whatever
//!    surface asked, before anything is written;
//! 2. the deny cache (a key denied until T is answered from memory until T);
//! 3. the circuit breaker (while Redis is away, no call waits on it);
//! 4. the store, bounded by `redis.timeout`, never retried blindly;
//! 5. on failure, the rule's `on_redis_error`: allow, deny, or the in-process
//!    limiter with `fleet::share(limit, replicas)`: replicas as last seen in
//!    the fleet registry (`fallback_replicas = "auto"`) or a fixed number.
//!
//! A request's several rules go through `check_all`: all or nothing. Either
//! every deciding rule admits and all are charged, or none is. On one Redis
//! (or Sentinel) that is one `lua/all_rules.lua` call; in-process, one lock;
//! on a Cluster, where the rules' keys lie in different slots, a peek of
//! every rule and then the charges (see `cluster_together`).

pub mod caps;
pub mod overridden;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use futures::future::join_all;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::allowlist::kind::ListKind;
use crate::config::{ApiConfig, Config, FallbackReplicas};
use crate::fleet::{self, LiveCount};
use crate::keys::{KeySpace, AD_HOC_RULE};
use crate::limiter::{
    lease, slot_breaker, Algorithm, Breaker, Call, DenyCache, LeaseSize, Leases, LimitState,
    LocalStore, Outcome, RedisStore, SlotBreaker, Store,
};
use crate::metrics::{KindLabels, Metrics, ReasonLabels};
use crate::overrides::Overrides;
use crate::rate::Rate;
use crate::redis_conn::StoreError;
use crate::rule::{Count, OnRedisError, Rule};
use overridden::Overridden;

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
    /// Slices of hot keys' quota this replica holds (`limiter/lease.rs`).
    pub leases: Leases,
    keys: KeySpace,
    /// `redis.fallback_replicas`: a fixed divisor for the fallback, or 0 for
    /// "auto" (a reload may change it: `set_fallback_replicas`).
    fallback_replicas: AtomicU64,
    /// The live replicas the fleet registry last saw (`fleet.rs` writes it).
    pub live_replicas: LiveCount,
    /// `[api]`: the caps every charge meets (a reload swaps them: `set_caps`).
    caps: ArcSwap<ApiConfig>,
    /// Per-client overrides: every call looks its (rule, key) up here first
    /// (`check/overridden.rs`). The follower and the admin API share it
    /// (`App::overrides`).
    pub overrides: Arc<Overrides>,
    refused: Family<ReasonLabels, Counter>,
    deny_cache_hits: Counter,
    redis_call_duration: Histogram,
    redis_errors: Family<KindLabels, Counter>,
}

/// What one limiter call needs beyond its key.
#[derive(Clone, Copy)]
pub struct LimitSpec<'a> {
    pub rule: &'a str,
    pub algorithm: Algorithm,
    pub limits: &'a [Rate],
    /// gcra only (see `Rule::burst`).
    pub burst: Option<u64>,
    pub on_redis_error: OnRedisError,
    /// false: the call only checks whether its cost would pass (a rule with
    /// `count = "reported"`); `Limiter::report` charges it.
    pub charge: bool,
    /// A rule with `lease`: hot keys decide from slices (`limiter/lease.rs`).
    pub lease: Option<LeaseSize>,
}

impl<'a> From<&'a Rule> for LimitSpec<'a> {
    fn from(rule: &'a Rule) -> Self {
        LimitSpec {
            rule: &rule.name,
            algorithm: rule.algorithm,
            limits: &rule.limits,
            burst: rule.burst,
            on_redis_error: rule.on_redis_error,
            charge: rule.count == Count::Requests,
            lease: rule.lease,
        }
    }
}

/// One rule of a request, as `check_all` takes it.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    pub spec: LimitSpec<'a>,
    pub key: &'a str,
    pub cost: u64,
    /// A shadow rule is charged like the others but refuses nothing.
    pub shadow: bool,
}

/// Where an outcome came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Store,
    DenyCache,
    /// Redis failed or the breaker is open: `on_redis_error` decided.
    Fallback,
    /// A stored override (`unlimited`, `deny`) decided without the store.
    Override,
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
            breaker: Breaker::new(metrics.redis_up.clone(), metrics.redis_refusing.clone()),
            slots: config
                .redis
                .as_ref()
                .filter(|r| r.endpoint.is_cluster())
                .map(|_| {
                    SlotBreaker::new(
                        metrics.redis_open_slots.clone(),
                        metrics.redis_refusing_slots.clone(),
                    )
                }),
            deny_cache: DenyCache::new(deny_cache_bytes, metrics.deny_cache_evictions.clone()),
            leases: Leases::new(metrics.leases.clone()),
            keys: KeySpace::new(&config.prefix),
            fallback_replicas: AtomicU64::new(fixed_divisor(
                config.redis.as_ref().map(|r| r.fallback_replicas),
            )),
            live_replicas: LiveCount::default(),
            caps: ArcSwap::from_pointee(config.api.clone()),
            overrides: Arc::new(Overrides::build(config, ListKind::Override)),
            refused: metrics.refused_requests.clone(),
            deny_cache_hits: metrics.deny_cache_hits.clone(),
            redis_call_duration: metrics.redis_call_duration.clone(),
            redis_errors: metrics.redis_errors.clone(),
        }
    }

    /// The caps every charge meets (`[api]`).
    pub fn caps(&self) -> Guard<Arc<ApiConfig>> {
        self.caps.load()
    }

    /// New caps (a reload): they apply to the next charge.
    pub fn set_caps(&self, caps: ApiConfig) {
        self.caps.store(Arc::new(caps));
    }

    /// The caps for one charge; a refusal is counted by its reason. `check`
    /// and `check_all` call it; a surface that charges several independent
    /// calls (RLS) calls it for each first, so a refusal writes nothing.
    pub fn admit(&self, spec: &LimitSpec<'_>, cost: u64) -> Result<(), caps::Refused> {
        caps::admit(&self.caps.load(), spec, cost).inspect_err(|r| {
            self.refused
                .get_or_create(&ReasonLabels { reason: r.reason })
                .inc();
        })
    }

    /// One limiter call for one (rule, key), within the caps.
    pub async fn check(
        &self,
        spec: LimitSpec<'_>,
        key: &str,
        cost: u64,
    ) -> Result<(Outcome, Source), caps::Refused> {
        let table = self.overrides.table();
        let spec = match self.override_of(&table, &spec, key, cost) {
            None => spec,
            Some(Overridden::Spec(s)) => s,
            Some(Overridden::Answer(outcome)) => {
                self.admit(&spec, cost)?;
                return Ok((outcome, Source::Override));
            }
        };
        self.admit(&spec, cost)?;
        Ok(self.check_admitted(spec, key, cost).await)
    }

    /// A request's rules, all or nothing (see the module comment): unless
    /// every deciding (non-shadow) rule admits, none is charged. `None` for a
    /// rule that was not asked: a deciding rule denied from the deny cache
    /// answers the request without a store call.
    pub async fn check_all(
        &self,
        asks: &[Ask<'_>],
    ) -> Result<Vec<Option<(Outcome, Source)>>, caps::Refused> {
        let table = self.overrides.table();
        if table.is_empty() {
            return self.check_all_asked(asks).await;
        }
        // Overrides first: an answered ask leaves the call; a `deny` refuses
        // the request and charges no other rule (like the deny cache).
        let mut answers: Vec<Option<(Outcome, Source)>> = vec![None; asks.len()];
        let mut asked: Vec<Ask<'_>> = Vec::with_capacity(asks.len());
        let mut at: Vec<usize> = Vec::with_capacity(asks.len());
        for (i, ask) in asks.iter().enumerate() {
            match self.override_of(&table, &ask.spec, ask.key, ask.cost) {
                None => {
                    asked.push(*ask);
                    at.push(i);
                }
                Some(Overridden::Spec(spec)) => {
                    asked.push(Ask { spec, ..*ask });
                    at.push(i);
                }
                Some(Overridden::Answer(outcome)) => {
                    self.admit(&ask.spec, ask.cost)?;
                    let refuses = !outcome.allowed && !ask.shadow;
                    answers[i] = Some((outcome, Source::Override));
                    if refuses {
                        return Ok(answers);
                    }
                }
            }
        }
        let asked_answers = self.check_all_asked(&asked).await?;
        for (i, answer) in at.into_iter().zip(asked_answers) {
            answers[i] = answer;
        }
        Ok(answers)
    }

    /// The stored override of one ask (`check/overridden.rs`), unless the
    /// running caps refuse its rates for this call (the rule's algorithm
    /// changed since it was set, a cost past its smallest rate): then the
    /// rule's own limits decide, as if there were none.
    fn override_of<'t>(
        &self,
        table: &'t crate::allowlist::table::Table<crate::overrides::OverrideKey>,
        spec: &LimitSpec<'t>,
        key: &str,
        cost: u64,
    ) -> Option<Overridden<'t>> {
        match overridden::apply(table, spec, key)? {
            Overridden::Spec(s) if caps::admit(&self.caps.load(), &s, cost).is_err() => None,
            found => Some(found),
        }
    }

    /// `check_all` once overrides have had their say.
    async fn check_all_asked(
        &self,
        asks: &[Ask<'_>],
    ) -> Result<Vec<Option<(Outcome, Source)>>, caps::Refused> {
        for ask in asks {
            self.admit(&ask.spec, ask.cost)?;
        }
        // No rule applies (every one gated, bypassed or unmatched): nothing to ask.
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        if let [ask] = asks {
            return Ok(vec![Some(
                self.check_admitted(ask.spec, ask.key, ask.cost).await,
            )]);
        }
        let bases: Vec<String> = asks
            .iter()
            .map(|a| self.keys.limit_base(a.spec.algorithm, a.spec.rule, a.key))
            .collect();
        let generation = self.deny_cache.generation();
        let mut answers: Vec<Option<(Outcome, Source)>> = vec![None; asks.len()];
        for (i, ask) in asks.iter().enumerate() {
            if !cacheable(&ask.spec, ask.cost) {
                continue;
            }
            if let Some(outcome) = self.deny_cache.get(&bases[i], ask.spec.limits) {
                self.deny_cache_hits.inc();
                answers[i] = Some((outcome, Source::DenyCache));
                if !ask.shadow {
                    // Denied: the other rules are neither asked nor charged.
                    return Ok(answers);
                }
            }
        }
        let pending: Vec<usize> = (0..asks.len()).filter(|&i| answers[i].is_none()).collect();
        if pending.is_empty() {
            // Every rule answered from the deny cache (shadow rules all).
            return Ok(answers);
        }
        let calls: Vec<(Call<'_>, bool)> = pending
            .iter()
            .map(|&i| {
                let a = &asks[i];
                let call = Call {
                    algorithm: a.spec.algorithm,
                    base: &bases[i],
                    limits: a.spec.limits,
                    cost: a.cost,
                    burst: a.spec.burst,
                    charge: a.spec.charge,
                };
                (call, !a.shadow)
            })
            .collect();
        let slots: Vec<u16> = match &self.slots {
            Some(_) => calls
                .iter()
                .map(|(c, _)| slot_breaker::slot(c.base))
                .collect(),
            None => Vec::new(),
        };
        let skip = self.breaker.is_open()
            || match &self.slots {
                Some(breakers) => slots.iter().any(|&s| breakers.should_skip(s)),
                None => false,
            };
        let result = match &self.store {
            Store::Local(local) => Ok(local.check_all(&calls)),
            Store::Redis(_) if skip => Err(None),
            Store::Redis(redis) => {
                let started = Instant::now();
                let one_slot = slots.windows(2).all(|w| w[0] == w[1]);
                let r = if one_slot {
                    redis
                        .check_all(&calls)
                        .await
                        .map_err(|e| (e, slots.first().copied()))
                } else {
                    cluster_together(redis, &calls, &slots).await
                };
                self.redis_call_duration
                    .observe(started.elapsed().as_secs_f64());
                r.map_err(Some)
            }
        };
        let outcomes = match result {
            Ok(outcomes) => {
                if let Some(breakers) = &self.slots {
                    slots.iter().for_each(|&s| breakers.succeeded(s));
                }
                if !self.store.is_local() {
                    for ((call, _), outcome) in calls.iter().zip(&outcomes) {
                        if call.cost == 1 {
                            self.deny_cache.insert_unless_reset(
                                call.base,
                                call.limits,
                                outcome,
                                generation,
                            );
                        }
                    }
                }
                outcomes.into_iter().map(|o| (o, Source::Store)).collect()
            }
            Err(err) => {
                if let Some((err, slot)) = err {
                    let rule = asks[pending[0]].spec.rule;
                    self.redis_failed(rule, slot, &err);
                }
                let specs: Vec<&LimitSpec<'_>> = pending.iter().map(|&i| &asks[i].spec).collect();
                self.fallback_all(&specs, &calls)
                    .into_iter()
                    .map(|o| (o, Source::Fallback))
                    .collect::<Vec<_>>()
            }
        };
        for (i, answer) in pending.into_iter().zip(outcomes) {
            answers[i] = Some(answer);
        }
        Ok(answers)
    }

    /// One (rule, key) whose charge the caps admitted.
    async fn check_admitted(&self, spec: LimitSpec<'_>, key: &str, cost: u64) -> (Outcome, Source) {
        let base = self.keys.limit_base(spec.algorithm, spec.rule, key);
        let cacheable = cacheable(&spec, cost);
        let generation = self.deny_cache.generation();
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
            charge: spec.charge,
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
        // A hot key of a lease rule spends the slice this replica holds, even
        // while Redis is away; with none held it takes one (one call).
        let lease = self.leases.ask(spec.lease.filter(|_| remote), &call);
        if let lease::Ask::Spent(outcome) = lease {
            return (outcome, Source::Store);
        }
        let result = if remote && skip {
            Err(None)
        } else {
            let started = Instant::now();
            // A request that waited for another's take and spent its slice
            // made no call: not timed as one.
            let (r, called) = match lease {
                lease::Ask::Take(held, size, metrics) => {
                    let replicas = self.live_replicas.get();
                    held.take(&self.store, call, size, replicas, &metrics).await
                }
                _ => (self.store.check(call).await.map_err(Some), true),
            };
            if remote && called {
                self.redis_call_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            r
        };
        match result {
            Ok(outcome) => {
                if let (Some(slots), Some(slot)) = (&self.slots, slot) {
                    slots.succeeded(slot);
                }
                if cacheable && remote {
                    self.deny_cache
                        .insert_unless_reset(&base, spec.limits, &outcome, generation);
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
        if err.is_transient() || err.refusal().is_some() {
            // The probe proves a limiter call passes again with a write of its own.
            self.breaker.probe_writes_to(|| {
                self.keys
                    .limit_base(Algorithm::FixedWindow, PROBE_RULE, "probe")
            });
        }
        if err.is_transient() || err.refusal().is_some() {
            // Redis is slow or away, or refuses every call until an operator
            // acts (OOM, ACL): asking it per request would only add a round
            // trip and a log line each. On a Cluster that is one master's
            // state (OOM on one of them): only its slots open.
            match (&self.slots, slot) {
                (Some(slots), Some(slot)) => slots.trip(slot, err),
                _ => self.breaker.trip(err),
            }
        } else {
            // Redis answered with an error about this call (a script bug):
            // this call only, logged at most every few seconds with a count.
            self.breaker.call_failed(rule, err)
        }
    }

    fn fallback(&self, spec: &LimitSpec<'_>, call: Call<'_>) -> Outcome {
        self.fallback_all(&[spec], &[(call, true)]).remove(0)
    }

    /// `on_redis_error` for each call of a request, all or nothing as the
    /// store would have been: a deciding rule set to `deny` refuses the
    /// request, and then the `local` ones are only peeked.
    fn fallback_all(&self, specs: &[&LimitSpec<'_>], calls: &[(Call<'_>, bool)]) -> Vec<Outcome> {
        let denied = specs
            .iter()
            .zip(calls)
            .any(|(s, (_, decides))| *decides && s.on_redis_error == OnRedisError::Deny);
        let replicas = self.fallback_divisor();
        // This replica's share of each `local` rule's limits.
        let shares: Vec<Vec<Rate>> = specs
            .iter()
            .map(|s| match s.on_redis_error {
                OnRedisError::Local => s
                    .limits
                    .iter()
                    .map(|r| Rate {
                        limit: fleet::share(r.limit, replicas),
                        period_ms: r.period_ms,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let local: Vec<(Call<'_>, bool)> = calls
            .iter()
            .zip(&shares)
            .zip(specs)
            .filter(|(_, s)| s.on_redis_error == OnRedisError::Local)
            .map(|(((call, decides), share), _)| {
                let call = Call {
                    limits: share,
                    burst: call.burst.map(|b| (b / replicas).max(1)),
                    charge: call.charge,
                    cost: if denied { 0 } else { call.cost },
                    ..*call
                };
                (call, *decides)
            })
            .collect();
        let mut local = self.fallback.check_all(&local).into_iter();
        specs
            .iter()
            .map(|s| match s.on_redis_error {
                OnRedisError::Allow => unknown_state(s.limits, true),
                OnRedisError::Deny => unknown_state(s.limits, false),
                OnRedisError::Local => local.next().expect("one outcome per local call"),
            })
            .collect()
    }
}

/// The deny cache tells limits apart, not bursts: an ad-hoc call naming its
/// own burst is always asked of the store. Only single units are cached.
fn cacheable(spec: &LimitSpec<'_>, cost: u64) -> bool {
    cost == 1 && (spec.burst.is_none() || spec.rule != AD_HOC_RULE)
}

/// A request's rules on a Redis Cluster, whose keys lie in different slots
/// (no one script can reach them all): every rule is peeked (cost 0, in
/// parallel); unless every deciding rule has room for its cost, nothing is
/// charged, and only the rules without room are asked with their cost (a
/// denial writes nothing, and tells when it would pass). The guarantee is
/// weaker than one script's: between the peek and the charge (one round
/// trip) another request can take the last unit of one rule; that rule then
/// denies while the others were charged. The README says so.
async fn cluster_together(
    redis: &RedisStore,
    calls: &[(Call<'_>, bool)],
    slots: &[u16],
) -> Result<Vec<Outcome>, (StoreError, Option<u16>)> {
    let at = |i: usize| slots.get(i).copied();
    let peeks = join_all(
        calls
            .iter()
            .map(|(c, _)| redis.check(Call { cost: 0, ..*c })),
    )
    .await;
    let mut peeked = Vec::with_capacity(calls.len());
    for (i, p) in peeks.into_iter().enumerate() {
        peeked.push(p.map_err(|e| (e, at(i)))?);
    }
    let fits =
        |c: &Call<'_>, p: &Outcome| p.allowed && p.limits.iter().all(|l| l.remaining >= c.cost);
    let pass = calls
        .iter()
        .zip(&peeked)
        .all(|((c, decides), p)| !decides || fits(c, p));
    let asked = join_all(calls.iter().zip(&peeked).map(|((c, _), p)| async move {
        match pass || !fits(c, p) {
            true => Some(redis.check(*c).await),
            false => None,
        }
    }))
    .await;
    let mut out = Vec::with_capacity(calls.len());
    for (i, (answer, peek)) in asked.into_iter().zip(peeked).enumerate() {
        out.push(match answer {
            Some(r) => r.map_err(|e| (e, at(i)))?,
            None => peek,
        });
    }
    Ok(out)
}

/// The breaker's probe writes under this rule name: no configured rule can
/// have it (rule names start with a letter), nor a caller's ad-hoc call (`~`).
const PROBE_RULE: &str = "!breaker";

// === impl Limiter: settings a reload applies (caps: `set_caps` above) ===

impl Limiter {
    pub fn set_fallback_replicas(&self, replicas: FallbackReplicas) {
        self.fallback_replicas
            .store(fixed_divisor(Some(replicas)), Ordering::Relaxed);
    }

    /// What each `local` fallback divides a limit by now.
    pub fn fallback_divisor(&self) -> u64 {
        let setting = match self.fallback_replicas.load(Ordering::Relaxed) {
            0 => FallbackReplicas::Auto,
            n => FallbackReplicas::Fixed(n as u32),
        };
        fleet::divisor(setting, self.live_replicas.get())
    }
}

/// `fallback_replicas` as the atomic holds it: 0 for "auto" (and for no
/// Redis, where the fleet is this replica), else the number.
fn fixed_divisor(setting: Option<FallbackReplicas>) -> u64 {
    match setting {
        Some(FallbackReplicas::Fixed(n)) => u64::from(n.max(1)),
        Some(FallbackReplicas::Auto) | None => 0,
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
