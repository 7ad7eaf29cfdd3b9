//! Circuit breaking per cluster slot. In a Redis Cluster one master can be
//! down, or refusing calls (OOM on that master only), while the others
//! answer: only the keys of its slots should take their rule's
//! `on_redis_error`. A slot that failed is skipped for a second, then one call
//! tries it again (half-open); success closes it.
//!
//! Each slot remembers why it is open: away (down, failing over, slow) or a
//! `Refusal` class. Each cause logs one line when its first slot opens and one
//! when its last slot closes; `tollgate_redis_open_slots` counts every open
//! slot and `tollgate_redis_refusing_slots{class}` those refused per class.
//! A refusal that holds for the whole cluster (an ACL change on every node)
//! costs one failed call per slot per second, not one per request.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::ClassLabels;
use crate::redis_conn::{Refusal, StoreError};

pub const SLOTS: usize = 16384;
/// How long a failed slot is skipped before one call tries it again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Why a slot is open: `AWAY`, or `1 + i` for `Refusal::ALL[i]`.
const AWAY: u8 = 0;
const CAUSES: usize = 1 + Refusal::ALL.len();

pub struct SlotBreaker {
    /// Per slot: 0 closed; else ms (since `origin`) from which one call may try again.
    retry_at: Box<[AtomicU64]>,
    /// Per slot: why it is open (meaningful while `retry_at` is not 0).
    cause: Box<[AtomicU8]>,
    /// Open slots per cause.
    open: [AtomicUsize; CAUSES],
    origin: Instant,
    /// `tollgate_redis_open_slots`.
    gauge: Gauge,
    /// `tollgate_redis_refusing_slots{class}`.
    refusing: Family<ClassLabels, Gauge>,
    /// Held while a slot opens, closes or changes cause, so the counts match
    /// the slots (`should_skip` only moves an open slot's retry time, unlocked).
    changing: Mutex<()>,
}

fn cause_of(err: &StoreError) -> u8 {
    err.refusal().map_or(AWAY, |r| {
        1 + Refusal::ALL.iter().position(|x| *x == r).unwrap() as u8
    })
}

