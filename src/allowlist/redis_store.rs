//! The allowlist in Redis: the `lua/allow_*.lua` scripts and the readers of
//! their replies. Writers (admin API, CLI, reaper) share one connection; the
//! follower reads snapshots and tails the stream on its own. Both come from
//! `redis_conn`, so the allowlist works on one server, a Cluster (its keys
//! share one slot) or behind a Sentinel.

use std::sync::OnceLock;
use std::time::Duration;

use ipnet::IpNet;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionLike;
use redis::Script;
use serde::Deserialize;

use super::{new_epoch, Entry, Listing, NewEntry, Stored};
use crate::keys::AllowKeys;
use crate::limiter::{classify, StoreError};
use crate::redis_conn::{Endpoint, RedisConn};

/// Events older than this are trimmed from the stream (7 days): far longer than
/// any restart, so a node that knows its position can always catch up.
pub const EVENT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// And the stream never holds much more than this many events.
pub const EVENT_CAP: u64 = 1_000_000;
/// The reaper expires at most this many entries per script call (it loops).
const REAP_BATCH: u64 = 500;
/// Admin writes are not on the request path: allow them time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A restore stages this many entries per script call.
const RESTORE_CHUNK: usize = 1000;
/// Staged entries of a restore that never finished vanish after this.
const STAGING_TTL_MS: u64 = 3_600_000;

struct Scripts {
    upsert: Script,
    remove: Script,
    reap: Script,
    snapshot: Script,
    restore_stage: Script,
    restore: Script,
}

/// Built once; `Script` computes the SHA1 that EVALSHA uses, and on NOSCRIPT
/// it sends the script once with EVAL.
fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        upsert: Script::new(include_str!("../../lua/allow_upsert.lua")),
        remove: Script::new(include_str!("../../lua/allow_remove.lua")),
        reap: Script::new(include_str!("../../lua/allow_reap.lua")),
        snapshot: Script::new(include_str!("../../lua/allow_snapshot.lua")),
        restore_stage: Script::new(include_str!("../../lua/allow_restore_stage.lua")),
        restore: Script::new(include_str!("../../lua/allow_restore.lua")),
    })
}

/// A consistent view of the allowlist in Redis.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub epoch: String,
    pub seq: u64,
    /// Stream id of the last event; tail from here.
    pub last_id: String,
    /// Redis TIME when it was taken.
    pub now_ms: u64,
    /// Expired-but-unreaped entries included.
    pub entries: Vec<Entry>,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The new dataset's epoch; its `seq` is 1.
    pub epoch: String,
    /// Entries now live.
    pub kept: u64,
    /// Entries that had expired by the switch and were dropped.
    pub dropped: u64,
}

/// An entry's JSON in the `entries` hash. Unknown fields are ignored, so a
/// later version may add some.
#[derive(Deserialize)]
struct StoredJson {
    expires_at: u64,
    note: String,
    created_at: u64,
    actor: String,
}

pub struct RedisAllowlist {
    endpoint: Endpoint,
    /// The writers' shared connection (admin API, CLI, reaper), made on first
    /// use. After a Sentinel failover it is dropped, so the next write asks
    /// the sentinels for the new master.
    conn: ArcSwapOption<RedisConn>,
    keys: AllowKeys,
}

impl RedisAllowlist {
    /// Nothing is dialled until the first call.
    pub fn new(endpoint: Endpoint, keys: AllowKeys) -> Self {
        RedisAllowlist {
            endpoint,
            conn: ArcSwapOption::empty(),
            keys,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn writer(&self) -> Result<RedisConn, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let conn = tokio::time::timeout(WRITE_TIMEOUT, self.endpoint.connect(WRITE_TIMEOUT))
            .await
            .map_err(|_| StoreError::Timeout(WRITE_TIMEOUT))?
            .map_err(classify)?;
        self.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Drop the writers' connection: the next write connects with the
    /// endpoint's current settings (a reload changed credentials or TLS files).
    pub fn forget_connection(&self) {
        self.conn.store(None);
    }

    /// Classify a failed call; when Redis went away behind a Sentinel, forget
    /// the connection so the next call finds the current master.
    fn failed(&self, e: redis::RedisError) -> StoreError {
        let e = classify(e);
        if self.endpoint.is_sentinel()
            && matches!(e, StoreError::Unreachable(_) | StoreError::Timeout(_))
        {
            self.conn.store(None);
        }
        e
    }

    pub fn keys(&self) -> &AllowKeys {
        &self.keys
    }

    fn invocation<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for key in self.keys.all() {
            inv.key(key);
        }
        inv
    }

    pub async fn upsert(&self, new: &NewEntry) -> Result<Stored, StoreError> {
        let mut inv = self.invocation(&scripts().upsert);
        inv.arg(new.cidr.to_string())
            .arg(new.ttl_ms)
            .arg(&new.note)
            .arg(&new.actor)
            .arg(new_epoch())
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP);
        let reply: Vec<String> = inv
            .invoke_async(&mut self.writer().await?)
            .await
            .map_err(|e| self.failed(e))?;
        let [seq, expires_at, created_at, _epoch] = reply.as_slice() else {
            return Err(unexpected("allow_upsert", &reply));
        };
        Ok(Stored {
            entry: Entry {
                cidr: new.cidr,
                expires_at: number(expires_at)?,
                note: new.note.clone(),
                created_at: number(created_at)?,
                actor: new.actor.clone(),
            },
            seq: number(seq)?,
        })
    }

