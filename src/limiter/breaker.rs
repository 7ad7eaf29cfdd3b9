//! Circuit breaker in front of Redis. After a transient failure (timeout,
//! connection lost, READONLY after a failover, BUSY while a script elsewhere
//! runs) requests stop waiting on Redis: they go straight to their rule's
//! `on_redis_error`, so a decision during an outage costs no more than a
//! local one. A single background probe retries Redis with exponential backoff
//! and jitter, and closes the breaker once Redis answers and the scripts are
//! loaded again.
//!
//! States, each change logged once:
//! - `CLOSED`: calls go to Redis.
//! - `AWAY`: Redis is slow, away, or answers with an error that passes by
//!   itself. "Redis unreachable" on entering, "Redis back" on leaving.
//! - `REFUSING`: Redis answers every call with an error only an operator can
//!   fix (OOM, WRONGPASS, NOPERM, MISCONF: `Refusal`). Asking it per request
//!   would cost each one a round trip and a log line, so this is an open
//!   breaker too: one error line on entering, naming the class and Redis's
//!   message, one on leaving, and `tollgate_redis_refusing{class}` 1 between.
//!
//! The probe must prove that a limiter call would succeed, not only that Redis
//! answers: SCRIPT LOAD passes on a replica, under OOM and for an ACL user who
//! may not run EVALSHA. Once a call has failed, the probe also runs the
//! fixed_window script on a key of its own (`probe_base`), a real write.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Algorithm, Call, RedisStore};
use crate::metrics::ClassLabels;
use crate::rate::Rate;
use crate::redis_conn::{ErrorKind, Refusal, StoreError};

/// First retry after this long; doubled up to `PROBE_MAX`.
const PROBE_MIN: Duration = Duration::from_millis(50);
/// Kept under a second (with jitter) so decisions are back on Redis within
/// about a second of its return.
const PROBE_MAX: Duration = Duration::from_secs(1);
/// While closed, a `PING` on the limiter's connection this often, so that
/// Redis going away is seen (`tollgate_redis_up`, `/v1/status`, `/readyz`, the
/// page) without traffic to notice it. Not on a Cluster: PING goes to every
/// master there and one down master is the slots' business, not all of Redis's.
pub const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// The health PING's bound: a busy Redis that answers a PING in under a second
/// is not away (decisions keep their own `redis.timeout`).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// A call-only error (a script bug) is logged at most once per this long,
/// with the count of the calls it stands for.
const CALL_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

const CLOSED: u8 = 0;
const AWAY: u8 = 1;
/// `REFUSING + i`: refusing with `Refusal::ALL[i]`.
const REFUSING: u8 = 2;

pub struct Breaker {
    state: AtomicU8,
    wake: Notify,
    /// `tollgate_redis_up`.
    up: Gauge,
    /// `tollgate_redis_refusing{class}`.
    refusing: Family<ClassLabels, Gauge>,
    /// The key base the probe writes to, set when a call first fails (the
    /// limiter knows the prefix; the first probe at start only loads scripts).
    probe_base: OnceLock<String>,
    /// Call-only errors: when the last line was logged, and the calls since.
    call_errors: Mutex<Option<Instant>>,
    call_errors_unlogged: AtomicU64,
}

impl Breaker {
    /// Starts open: nothing is sent to Redis until the probe has loaded the scripts.
    pub fn new(up: Gauge, refusing: Family<ClassLabels, Gauge>) -> Self {
        Breaker {
            state: AtomicU8::new(AWAY),
            wake: Notify::new(),
            up,
            refusing,
            probe_base: OnceLock::new(),
            call_errors: Mutex::new(None),
            call_errors_unlogged: AtomicU64::new(0),
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Relaxed) != CLOSED
    }

    /// What Redis refuses calls with now, if the breaker is open for that.
    pub fn refusing(&self) -> Option<Refusal> {
        let s = self.state.load(Ordering::Relaxed);
        s.checked_sub(REFUSING).map(|i| Refusal::ALL[i as usize])
    }

    /// The probe's write goes to this key base (the first one given stays).
    pub fn probe_writes_to(&self, base: impl FnOnce() -> String) {
        self.probe_base.get_or_init(base);
    }

    /// A call failed in a way that says Redis is away: open, log once, wake the probe.
    pub fn trip(&self, cause: &StoreError) {
        if let Some(refusal) = cause.refusal() {
            return self.refuse(refusal, cause);
        }
        if self
            .state
            .compare_exchange(CLOSED, AWAY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.up.set(0);
            tracing::warn!(error = %cause, "Redis unreachable: rules apply their on_redis_error until it answers again");
            self.wake.notify_one();
        }
    }

    /// Redis refuses calls until an operator acts: open (from any state),
    /// log once per class entered, wake the probe.
    fn refuse(&self, refusal: Refusal, cause: &StoreError) {
        let new = REFUSING + Refusal::ALL.iter().position(|r| *r == refusal).unwrap() as u8;
        let old = self.state.swap(new, Ordering::AcqRel);
        if old == new {
            return;
        }
        self.up.set(0);
        if let Some(was) = old.checked_sub(REFUSING) {
            self.class_gauge(Refusal::ALL[was as usize]).set(0);
        }
        self.class_gauge(refusal).set(1);
        tracing::error!(class = refusal.label(), error = %cause, "Redis refuses limiter calls until an operator acts: rules apply their on_redis_error; the probe retries a write every second");
        if old == CLOSED {
            self.wake.notify_one();
        }
    }