impl SlotBreaker {
    pub fn new(gauge: Gauge, refusing: Family<ClassLabels, Gauge>) -> Self {
        SlotBreaker {
            retry_at: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            cause: (0..SLOTS).map(|_| AtomicU8::new(AWAY)).collect(),
            open: Default::default(),
            origin: Instant::now(),
            gauge,
            refusing,
            changing: Mutex::new(()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Skip Redis for this slot now? (After the pause, lets one caller through
    /// per second: it moves the retry time on before trying.)
    pub fn should_skip(&self, slot: u16) -> bool {
        let cell = &self.retry_at[slot as usize];
        let at = cell.load(Ordering::Relaxed);
        if at == 0 {
            return false;
        }
        let now = self.now_ms();
        if now < at {
            return true;
        }
        // Half-open: the caller that wins this swap tries Redis; the others wait.
        let next = now + RETRY_AFTER.as_millis() as u64;
        cell.compare_exchange(at, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    }

    /// The refusal classes some slots are open for now (for `/v1/status`).
    pub fn refusing(&self) -> Vec<(Refusal, usize)> {
        Refusal::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, self.open[1 + i].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn trip(&self, slot: u16, cause: &StoreError) {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.now_ms() + RETRY_AFTER.as_millis() as u64;
        let why = cause_of(cause);
        let was_why = self.cause[slot as usize].swap(why, Ordering::AcqRel);
        if self.retry_at[slot as usize].swap(next, Ordering::AcqRel) == 0 {
            self.opened(why, cause);
        } else if was_why != why {
            // Open already, now for another reason (the master went from OOM to down).
            self.closed(was_why);
            self.opened(why, cause);
        }
    }

    pub fn succeeded(&self, slot: u16) {
        let cell = &self.retry_at[slot as usize];
        if cell.load(Ordering::Relaxed) == 0 {
            return; // the hot path: a closed slot
        }
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        if cell.swap(0, Ordering::AcqRel) != 0 {
            self.closed(self.cause[slot as usize].load(Ordering::Acquire));
        }
    }

    fn total(&self) -> usize {
        self.open.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    fn opened(&self, why: u8, cause: &StoreError) {
        let before = self.open[why as usize].fetch_add(1, Ordering::AcqRel);
        self.gauge.set(self.total() as i64);
        if let Some(refusal) = (why as usize).checked_sub(1).map(|i| Refusal::ALL[i]) {
            self.class_gauge(refusal).inc();
            if before == 0 {
                tracing::error!(class = refusal.label(), error = %cause, "Redis Cluster: a master refuses limiter calls until an operator acts: keys of its slots apply their on_redis_error");
            }
        } else if before == 0 {
            tracing::warn!(error = %cause, "Redis Cluster partly unreachable: keys of failing slots apply their on_redis_error");
        }
    }

    fn closed(&self, why: u8) {
        let left = self.open[why as usize].fetch_sub(1, Ordering::AcqRel) - 1;
        self.gauge.set(self.total() as i64);
        if let Some(refusal) = (why as usize).checked_sub(1).map(|i| Refusal::ALL[i]) {
            self.class_gauge(refusal).dec();
            if left == 0 {
                tracing::info!(
                    class = refusal.label(),
                    "Redis Cluster: no master refuses limiter calls with this class any more"
                );
            }
        } else if left == 0 {
            tracing::info!("Redis Cluster: every slot answers again");
        }
    }

    fn class_gauge(&self, refusal: Refusal) -> Gauge {
        self.refusing
            .get_or_create(&ClassLabels {
                class: refusal.label(),
            })
            .clone()
    }
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, when non-empty), else of the whole key.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(
            slot("tg:rl:{login|1.2.3.4}:fw:60000"),
            slot("login|1.2.3.4")
        );
        // An empty tag hashes the whole key (not the empty tag, whose slot is 0),
        // and only the first `{` counts: `a{}b{c}` is not tagged `c`.
        assert_eq!(slot("a{}b"), 13694, "an empty tag hashes the whole key");
        assert_eq!(
            slot("a{}b"),
            crc16::State::<crc16::XMODEM>::calculate(b"a{}b") % 16384
        );
        assert_ne!(slot("a{}b"), slot(""), "not the empty tag's slot");
        assert_eq!(slot("a{}b{c}"), 7353, "only the first tag counts");
    }

    #[test]
    fn a_refused_slot_counts_under_its_class_until_it_answers() {
        let (open, refusing) = (Gauge::default(), Family::<ClassLabels, Gauge>::default());
        let b = SlotBreaker::new(open.clone(), refusing.clone());
        let oom = || refusing.get_or_create(&ClassLabels { class: "oom" }).get();
        b.trip(7, &StoreError::refused_for_test("OOM"));
        b.trip(8, &StoreError::refused_for_test("OOM"));
        b.trip(9, &StoreError::NotConnected);
        assert!(b.should_skip(7) && b.should_skip(9));
        assert_eq!((open.get(), oom()), (3, 2));
        assert_eq!(b.refusing(), [(Refusal::OutOfMemory, 2)]);
        // Tripped again for the same cause: counted once.
        b.trip(7, &StoreError::refused_for_test("OOM"));
        assert_eq!((open.get(), oom()), (3, 2));
        // The master of slot 8 went from OOM to down: moves to "away".
        b.trip(8, &StoreError::NotConnected);
        assert_eq!((open.get(), oom()), (3, 1));
        b.succeeded(7);
        b.succeeded(8);
        b.succeeded(9);
        assert_eq!((open.get(), oom()), (0, 0));
        assert!(b.refusing().is_empty());
    }

    #[test]
    fn a_tripped_slot_is_skipped_then_tried_once() {
        let b = SlotBreaker::new(Gauge::default(), Family::default());
        assert!(!b.should_skip(7));
        b.trip(7, &StoreError::NotConnected);
        assert!(b.should_skip(7));
        assert!(!b.should_skip(8), "other slots are untouched");
        b.succeeded(7);
        assert!(!b.should_skip(7));
    }
}
