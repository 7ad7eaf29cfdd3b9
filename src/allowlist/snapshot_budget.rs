//! The fleet's budget of snapshot pages, kept in Redis
//! (`lua/allow_snapshot_take.lua`, key `<prefix>:{<prefix>:allow}:snapshot_budget`).
//!
//! Each node already pages at most `allowlist.snapshot_pages_per_second`, but
//! a fleet told to resync at once (a restore, an epoch change, a rolling
//! restart of every node) multiplies that by its size: 8 nodes at 200 pages a
//! second keep ~45 % of a Redis core busy with HSCAN (bench/README). Before
//! each page a node takes one from a budget all nodes share, so the fleet
//! together asks for at most `allowlist.snapshot_fleet_pages_per_second`,
//! whatever its size; a denied node waits for the window's end (plus a little
//! jitter, so the denied do not all ask again at the same instant).

use std::sync::OnceLock;
use std::time::Duration;

use rand::Rng;
use redis::aio::ConnectionLike;
use redis::Script;

use super::redis_store::RedisAllowlist;
use crate::redis_conn::StoreError;

/// A rate of pages as the script counts it: `pages` per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageBudget {
    pub pages: u32,
    pub window: Duration,
}

impl PageBudget {
    /// `per_second` (≥ 1) as a fixed window: about 100 ms windows of a tenth
    /// of it (short, so the pages of a window are never a long burst), or for
    /// fewer than 10 a second one page per `1 s / per_second`. The window is
    /// rounded up to whole ms, so the rate is never exceeded.
    pub fn per_second(per_second: u32) -> PageBudget {
        let per_second = per_second.max(1);
        let pages = (per_second / 10).max(1);
        let ms = (u64::from(pages) * 1000).div_ceil(u64::from(per_second));
        PageBudget {
            pages,
            window: Duration::from_millis(ms),
        }
    }

    /// How long a node told to wait `wait` sleeps before asking again: the
    /// wait (never more than a window: a reply out of bounds is not trusted)
    /// and up to a quarter window more, at random.
    pub fn retry_after(&self, wait: Duration) -> Duration {
        let jitter = (self.window / 4).mul_f64(rand::rng().random_range(0.0..=1.0));
        wait.clamp(Duration::from_millis(1), self.window) + jitter
    }
}

fn script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("../../lua/allow_snapshot_take.lua")))
}

impl<M: super::member::Member> RedisAllowlist<M> {
    /// Take one snapshot page from the fleet's budget: `None`, page now;
    /// `Some(wait)`, the budget of this window is spent: ask again after `wait`.
    pub async fn take_snapshot_page<C: ConnectionLike>(
        &self,
        conn: &mut C,
        budget: PageBudget,
    ) -> Result<Option<Duration>, StoreError> {
        let mut inv = script().prepare_invoke();
        inv.key(&self.keys().snapshot_budget)
            .arg(budget.pages)
            .arg(budget.window.as_millis() as u64);
        let wait_ms: u64 = inv.invoke_async(conn).await.map_err(StoreError::from)?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_100_ms_windows_of_a_tenth_or_one_page_per_window_below_10_a_second() {
        let ms = Duration::from_millis;
        let b = |n| {
            let b = PageBudget::per_second(n);
            (b.pages, b.window)
        };
        assert_eq!(b(400), (40, ms(100)));
        assert_eq!(b(10), (1, ms(100)));
        assert_eq!(b(1000), (100, ms(100)));
        // Not a multiple of 10: the window grows so the rate holds.
        assert_eq!(b(15), (1, ms(67)));
        assert_eq!(b(405), (40, ms(99)));
        // Under 10 a second: one page per window.
        assert_eq!(b(4), (1, ms(250)));
        assert_eq!(b(1), (1, ms(1000)));
        assert_eq!(
            b(0),
            (1, ms(1000)),
            "0 is refused by validation; never a panic"
        );
        for n in [1, 3, 7, 15, 99, 333, 405, 1234, 100_000] {
            let (pages, window) = b(n);
            let rate = f64::from(pages) / window.as_secs_f64();
            assert!(rate <= f64::from(n) + 1e-9, "{n}: {pages} per {window:?}");
        }
    }

    #[test]
    fn a_denied_node_waits_the_window_out_plus_at_most_a_quarter_window() {
        let b = PageBudget::per_second(400);
        let ms = Duration::from_millis;
        for _ in 0..100 {
            let w = b.retry_after(ms(70));
            assert!(w >= ms(70) && w <= ms(95), "{w:?}");
            // A reply beyond the window (a hand-edited TTL) is capped.
            assert!(b.retry_after(ms(60_000)) <= ms(125));
        }
    }
}
