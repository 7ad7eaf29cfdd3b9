//! When an entry stops matching. Below `event`, `family` and `table`, which
//! all speak of it, so none of them has to name another for it.

/// When an entry stops matching: ms since the Unix epoch, Redis time; 0 never.
pub type ExpiresAt = u64;

/// Whether an entry with this expiry still matches at `now_ms`.
pub fn live(expires_at: ExpiresAt, now_ms: u64) -> bool {
    expires_at == 0 || now_ms < expires_at
}