    pub async fn remove(&self, cidr: &IpNet, actor: &str) -> Result<Option<u64>, StoreError> {
        let mut inv = self.invocation(&scripts().remove);
        inv.arg(cidr.to_string())
            .arg(actor)
            .arg(new_epoch())
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP);
        let reply: Vec<String> = inv
            .invoke_async(&mut self.writer().await?)
            .await
            .map_err(|e| self.failed(e))?;
        match reply.as_slice() {
            [] => Ok(None),
            [seq, _epoch] => Ok(Some(number(seq)?)),
            _ => Err(unexpected("allow_remove", &reply)),
        }
    }

    /// Expire due entries in batches; how many expired.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        // Bounded: a backlog larger than this waits for the next tick.
        for _ in 0..100 {
            let mut inv = self.invocation(&scripts().reap);
            inv.arg(REAP_BATCH)
                .arg(new_epoch())
                .arg(EVENT_RETENTION_MS)
                .arg(EVENT_CAP);
            let n: u64 = inv
                .invoke_async(&mut self.writer().await?)
                .await
                .map_err(|e| self.failed(e))?;
            total += n as usize;
            if n < REAP_BATCH {
                break;
            }
        }
        Ok(total)
    }

    /// Replace the allowlist with `entries` as a new epoch: stage them in
    /// chunks under a fresh token, then swap them in with one script (see
    /// `lua/allow_restore.lua`). Entries must be canonical and distinct.
    pub async fn restore(&self, entries: &[Entry], actor: &str) -> Result<Restored, StoreError> {
        let token = new_epoch();
        let staging = self.keys.staging(&token);
        let mut conn = self.writer().await?;
        for chunk in entries.chunks(RESTORE_CHUNK) {
            let mut inv = scripts().restore_stage.prepare_invoke();
            inv.key(&staging[0]).key(&staging[1]).arg(STAGING_TTL_MS);
            for e in chunk {
                let json = serde_json::json!({
                    "expires_at": e.expires_at,
                    "note": e.note,
                    "created_at": e.created_at,
                    "actor": e.actor,
                    "ver": 1,
                });
                inv.arg(e.cidr.to_string())
                    .arg(json.to_string())
                    .arg(e.expires_at);
            }
            let _: u64 = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.failed(e))?;
        }
        let mut inv = self.invocation(&scripts().restore);
        inv.key(&staging[0])
            .key(&staging[1])
            .arg(new_epoch())
            .arg(entries.len())
            .arg(actor)
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP);
        let reply: Vec<String> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let [epoch, _seq, kept, dropped] = reply.as_slice() else {
            return Err(unexpected("allow_restore", &reply));
        };
        Ok(Restored {
            epoch: epoch.clone(),
            kept: number(kept)?,
            dropped: number(dropped)?,
        })
    }

    /// Every live entry, read atomically.
    pub async fn listing(&self) -> Result<Listing, StoreError> {
        let snap = self.snapshot(&mut self.writer().await?).await?;
        let mut entries: Vec<Entry> = snap
            .entries
            .into_iter()
            .filter(|e| super::table::live(e.expires_at, snap.now_ms))
            .collect();
        entries.sort_by_key(|e| e.cidr);
        Ok(Listing {
            epoch: snap.epoch,
            seq: snap.seq,
            now_ms: snap.now_ms,
            entries,
        })
    }

    /// One atomic read of entries, epoch, seq, stream position and Redis time.
    pub async fn snapshot<C: ConnectionLike>(&self, conn: &mut C) -> Result<Snapshot, StoreError> {
        let mut inv = scripts().snapshot.prepare_invoke();
        inv.key(&self.keys.meta).key(&self.keys.entries);
        let reply: Vec<String> = inv.invoke_async(conn).await.map_err(classify)?;
        let [epoch, seq, last_id, now_ms, rest @ ..] = reply.as_slice() else {
            return Err(unexpected("allow_snapshot", &reply[..reply.len().min(4)]));
        };
        let mut entries = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks(2) {
            let [cidr, json] = pair else {
                return Err(unexpected("allow_snapshot", pair));
            };
            match parse_entry(cidr, json) {
                Ok(e) => entries.push(e),
                // Only a hand-edited hash gets here; the rest of the table still holds.
                Err(e) => {
                    tracing::warn!(%cidr, error = %e, "skipping an unreadable allowlist entry")
                }
            }
        }
        Ok(Snapshot {
            epoch: epoch.clone(),
            seq: number(seq)?,
            last_id: last_id.clone(),
            now_ms: number(now_ms)?,
            entries,
        })
    }
}

fn parse_entry(cidr: &str, json: &str) -> Result<Entry, String> {
    let net = super::cidr::parse_net(cidr)?;
    let j: StoredJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(Entry {
        cidr: net,
        expires_at: j.expires_at,
        note: j.note,
        created_at: j.created_at,
        actor: j.actor,
    })
}

fn number(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Server(format!("expected a number from Redis, got {s:?}")))
}

fn unexpected(script: &str, reply: &[String]) -> StoreError {
    StoreError::Server(format!("unexpected {script} reply {reply:?}"))
}
