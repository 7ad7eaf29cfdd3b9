//! Circuit breaker in front of Redis. After a transient failure (timeout,
//! connection lost) requests stop waiting on Redis: they go straight to their
//! rule's `on_redis_error`, so a decision during an outage costs no more than a
//! local one. A single background probe retries Redis with exponential backoff
//! and jitter, and closes the breaker once Redis answers and the scripts are
//! loaded again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use crate::redis_conn::StoreError;

/// First retry after this long; doubled up to `PROBE_MAX`.
const PROBE_MIN: Duration = Duration::from_millis(50);
/// Kept under a second (with jitter) so decisions are back on Redis within
/// about a second of its return.
const PROBE_MAX: Duration = Duration::from_secs(1);

pub struct Breaker {
    open: AtomicBool,
    wake: Notify,
    /// `tollgate_redis_up`.
    up: Gauge,
}

impl Breaker {
    /// Starts open: nothing is sent to Redis until the probe has loaded the scripts.
    pub fn new(up: Gauge) -> Self {
        Breaker {
            open: AtomicBool::new(true),
            wake: Notify::new(),
            up,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// A call failed in a way that says Redis is away: open, log once, wake the probe.
    pub fn trip(&self, cause: &StoreError) {
        if !self.open.swap(true, Ordering::AcqRel) {
            self.up.set(0);
            tracing::warn!(error = %cause, "Redis unreachable: rules apply their on_redis_error until it answers again");
            self.wake.notify_one();
        }
    }

    fn close(&self, first: bool) {
        if self.open.swap(false, Ordering::AcqRel) {
            self.up.set(1);
            if first {
                tracing::info!("Redis answered and the limiter scripts are loaded");
            } else {
                tracing::info!("Redis back: decisions use Redis again");
            }
        }
    }

    /// The probe: while open, retry Redis with backoff and jitter; close on success.
    /// `on_success` runs after each successful probe (the caller marks readiness).
    pub async fn probe(&self, redis: &RedisStore, stop: &CancellationToken, on_success: impl Fn()) {
        let mut first = true;
        loop {
            if !self.is_open() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
                continue;
            }
            let mut delay = PROBE_MIN;
            let mut logged = !first;
            loop {
                match redis.load_scripts().await {
                    Ok(()) => break,
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
