//! Activity counters beside the limiter: who is online (heartbeats), how many
//! clients were active over N days, and what a tracked rule's clients visit.
//!
//! - `recorder`: the in-memory counters a decision or a heartbeat touches
//!   (no await, no Redis: a decision never waits for activity);
//! - `flush`: once a second, one pipelined call moves them to Redis
//!   (`ZADD`/`PFADD`/`EXPIRE`, and `lua/activity_track.lua` per tracked
//!   rule-hour, which enforces `track_paths` across every replica);
//! - `query`: the reads behind `/v1/activity/*` and `tollgate activity`.
//!
//! Everything lives in Redis, keyed by `keys::ActivityKeys`; retention is the
//! keys' TTLs. With the embedded store there is nothing to share between
//! replicas, so activity is refused (config check, 503 from the endpoints).
//! Times are the replica's own clock (hours and UTC days since the epoch).

pub mod flush;
pub mod query;
pub mod recorder;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::ActivityConfig;
use crate::keys::ActivityKeys;
use crate::metrics::KindLabels;
use crate::redis_conn::StoreError;
use crate::redis_conn::{Endpoint, RedisConn, SharedConn};

pub use recorder::{Recorder, OTHER};

/// HyperLogLog's standard error in Redis (12 KB registers): 1.04 / sqrt(16384).
pub const HLL_STANDARD_ERROR: f64 = 0.0081;
/// Longest heartbeat `id`, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Reads and flushes are not on the request path: allow them time.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Default `track_paths` (written once, in the config layer below).
pub use crate::config::DEFAULT_TRACK_PATHS;

pub const MS_PER_HOUR: u64 = 3_600_000;
pub const MS_PER_DAY: u64 = 86_400_000;

/// The activity metrics (`tollgate_activity_*`).
#[derive(Clone, Default)]
pub struct ActivityMetrics {
    pub flush_failures: Counter,
    /// Counts dropped: `requests` and `heartbeats` of failed flushes, and
    /// `heartbeats` past the per-second bound.
    pub lost: Family<KindLabels, Counter>,
    pub flush_up: Gauge,
    /// Paths of tracked rules counted under `other` (the `track_paths` bound).
    pub folded_paths: Counter,
}

impl ActivityMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "activity_flush_failures",
            "Activity flushes to Redis that failed (their second's counts are lost)",
            self.flush_failures.clone(),
        );
        registry.register(
            "activity_lost",
            "Activity counts lost, by kind (requests, heartbeats)",
            self.lost.clone(),
        );
        registry.register(
            "activity_flush_up",
            "1 while activity flushes reach Redis, 0 after a failed one",
            self.flush_up.clone(),
        );
        registry.register(
            "activity_folded_paths",
            "Paths of tracked rules counted under \"other\" (track_paths reached this hour)",
            self.folded_paths.clone(),
        );
        self.flush_up.set(1);
    }

    fn lose(&self, kind: &'static str, n: u64) {
        if n > 0 {
            self.lost.get_or_create(&KindLabels { kind }).inc_by(n);
        }
    }
}

/// The activity counters of one replica.
pub struct Activity {
    /// `[activity]`; a reload swaps it (`set_config`).
    pub config: ArcSwap<ActivityConfig>,
    pub keys: ActivityKeys,
    pub recorder: Recorder,
    pub metrics: ActivityMetrics,
    /// Shared by the flush task and the reads, made on first use, forgotten
    /// after a failure. `None`: the embedded store (activity refused).
    conn: Option<SharedConn>,
}

/// The answer when there is no Redis.
pub const NEEDS_REDIS: &str = "activity counters live in Redis: this server runs the embedded store (set [redis] url, --redis or TOLLGATE_REDIS_URL)";

impl Activity {
    pub fn new(
        config: ActivityConfig,
        keys: ActivityKeys,
        endpoint: Option<Endpoint>,
        registry: &mut Registry,
    ) -> Activity {
        let metrics = ActivityMetrics::default();
        metrics.register(registry);
        Activity {
            recorder: Recorder::new(config.max_online),
            config: ArcSwap::from_pointee(config),
            keys,
            metrics,
            conn: endpoint.map(|e| SharedConn::new(e, CALL_TIMEOUT)),
        }
    }

    /// A reload's new `[activity]`: the next flush and queries use it.
    pub fn set_config(&self, config: ActivityConfig) {
        self.recorder.set_max_online(config.max_online);
        self.config.store(Arc::new(config));
    }

    pub fn enabled(&self) -> bool {
        self.conn.is_some()
    }

    /// A decision `rule` limited for `key` (who is hurting): counted in
    /// memory, flushed within a second. Nothing without Redis.
    #[inline]
    pub fn limited(&self, rule: &str, key: &str) {
        if self.enabled() && !self.recorder.limited(rule, key) {
            self.metrics.lose("limited", 1);
        }
    }

    /// A request a tracked rule matched: counted in memory, flushed within a second.
    #[inline]
    pub fn request(&self, rule: &str, path: &str, client: IpAddr) {
        let hour = now_ms() / MS_PER_HOUR;
        if !self.recorder.request(rule, hour, path, client) {
            self.metrics.lose("requests", 1);
        }
    }

    /// A heartbeat from `member` (`ip:…` or `id:…`).
    pub fn heartbeat(&self, member: &str) {
        if !self.recorder.heartbeat(member, now_ms()) {
            self.metrics.lose("heartbeats", 1);
        }
    }

    /// The shared connection (made now if needed).
    pub async fn conn(&self) -> Result<RedisConn, StoreError> {
        match &self.conn {
            Some(shared) => shared.get().await,
            None => Err(StoreError::Unsupported(NEEDS_REDIS)),
        }
    }

    /// After a failed call: the next one connects afresh (a Sentinel's new master).
    pub fn forget_connection(&self) {
        if let Some(shared) = &self.conn {
            shared.forget();
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.endpoint().is_cluster())
    }
}

/// Milliseconds since the Unix epoch, by this replica's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A UTC day (days since the epoch) as `yyyymmdd`, the form its key carries.
pub fn day_number(days_since_epoch: u64) -> u32 {
    let (y, m, d) = civil_from_days(days_since_epoch as i64);
    (y as u32) * 10_000 + m * 100 + d
}

/// `yyyy-mm-dd` of a day since the epoch.
pub fn day_text(days_since_epoch: u64) -> String {
    let (y, m, d) = civil_from_days(days_since_epoch as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `yyyy-mm-ddThh:00:00Z` of an hour since the epoch.
pub fn hour_text(hour: u64) -> String {
    format!("{}T{:02}:00:00Z", day_text(hour / 24), hour % 24)
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_hours_are_named_in_utc() {
        assert_eq!(day_number(0), 19700101);
        assert_eq!(day_text(20_420), "2025-11-28");
        assert_eq!(day_number(11_016), 20000229);
        assert_eq!(hour_text(20_420 * 24 + 13), "2025-11-28T13:00:00Z");
    }
}
