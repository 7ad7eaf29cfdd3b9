//! Every `serve` follows the allowlist: one atomic snapshot, then `XREAD
//! BLOCK` on the stream from the snapshot's id, on a connection of its own (a
//! blocking read on the limiter's multiplexed connection would stall it).
//! Never a consumer group: every node needs every event.
//!
//! Events apply in `seq` order; a duplicate is ignored. A gap, another epoch,
//! or an event this node cannot read whole means a fresh snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::event::Event;
use super::redis_store::RedisAllowlist;
use super::table::{Applied, Clock, Table};
use super::Allowlist;
use crate::limiter::{classify, StoreError};

/// How long one XREAD waits for events before it is sent again.
const BLOCK: Duration = Duration::from_secs(1);
/// Events read per XREAD; one table is published per batch.
const BATCH: usize = 1000;

/// After two resyncs in a row each this soon after its snapshot, the next waits this long.
const MIN_RESYNC_GAP: Duration = Duration::from_secs(1);

/// Why a follow round ended.
enum End {
    Stopped,
    Resync(String),
}

/// Follow the allowlist in Redis until `stop`; returns at once for the embedded store.
pub async fn run(list: Arc<Allowlist>, stop: CancellationToken) {
    if list.redis().is_none() {
        return;
    }
    follow(list, stop)
        .instrument(tracing::info_span!("allowlist_follower"))
        .await
}

async fn follow(list: Arc<Allowlist>, stop: CancellationToken) {
    let Some(redis) = list.redis() else { return };
    let mut retry = Retry {
        failing: false,
        delay: Duration::from_millis(50),
    };
    let mut quick_resyncs = 0;
    loop {
        let started = Instant::now();
        match round(&list, redis, &stop, &mut retry).await {
            Ok(End::Stopped) => return,
            Ok(End::Resync(why)) => {
                tracing::info!(reason = %why, "allowlist: loading a fresh snapshot");
                // Resyncs are rare; a stream that keeps asking for them right
                // after each snapshot (a hand-written event) gets one a second.
                let quick = started.elapsed() < MIN_RESYNC_GAP;
                quick_resyncs = if quick { quick_resyncs + 1 } else { 0 };
                if quick_resyncs < 2 {
                    continue;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(MIN_RESYNC_GAP) => {}
                }
                continue;
            }
            Err(e) => {
                if !retry.failing {
                    // The last table keeps serving, and expires entries on time by itself.
                    tracing::warn!(error = %e, "allowlist: Redis unreachable; serving the last known table");
                    retry.failing = true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry.delay) => {}
        }
        retry.delay = (retry.delay * 2).min(Duration::from_secs(2));
    }
}

/// Backoff between failed rounds; the state change is logged once each way.
struct Retry {
    failing: bool,
    delay: Duration,
}

/// Snapshot, publish, then tail until something asks for a resync.
async fn round(
    list: &Allowlist,
    redis: &RedisAllowlist,
    stop: &CancellationToken,
    retry: &mut Retry,
) -> Result<End, StoreError> {
    let mut conn = tokio::select! {
        _ = stop.cancelled() => return Ok(End::Stopped),
        c = connect(redis) => c?,
    };
    let before = Instant::now();
    let snap = tokio::select! {
        _ = stop.cancelled() => return Ok(End::Stopped),
        s = redis.snapshot(&mut conn) => s?,
    };
    let after = Instant::now();
    // Redis read its clock somewhere in between; the midpoint errs by at most half the round trip.
    let clock = Clock::synced(snap.now_ms, before + (after - before) / 2);
    let mut table = Table::from_entries(snap.epoch.clone(), snap.seq, clock, &snap.entries);
    list.publish(&table);
    list.mark_synced();
    if retry.failing {
        tracing::info!("allowlist: Redis back");
    }
    *retry = Retry {
        failing: false,
        delay: Duration::from_millis(50),
    };
    tracing::info!(
        entries = table.len(),
        seq = snap.seq,
        epoch = %snap.epoch,
        "allowlist snapshot loaded"
    );

    let key = redis.keys().events.clone();
    let mut last_id = snap.last_id;
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last_id);
        let read = xread.query_async::<Option<StreamReadReply>>(&mut conn);
        let reply = tokio::select! {
            _ = stop.cancelled() => return Ok(End::Stopped),
            r = read => r.map_err(classify)?,
        };
        // None: nothing within BLOCK. (Checking meta for lost events is the next step.)
        let Some(reply) = reply else { continue };
        let mut changed = false;
        let mut end = None;
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            last_id = entry.id;
            let outcome = match Event::from_fields(&entry.map) {
                Ok(ev) => table.apply(&ev),
                Err(e) => {
                    end = Some(format!("unreadable event {last_id}: {e}"));
                    break;
                }
            };
            match outcome {
                Applied::Applied => changed = true,
                Applied::Duplicate => {}
                Applied::Resync(why) => {
                    end = Some(format!("event {last_id}: {why}"));
                    break;
                }
            }
        }
        if changed {
            list.publish(&table);
        }
        if let Some(why) = end {
            return Ok(End::Resync(why));
        }
    }
}

/// The follower's own connection. Its response timeout outlasts BLOCK.
async fn connect(redis: &RedisAllowlist) -> Result<MultiplexedConnection, StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
    redis
        .client()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(classify)
}
