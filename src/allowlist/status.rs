//! How fresh a node's allowlist is, for `/readyz` and `/metrics`.
//!
//! The follower records every contact with Redis, every resync and its
//! reason, and the two degraded states it serves through without wiping its
//! table: Redis unreachable (`stale`) and Redis without allowlist data
//! (`source_lost`). Gauges that depend on the clock (the sync age) are
//! computed when scraped.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

use super::kind::ListKind;
use super::member::Member;
use super::redis_store::Birth;
use super::Allowlist;

/// Why a node loaded a fresh snapshot instead of applying the next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The first load, without a usable state file.
    Start,
    /// Events were missed: a `seq` skipped, or trimmed from the stream.
    Gap,
    /// The dataset has another epoch (restored, or recreated after a loss).
    Epoch,
    /// Redis is behind this node (failover to a lagging replica, AOF loss).
    Backwards,
    /// An event this node cannot read whole (unknown `ver` or `op`).
    UnknownEvent,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Start,
        Reason::Gap,
        Reason::Epoch,
        Reason::Backwards,
        Reason::UnknownEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Gap => "gap",
            Reason::Epoch => "epoch",
            Reason::Backwards => "backwards",
            Reason::UnknownEvent => "unknown_event",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Status {
    /// When this node started following: the sync age before any contact.
    started: Instant,
    /// The last time Redis confirmed this node's position (any reply).
    contact: Mutex<Option<Instant>>,
    /// The follower cannot reach Redis; the table is served as last known.
    unreachable: AtomicBool,
    /// Redis answers but holds no allowlist (`meta` is gone); the table is kept.
    source_lost: AtomicBool,
    /// `meta.seq` minus this node's `seq`, at the last look.
    seq_lag: AtomicU64,
    pub resyncs: Family<ReasonLabels, Counter>,
    /// Time to apply one batch of events or one snapshot.
    pub apply_seconds: Histogram,
    /// `tollgate_list_apply_lag_seconds{list}`: how late this node applied
    /// each event (now minus its stream id's time); one family for every
    /// list, so `App::new` hands each list its labelled histogram.
    apply_lag: std::sync::OnceLock<Histogram>,
    /// Snapshot pages after which the node stepped back because Redis was slow.
    pub snapshot_backoffs: Counter,
    /// Times this node found the fleet's snapshot budget spent and waited.
    pub snapshot_budget_waits: Counter,
    /// Times this node put back an allowlist Redis had lost (`recovery`).
    pub fleet_restores: Counter,
    /// How the epoch of the last snapshot began (`meta.born`, origin).
    birth: Mutex<Birth>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            contact: Mutex::new(None),
            unreachable: AtomicBool::new(false),
            source_lost: AtomicBool::new(false),
            seq_lag: AtomicU64::new(0),
            resyncs: Family::default(),
            // 10 µs .. ~2.5 s: a batch is microseconds, a million-entry snapshot seconds.
            apply_seconds: Histogram::new([
                0.00001, 0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            apply_lag: std::sync::OnceLock::new(),
            snapshot_backoffs: Counter::default(),
            snapshot_budget_waits: Counter::default(),
            fleet_restores: Counter::default(),
            birth: Mutex::default(),
        }
    }
}

impl Status {
    /// The histogram this list's apply lag goes to (set once, by `App::new`).
    pub fn set_apply_lag(&self, h: Histogram) {
        let _ = self.apply_lag.set(h);
    }

    /// An event applied `lag_ms` after Redis stamped it (its stream id),
    /// measured on the table's clock, which follows Redis's time.
    pub(crate) fn applied_late(&self, lag_ms: u64) {
        if let Some(h) = self.apply_lag.get() {
            h.observe(lag_ms as f64 / 1000.0);
        }
    }

