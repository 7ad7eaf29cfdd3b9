//! The expiry reaper: every `serve` runs `allow_reap` each
//! `allowlist.reap_interval`, removing due entries with one `expire` event
//! each. Running it on every replica at once is safe (the script is atomic).
//! Nodes do not wait for it: their tables stop matching an entry at its
//! `expires_at` by themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::kind::ListKind;
use super::member::Member;
use super::Allowlist;

/// Reap every `every` until `stop`.
pub async fn run<M: Member>(list: Arc<Allowlist<M>>, every: Duration, stop: CancellationToken) {
    let span = match list.kind() {
        ListKind::Allow => tracing::info_span!("allowlist_reaper"),
        ListKind::Deny => tracing::info_span!("denylist_reaper"),
        ListKind::Override => tracing::info_span!("overrides_reaper"),
    };
    reap_loop(list, every, stop).instrument(span).await
}

async fn reap_loop<M: Member>(list: Arc<Allowlist<M>>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reaped = tokio::select! {
            _ = stop.cancelled() => return,
            r = list.reap() => r,
        };
        match reaped {
            Ok(n) => {
                if failing {
                    tracing::info!("{0} reaper: Redis back", list.kind());
                    failing = false;
                }
                if n > 0 {
                    tracing::debug!(expired = n, "{0} entries expired", list.kind());
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "{0} reaper: Redis unreachable; retrying each interval", list.kind());
                    failing = true;
                }
            }
        }
    }
}