    fn class_gauge(&self, refusal: Refusal) -> Gauge {
        self.refusing
            .get_or_create(&ClassLabels {
                class: refusal.label(),
            })
            .clone()
    }

    fn close(&self, first: bool) {
        let old = self.state.swap(CLOSED, Ordering::AcqRel);
        if old == CLOSED {
            return;
        }
        self.up.set(1);
        if let Some(was) = old.checked_sub(REFUSING) {
            let refusal = Refusal::ALL[was as usize];
            self.class_gauge(refusal).set(0);
            tracing::info!(
                class = refusal.label(),
                "Redis accepts limiter calls again: decisions use Redis again"
            );
        } else if first {
            tracing::info!("Redis answered and the limiter scripts are loaded");
        } else {
            tracing::info!("Redis back: decisions use Redis again");
        }
    }

    /// Redis answered one call with an error about that call (a script bug):
    /// the breaker stays closed, and the log gets one line per
    /// `CALL_ERROR_LOG_EVERY` with the number of calls it stands for.
    pub fn call_failed(&self, rule: &str, err: &StoreError) {
        let mut last = self.call_errors.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < CALL_ERROR_LOG_EVERY) {
            self.call_errors_unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let since = self.call_errors_unlogged.swap(0, Ordering::Relaxed);
        tracing::error!(rule, error = %err, more_calls_since_last_line = since, "Redis refused a limiter call (logged at most every 10 s)");
    }

    /// Load the scripts, then (once a call has failed) run one on the probe's
    /// own key: Redis answering is not enough, a limiter call must pass.
    async fn try_redis(&self, redis: &RedisStore) -> Result<(), StoreError> {
        redis.load_scripts().await?;
        let Some(base) = self.probe_base.get() else {
            return Ok(());
        };
        // A limit no probe reaches: each probe writes (SET, or INCRBY).
        let limits = [Rate {
            limit: 1 << 40,
            period_ms: 1000,
        }];
        let call = Call {
            algorithm: Algorithm::FixedWindow,
            base,
            limits: &limits,
            cost: 1,
            burst: None,
            charge: true,
        };
        match redis.check(call).await {
            // A script error is the call's, not Redis's state: calls log it.
            Err(e) if e.kind() == ErrorKind::Server => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// The probe: while open, retry Redis with backoff and jitter; close on success.
    /// `on_success` runs after each successful probe (the caller marks readiness).
    pub async fn probe(&self, redis: &RedisStore, stop: &CancellationToken, on_success: impl Fn()) {
        let mut first = true;
        let health = !redis.endpoint().is_cluster();
        loop {
            if !self.is_open() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(HEALTH_EVERY), if health => {
                        if let Err(e) = redis.ping(HEALTH_TIMEOUT).await {
                            // Redis went away with no decision to notice it.
                            self.trip(&e);
                        }
                    }
                }
                continue;
            }
            let mut delay = PROBE_MIN;
            let mut logged = !first;
            loop {
                match self.try_redis(redis).await {
                    Ok(()) => break,
                    // Refused (a password rotated under a reconnect): say so, once.
                    Err(e) if e.refusal().is_some() => {
                        if e.refusal() == Some(Refusal::Auth) {
                            // The next try authenticates on a new connection.
                            redis.forget_connection();
                        }
                        self.trip(&e)
                    }
                    Err(e) if !logged => {
                        // Startup: say once why we are not ready yet.
                        tracing::warn!(error = %e, "Redis unreachable at start: rules apply their on_redis_error until it answers");
                        logged = true;
                    }
                    Err(_) => {}
                }
                // Full jitter in [delay/2, delay]: replicas do not probe in lockstep.
                let sleep = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(sleep) => {}
                }
                delay = (delay * 2).min(PROBE_MAX);
            }
            self.close(first);
            on_success();
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_opens_the_breaker_with_its_class_and_closing_clears_it() {
        let refusing = Family::<ClassLabels, Gauge>::default();
        let b = Breaker::new(Gauge::default(), refusing.clone());
        b.close(true);
        assert!(!b.is_open());
        b.trip(&StoreError::refused_for_test("OOM"));
        assert!(b.is_open());
        assert_eq!(b.refusing(), Some(Refusal::OutOfMemory));
        let oom = ClassLabels { class: "oom" };
        assert_eq!(refusing.get_or_create(&oom).get(), 1);
        // Another class replaces it; an outage meanwhile does not hide it.
        b.trip(&StoreError::refused_for_test("NOPERM"));
        b.trip(&StoreError::NotConnected);
        assert_eq!(b.refusing(), Some(Refusal::NoPermission));
        assert_eq!(refusing.get_or_create(&oom).get(), 0);
        b.close(false);
        assert!(!b.is_open());
        assert_eq!(b.refusing(), None);
        let noperm = ClassLabels { class: "noperm" };
        assert_eq!(refusing.get_or_create(&noperm).get(), 0);
    }
}
