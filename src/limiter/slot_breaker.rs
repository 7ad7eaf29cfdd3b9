//! Circuit breaking per cluster slot. In a Redis Cluster one master can be
//! down while the others answer: only the keys of its slots should take their
//! rule's `on_redis_error`. A slot that failed is skipped for a second, then
//! one call tries it again (half-open); success closes it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::redis_conn::StoreError;

pub const SLOTS: usize = 16384;
/// How long a failed slot is skipped before one call tries it again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct SlotBreaker {
    /// Per slot: 0 closed; else ms (since `origin`) from which one call may try again.
    retry_at: Box<[AtomicU64]>,
    open: AtomicUsize,
    origin: Instant,
    /// `tollgate_redis_open_slots`.
    gauge: Gauge,
}

impl SlotBreaker {
    pub fn new(gauge: Gauge) -> Self {
        SlotBreaker {
            retry_at: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            open: AtomicUsize::new(0),
            origin: Instant::now(),
            gauge,
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

    pub fn trip(&self, slot: u16, cause: &StoreError) {
        let next = self.now_ms() + RETRY_AFTER.as_millis() as u64;
        if self.retry_at[slot as usize].swap(next, Ordering::AcqRel) == 0 {
            let before = self.open.fetch_add(1, Ordering::AcqRel);
            self.gauge.set((before + 1) as i64);
            if before == 0 {
                tracing::warn!(error = %cause, slot, "Redis Cluster partly unreachable: keys of failing slots apply their on_redis_error");
            }
        }
    }

    pub fn succeeded(&self, slot: u16) {
        let cell = &self.retry_at[slot as usize];
        if cell.load(Ordering::Relaxed) != 0 && cell.swap(0, Ordering::AcqRel) != 0 {
            let left = self.open.fetch_sub(1, Ordering::AcqRel) - 1;
            self.gauge.set(left as i64);
            if left == 0 {
                tracing::info!("Redis Cluster: every slot answers again");
            }
        }
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
    fn a_tripped_slot_is_skipped_then_tried_once() {
        let b = SlotBreaker::new(Gauge::default());
        assert!(!b.should_skip(7));
        b.trip(7, &StoreError::NotConnected);
        assert!(b.should_skip(7));
        assert!(!b.should_skip(8), "other slots are untouched");
        b.succeeded(7);
        assert!(!b.should_skip(7));
    }
}
