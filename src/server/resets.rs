//! The reset channel: a reset made on any replica (`DELETE /v1/limits/…`,
//! `tollgate limits reset`) is published on Redis pub/sub and clears that key
//! from every replica's deny cache.
//!
//! A missed reset would leave a client denied from memory until its old
//! `retry_after`, so the deny cache is only used while the subscription is
//! known to be live:
//!
//! - it is off (and empty) until the first subscription, and after any loss;
//! - the subscription is proven by a PING every [`PING_EVERY`]; no answer
//!   within [`PING_TIMEOUT`] (a half-open socket, a stalled node) counts as a
//!   loss, like the connection closing;
//! - each (re)subscribe picks the next node of the endpoint (a Cluster's
//!   seeds in turn; a Sentinel's current master), so one dead node does not
//!   keep the channel down; in a Cluster, PUBLISH reaches every node.
//!
//! Losing and regaining the channel is logged once each way and shown by the
//! `tollgate_reset_channel_up` gauge.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// How often a live subscription is proven.
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a PING (and a subscribe) may take before the channel counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Resubscribe backoff: doubling from the first to the last.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Follow the reset channel until `stop`; returns at once without Redis.
pub async fn follow(app: Arc<App>, stop: CancellationToken) {
    let Some(redis) = &app.config.redis else {
        return;
    };
    let channel = app.keys.reset_channel();
    let mut delay = RETRY_MIN;
    let mut lost_logged = false;
    for attempt in 0usize.. {
        let subscribed = async {
            // Resolved on every attempt: the next seed, or the Sentinel's current master.
            let client = redis.endpoint.subscribe_client(attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(PING_TIMEOUT, subscribed) => r,
        };
        let why = match result {
            Ok(Ok(pubsub)) => {
                // Resets published while no subscription was live are unknown: start empty.
                app.limiter.deny_cache.clear();
                app.limiter.deny_cache.set_live(true);
                app.metrics.reset_channel_up.set(1);
                if lost_logged {
                    tracing::info!("reset channel subscribed again: the deny cache is back in use");
                    lost_logged = false;
                }
                delay = RETRY_MIN;
                let why = listen(&app, pubsub, &stop).await;
                app.limiter.deny_cache.set_live(false);
                app.limiter.deny_cache.clear();
                app.metrics.reset_channel_up.set(0);
                match why {
                    Some(why) => why,
                    None => return,
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PING_TIMEOUT:?}"),
        };
        if !lost_logged {
            tracing::warn!(reason = %why, "reset channel down: denials are not cached until it is back (resets could be missed)");
            lost_logged = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// Apply resets until the subscription is lost (`Some(why)`) or `stop` (`None`).
async fn listen(app: &App, pubsub: redis::aio::PubSub, stop: &CancellationToken) -> Option<String> {
    let (mut sink, mut messages) = pubsub.split();
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            msg = messages.next() => match msg {
                Some(msg) => {
                    if let Ok(base) = msg.get_payload::<String>() {
                        app.limiter.deny_cache.remove(&base);
                        app.limiter.leases.forget(&base);
                    }
                }
                None => return Some("connection closed".into()),
            },
            _ = tick.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(format!("PING failed: {e}")),
                    Err(_) => return Some(format!("PING not answered within {PING_TIMEOUT:?}")),
                }
            }
        }
    }
}