    pub(crate) fn contact(&self) {
        *self.contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Time since Redis last confirmed this node's position.
    pub fn sync_age(&self) -> Option<Duration> {
        self.contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// Enter or leave the unreachable state; whether it changed.
    pub(crate) fn set_unreachable(&self, on: bool) -> bool {
        self.unreachable.swap(on, Ordering::Relaxed) != on
    }

    pub fn is_stale(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Enter or leave `source_lost`; whether it changed.
    pub(crate) fn set_source_lost(&self, on: bool) -> bool {
        self.source_lost.swap(on, Ordering::Relaxed) != on
    }

    pub fn is_source_lost(&self) -> bool {
        self.source_lost.load(Ordering::Relaxed)
    }

    /// `meta.seq` minus this node's `seq`, at the last look.
    pub fn seq_lag(&self) -> u64 {
        self.seq_lag.load(Ordering::Relaxed)
    }

    /// Snapshots loaded for `reason` since start.
    pub fn resync_count(&self, reason: Reason) -> u64 {
        self.resyncs
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    pub(crate) fn set_birth(&self, birth: Birth) {
        *self.birth.lock().unwrap_or_else(|p| p.into_inner()) = birth;
    }

    /// How the epoch this node loaded began: `restore`, `clear`, `fleet`
    /// (with its origin), `write`, `new_epoch`; empty before any snapshot.
    pub fn birth(&self) -> Birth {
        self.birth.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_seq_lag(&self, lag: u64) {
        self.seq_lag.store(lag, Ordering::Relaxed);
    }

    pub(crate) fn resynced(&self, reason: Reason) {
        self.resyncs
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// The freshness as one word: `in_process` (embedded store), `stale`
/// (Redis unreachable), `source_lost` (Redis holds no allowlist) or `in_sync`.
pub fn freshness<M: Member>(list: &Allowlist<M>) -> &'static str {
    let status = list.status();
    if list.is_local() {
        "in_process"
    } else if status.is_stale() {
        "stale"
    } else if status.is_source_lost() {
        "source_lost"
    } else {
        "in_sync"
    }
}

/// `/readyz`'s words for the allowlist: `in sync`, `stale (…)` or `source_lost (…)`.
pub fn describe<M: Member>(list: &Allowlist<M>) -> String {
    let status = list.status();
    let table = list.table();
    let age = match status.sync_age() {
        Some(a) => format!("last synced {:.1}s ago", a.as_secs_f64()),
        None => "never synced with Redis".into(),
    };
    let what = format!(
        "{}, epoch {:?}, seq {}",
        crate::plural::count(
            table.live_count(table.clock.now_ms()) as u64,
            "entry",
            "entries"
        ),
        table.epoch,
        table.seq
    );
    let (noun, tag) = (list.kind().noun(), list.kind().tag());
    if list.is_local() {
        format!("{noun} in process ({what})")
    } else if status.is_stale() {
        format!("{noun} stale: Redis unreachable, {age}; serving the last known table ({what})")
    } else if status.is_source_lost() {
        format!("{noun} source_lost: Redis holds no {noun}; serving the last known table ({what}); the fleet puts it back (one node, elected in Redis), or `tollgate {tag} restore FILE` (`tollgate {tag} export --from-node ADMIN_URL` exports a node's table)")
    } else {
        match status.birth().origin {
            Some(o) => format!("{noun} in sync ({what}; restored by {o} after Redis lost it)"),
            None => format!("{noun} in sync ({what})"),
        }
    }
}

/// How the loaded epoch began, for `/v1/status`: `{"how": "fleet",
/// "restored_from": {"node", "epoch", "seq"}}` (`how`: `write`, `new_epoch`,
/// `restore`, `clear`, `fleet`; empty before a snapshot or for an epoch
/// written before this was recorded; `restored_from` only for `fleet`).
pub fn birth_json<M: Member>(list: &Allowlist<M>) -> serde_json::Value {
    let birth = list.status().birth();
    serde_json::json!({
        "how": birth.born,
        "restored_from": birth.origin.map(|o| serde_json::json!({
            "node": o.node, "epoch": o.epoch, "seq": o.seq,
        })),
    })
}

/// Labels of `tollgate_list_apply_lag_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ListLabels {
    pub list: &'static str,
}

/// `tollgate_list_apply_lag_seconds{list}`: one family for every list (a
/// benchmark reads propagation from it on every node; operators alert on it).
pub fn register_apply_lag(lists: &[(ListKind, &Status)], registry: &mut Registry) {
    // 0.5 ms .. 10 s: a followed event lands in milliseconds; a node that
    // was away replays seconds-old ones. The lag is whole milliseconds (a
    // stream id's time and the node's clock are both ms), so a bound at each
    // ms up to 5 counts every value there exactly: p50 and p99 against the
    // 5 ms propagation goal read off the buckets without interpolating
    // inside a 2..5 ms bucket.
    let family = Family::<ListLabels, Histogram, _>::new_with_constructor(|| {
        Histogram::new([
            0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            10.0,
        ])
    });
    for (kind, status) in lists {
        let h = family
            .get_or_create(&ListLabels { list: kind.tag() })
            .clone();
        status.set_apply_lag(h);
    }
    registry.register(
        "list_apply_lag_seconds",
        "How late this node applied each list event it followed: its time (Redis's clock, as the node tracks it) minus the time Redis stamped the event (its stream id)",
        family,
    );
}

/// Registers a list's metrics (`tollgate_allowlist_*`, `tollgate_denylist_*`);
/// gauges are read at each scrape.
pub fn register<M: Member>(list: &Arc<Allowlist<M>>, registry: &mut Registry) {
    let status = list.status();
    let noun = list.kind().noun();
    let name = |n: &str| format!("{noun}_{n}");
    registry.register(
        name("resyncs"),
        "Fresh snapshots loaded, by reason (start, gap, epoch, backwards, unknown_event)",
        status.resyncs.clone(),
    );
    registry.register(
        name("apply_seconds"),
        "Time to apply one batch of allowlist events or one snapshot",
        status.apply_seconds.clone(),
    );
    registry.register(
        name("snapshot_backoffs"),
        "Snapshot pages after which this node paused because the page took over 2 ms (Redis or the node waiting for a CPU)",
        status.snapshot_backoffs.clone(),
    );
    registry.register(
        name("snapshot_budget_waits"),
        "Times this node asked for a snapshot page while the fleet's budget (allowlist.snapshot_fleet_pages_per_second) was spent, and waited for the next window",
        status.snapshot_budget_waits.clone(),
    );
    registry.register(
        name("fleet_restores"),
        "Times this node put back an allowlist that Redis had lost (restarted empty, flushed, failed over), as the one node elected in Redis",
        status.fleet_restores.clone(),
    );
    registry.register_collector(Box::new(Gauges(list.clone())));
}

/// The clock-dependent gauges.
struct Gauges<M: Member>(Arc<Allowlist<M>>);

impl<M: Member> fmt::Debug for Gauges<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("allowlist gauges")
    }
}

impl<M: Member> Collector for Gauges<M> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let list = &self.0;
        let status = list.status();
        let table = list.table();
        let entries = table.live_count(table.clock.now_ms());
        let age = if list.is_local() {
            0.0
        } else {
            // Never synced: as old as the process's wait for Redis.
            status
                .sync_age()
                .unwrap_or_else(|| status.started.elapsed())
                .as_secs_f64()
        };
        let noun = list.kind().noun();
        let name = |n: &str| format!("{noun}_{n}");
        let gauges: [(String, &str, ConstGauge<f64>); 4] = [
            (
                name("entries"),
                "Live entries in this node's table of the list",
                ConstGauge::new(entries as f64),
            ),
            (
                name("seq_lag"),
                "Events Redis has that this node had not applied, at its last look",
                ConstGauge::new(status.seq_lag.load(Ordering::Relaxed) as f64),
            ),
            (
                name("last_sync_age_seconds"),
                "Seconds since Redis last confirmed this node's position in the list",
                ConstGauge::new(age),
            ),
            (
                name("source_lost"),
                "1 while Redis holds none of the list and this node serves its last known table",
                ConstGauge::new(if status.is_source_lost() { 1.0 } else { 0.0 }),
            ),
        ];
        for (name, help, gauge) in gauges {
            let metric = encoder.encode_descriptor(&name, help, None, ConstGauge::<f64>::TYPE)?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
