//! The allowlist in Redis: the `lua/allow_*.lua` scripts and the readers of
//! their replies. Writers (admin API, CLI, reaper) share one connection; the
//! follower reads snapshots and tails the stream on its own. Both come from
//! `redis_conn`, so the allowlist works on one server, a Cluster (its keys
//! share one slot) or behind a Sentinel.

use std::sync::OnceLock;
use std::time::Duration;

use ipnet::IpNet;

use redis::aio::ConnectionLike;
use redis::Script;
use serde::Deserialize;

use std::collections::{BTreeMap, BTreeSet};

use redis::streams::StreamReadReply;

use super::event::{stream_entries, Event, Op};
use super::kind::ListKind;
use super::member::Member;
use super::recovery::{Born, LostList, Over, WriteError};

mod ban;
mod fleet;
use super::{new_epoch, Entry, Listing, NewEntry, Stored};
use crate::keys::AllowKeys;
use crate::redis_conn::StoreError;
use crate::redis_conn::{Endpoint, RedisConn, SharedConn};
pub use fleet::{Birth, FleetRestore, Lease};

/// Events older than this are trimmed from the stream (7 days): far longer than
/// any restart, so a node that knows its position can always catch up.
pub const EVENT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// And the stream never holds much more than this many events.
pub const EVENT_CAP: u64 = 1_000_000;
/// The reaper expires at most this many entries per script call (it loops):
/// each costs an XADD, and a call must stay well under 1 ms (bench/README).
/// 25: a call of 50 measured 0.6–1.1 ms of Redis time (one XADD per entry
/// dominates; scripts/allowlist_call_cost.py), over the 1 ms a call may take.
pub const REAP_BATCH: u64 = 25;
/// Calls per reaper tick: a backlog beyond REAP_BATCH × this (100 000) waits a tick.
const REAP_CALLS: usize = 4000;
/// Admin writes are not on the request path: allow them time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A restore stages this many entries per script call, so that each call
/// holds Redis about as long as a snapshot page: inserting into a hash and
/// a sorted set of a million costs Redis about 5 µs an entry. Staging a
/// million, chunks of 100 measured 0.56 ms median and 1.05 ms p99; chunks
/// of 200 1.1 ms, of 1 000 about 4 ms (bench/README, run f).
pub const RESTORE_CHUNK: usize = 100;
/// A consistent listing re-reads changed entries at most this many times.
const LISTING_ROUNDS: usize = 100;
/// Staged entries of a restore that never finished vanish after this.
const STAGING_TTL_MS: u64 = 3_600_000;

struct Scripts {
    upsert: Script,
    ban: Script,
    remove: Script,
    reap: Script,
    snapshot_begin: Script,
    restore_stage: Script,
    restore: Script,
}

/// Built once; `Script` computes the SHA1 that EVALSHA uses, and on NOSCRIPT
/// it sends the script once with EVAL.
fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        // Every entry is written by lua/list_upsert.lua, the module both run.
        upsert: Script::new(concat!(
            include_str!("../../lua/list_upsert.lua"),
            "\n",
            include_str!("../../lua/allow_upsert.lua")
        )),
        ban: Script::new(concat!(
            include_str!("../../lua/list_upsert.lua"),
            "\n",
            include_str!("../../lua/deny_ban.lua")
        )),
        remove: Script::new(include_str!("../../lua/allow_remove.lua")),
        reap: Script::new(include_str!("../../lua/allow_reap.lua")),
        snapshot_begin: Script::new(include_str!("../../lua/allow_snapshot_begin.lua")),
        restore_stage: Script::new(include_str!("../../lua/allow_restore_stage.lua")),
        restore: Script::new(include_str!("../../lua/allow_restore.lua")),
    })
}

/// Entries per snapshot page (HSCAN COUNT): about 0.5 ms of Redis time on a
/// loaded 2-core machine, at any list size (bench/README).
pub const SNAPSHOT_PAGE: usize = 200;

/// Where a paged snapshot starts (`lua/allow_snapshot_begin.lua`).
#[derive(Clone, Debug)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
    /// Stream id of the last event; catch up from here after paging.
    pub last_id: String,
    /// Redis TIME when it was read.
    pub now_ms: u64,
    /// How many entries the hash held (to pace and jitter the paging).
    pub entries: u64,
}

/// A restore being staged (`stage_begin` … `stage_finish`).
pub struct Staging {
    keys: [String; 2],
    conn: RedisConn,
    staged: usize,
    /// Entries of the input that had expired when their chunk was staged.
    dropped: u64,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    /// False only for a fleet restore that found an allowlist already there
    /// (another node, or an operator, was first): nothing changed.
    pub done: bool,
    /// The new dataset's epoch; its `seq` is 1.
    pub epoch: String,
    /// Entries the new list holds.
    pub kept: u64,
    /// Entries of the input that had expired when staged, left out.
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
    /// Written only when true (`lua/list_upsert.lua`).
    #[serde(default)]
    exempt: bool,
    /// An override's limits (the IP lists' entries have none).
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

pub struct RedisAllowlist<M: Member = IpNet> {
    /// The writers' shared connection (admin API, CLI, reaper), made on first
    /// use. After a Sentinel failover it is dropped, so the next write asks
    /// the sentinels for the new master.
    conn: SharedConn,
    keys: AllowKeys,
    /// Which list these keys hold (for the words of a refused write).
    kind: ListKind,
    member: std::marker::PhantomData<fn() -> M>,
}

impl RedisAllowlist {
    /// Nothing is dialled until the first call.
    pub fn new(endpoint: Endpoint, keys: AllowKeys) -> Self {
        Self::of(endpoint, keys, ListKind::Allow)
    }
}

impl<M: Member> RedisAllowlist<M> {
    /// The list of `kind` in `keys` (`KeySpace::list(kind.tag())`).
    pub fn of(endpoint: Endpoint, keys: AllowKeys, kind: ListKind) -> Self {
        RedisAllowlist {
            conn: SharedConn::new(endpoint, WRITE_TIMEOUT),
            keys,
            kind,
            member: std::marker::PhantomData,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        self.conn.endpoint()
    }

    async fn writer(&self) -> Result<RedisConn, StoreError> {
        self.conn.get().await
    }

    /// Drop the writers' connection: the next write connects with the
    /// endpoint's current settings (a reload changed credentials or TLS files).
    pub fn forget_connection(&self) {
        self.conn.forget();
    }

    /// Classify a failed call; when Redis went away behind a Sentinel, forget
    /// the connection so the next call finds the current master.
    fn failed(&self, e: redis::RedisError) -> StoreError {
        self.classify(StoreError::from(e))
    }

    /// The same for an error already classified.
    fn classify(&self, e: StoreError) -> StoreError {
        if self.endpoint().is_sentinel()
            && matches!(e, StoreError::Unreachable(_) | StoreError::Timeout(_))
        {
            self.conn.forget();
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

    /// Run a script that writes the list: its reply, or the witness of a
    /// lost list it answered with instead (nothing was written then).
    async fn write(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Vec<String>, WriteError> {
        let reply: Vec<String> = inv
            .invoke_async(&mut self.writer().await?)
            .await
            .map_err(|e| self.failed(e))?;
        match LostList::from_reply(&reply, self.kind) {
            Some(lost) => Err(WriteError::Lost(lost)),
            None => Ok(reply),
        }
    }

    pub async fn upsert(&self, new: &NewEntry<M>) -> Result<Stored<M>, WriteError> {
        let mut inv = self.invocation(&scripts().upsert);
        inv.key(&self.keys.lost)
            .arg(new.cidr.to_string())
            .arg(new.ttl_ms)
            .arg(&new.note)
            .arg(&new.actor)
            .arg(new_epoch())
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP)
            .arg(if new.new_epoch { "1" } else { "0" })
            .arg(if new.exempt { "1" } else { "0" })
            // The script passes it through as text ("": none).
            .arg(M::payload_json(&new.payload).map_or_else(String::new, |v| v.to_string()));
        let reply = self.write(&inv).await?;
        let [seq, expires_at, created_at, _epoch] = reply.as_slice() else {
            return Err(unexpected("allow_upsert", &reply).into());
        };
        Ok(Stored {
            entry: Entry {
                cidr: new.cidr.clone(),
                expires_at: number(expires_at)?,
                note: new.note.clone(),
                created_at: number(created_at)?,
                actor: new.actor.clone(),
                exempt: new.exempt,
                payload: new.payload.clone(),
            },
            seq: number(seq)?,
        })
    }

    pub async fn remove(&self, cidr: &M, actor: &str) -> Result<Option<u64>, WriteError> {
        let mut inv = self.invocation(&scripts().remove);
        inv.key(&self.keys.lost)
            .arg(cidr.to_string())
            .arg(actor)
            .arg(new_epoch())
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP);
        let reply = self.write(&inv).await?;
        match reply.as_slice() {
            [] => Ok(None),
            [seq, _epoch] => Ok(Some(number(seq)?)),
            _ => Err(unexpected("allow_remove", &reply).into()),
        }
    }

    /// Expire due entries in batches; how many expired.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        // Bounded: a backlog larger than this waits for the next tick.
        for _ in 0..REAP_CALLS {
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
    pub async fn restore(
        &self,
        entries: &[Entry<M>],
        actor: &str,
        born: &Born,
    ) -> Result<Restored, StoreError> {
        let mut staging = self.stage_begin().await?;
        for chunk in entries.chunks(RESTORE_CHUNK) {
            if let Err(e) = self.stage(&mut staging, chunk).await {
                self.stage_abort(staging).await;
                return Err(e);
            }
        }
        self.stage_finish(staging, actor, born).await
    }

    /// A restore's staging keys, under a fresh token (invisible to nodes).
    pub async fn stage_begin(&self) -> Result<Staging, StoreError> {
        let token = new_epoch();
        Ok(Staging {
            keys: self.keys.staging(&token),
            conn: self.writer().await?,
            staged: 0,
            dropped: 0,
        })
    }

    /// Stage some entries (at most `RESTORE_CHUNK` per call).
    pub async fn stage(&self, staging: &mut Staging, chunk: &[Entry<M>]) -> Result<(), StoreError> {
        let mut inv = scripts().restore_stage.prepare_invoke();
        inv.key(&staging.keys[0])
            .key(&staging.keys[1])
            .arg(STAGING_TTL_MS);
        for e in chunk {
            inv.arg(e.cidr.to_string())
                .arg(super::stored_json::entry_json(e))
                .arg(e.expires_at);
        }
        let (_, skipped): (u64, u64) = inv
            .invoke_async(&mut staging.conn)
            .await
            .map_err(|e| self.failed(e))?;
        staging.staged += chunk.len() - skipped as usize;
        staging.dropped += skipped;
        Ok(())
    }

    /// Drop what was staged (the input turned out bad): nothing changed.
    pub async fn stage_abort(&self, mut staging: Staging) {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(&staging.keys[0])
            .arg(&staging.keys[1])
            .query_async(&mut staging.conn)
            .await;
    }

    /// Swap the staged entries in as a new epoch.
    pub async fn stage_finish(
        &self,
        mut staging: Staging,
        actor: &str,
        born: &Born,
    ) -> Result<Restored, StoreError> {
        let mut inv = self.invocation(&scripts().restore);
        let (origin_node, origin_epoch, origin_seq) = match born {
            Born::Fleet { origin: o, .. } => (o.node.as_str(), o.epoch.as_str(), o.seq.to_string()),
            _ => ("", "", String::new()),
        };
        let (over, over_epoch, over_seq) = match born {
            Born::Fleet {
                over: Over::Nothing,
                ..
            } => ("absent", "", String::new()),
            Born::Fleet {
                over: Over::Write { epoch, seq },
                ..
            } => ("write", epoch.as_str(), seq.to_string()),
            _ => ("any", "", String::new()),
        };
        inv.key(&staging.keys[0])
            .key(&staging.keys[1])
            .key(&self.keys.lost)
            .arg(new_epoch())
            .arg(staging.staged)
            .arg(actor)
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP)
            .arg(born.as_str())
            .arg(origin_node)
            .arg(origin_epoch)
            .arg(origin_seq)
            .arg(over)
            .arg(over_epoch)
            .arg(over_seq);
        let reply: Vec<String> = inv
            .invoke_async(&mut staging.conn)
            .await
            .map_err(|e| self.failed(e))?;
        let [epoch, _seq, kept] = reply.as_slice() else {
            return Err(unexpected("allow_restore", &reply));
        };
        Ok(Restored {
            done: !epoch.is_empty(),
            epoch: epoch.clone(),
            kept: number(kept)?,
            dropped: staging.dropped,
        })
    }
}

// === paged reads: bounded Redis time per call at any list size ===

impl<M: Member> RedisAllowlist<M> {
    /// Where a paged snapshot starts: one O(1) script.
    pub async fn position<C: ConnectionLike>(&self, conn: &mut C) -> Result<Position, StoreError> {
        let mut inv = scripts().snapshot_begin.prepare_invoke();
        inv.key(&self.keys.meta).key(&self.keys.entries);
        let reply: Vec<String> = inv.invoke_async(conn).await.map_err(StoreError::from)?;
        let [epoch, seq, last_id, now_ms, entries] = reply.as_slice() else {
            return Err(unexpected("allow_snapshot_begin", &reply));
        };
        Ok(Position {
            epoch: epoch.clone(),
            seq: number(seq)?,
            last_id: last_id.clone(),
            now_ms: number(now_ms)?,
            entries: number(entries)?,
        })
    }

    /// One HSCAN page of `(cidr, JSON)` pairs and the next cursor (0: done).
    /// HSCAN returns every entry present for the whole scan at least once,
    /// maybe twice; entries added or removed meanwhile maybe (see README).
    async fn scan<C: ConnectionLike>(
        &self,
        conn: &mut C,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, String)>), StoreError> {
        let (next, flat): (String, Vec<String>) = redis::cmd("HSCAN")
            .arg(&self.keys.entries)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await
            .map_err(StoreError::from)?;
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok((number(&next)?, pairs))
    }

    /// Every live entry at one moment (`tollgate allow export`), without one
    /// long call: the pages of a snapshot, then the entries that changed while
    /// paging read again, with `seq`, in one atomic step (README, "IP
    /// allowlist", has the argument). Fails if a restore or a trim got in the
    /// way, or if writes never paused for `LISTING_ROUNDS` rounds.
    pub async fn listing(&self) -> Result<Listing<M>, StoreError> {
        let mut conn = self.writer().await?;
        let pos = self.position(&mut conn).await?;
        let mut entries: BTreeMap<M, Entry<M>> = BTreeMap::new();
        let mut cursor = 0;
        loop {
            let (next, pairs) = self.scan(&mut conn, cursor, SNAPSHOT_PAGE).await?;
            for (cidr, json) in pairs {
                match parse_entry::<M>(&cidr, &json) {
                    Ok(e) => {
                        entries.insert(e.cidr.clone(), e);
                    }
                    Err(e) => {
                        tracing::warn!(%cidr, error = %e, "skipping an unreadable allowlist entry")
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let (mut seq, mut last_id) = (pos.seq, pos.last_id.clone());
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for _ in 0..LISTING_ROUNDS {
            // Every change since the recorded position names its entry.
            loop {
                let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(SNAPSHOT_PAGE)
                    .arg("STREAMS")
                    .arg(&self.keys.events)
                    .arg(&last_id)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.failed(e))?;
                let ids = stream_entries(reply);
                if ids.is_empty() {
                    break;
                }
                for id in ids {
                    let ev = Event::<M>::from_fields(&id.map)
                        .map_err(|e| StoreError::Reply(e.to_string()))?;
                    if ev.op == Op::Restore || (!pos.epoch.is_empty() && ev.epoch != pos.epoch) {
                        return Err(StoreError::Changed(
                            "a restore replaced the allowlist while it was read; run it again"
                                .into(),
                        ));
                    }
                    if ev.seq != seq + 1 {
                        return Err(StoreError::Changed(format!("events after seq {seq} were trimmed while the allowlist was read; run it again")));
                    }
                    seq = ev.seq;
                    touched.extend(ev.cidr.map(|c| c.to_string()));
                    last_id = id.id;
                }
            }
            // One atomic read: if `seq` has not moved, these are the changed entries at `seq`.
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("TIME")
                .cmd("HMGET")
                .arg(&self.keys.meta)
                .arg(&["epoch", "seq"]);
            if !touched.is_empty() {
                pipe.cmd("HMGET")
                    .arg(&self.keys.entries)
                    .arg(touched.iter().collect::<Vec<_>>());
            }
            let reply: Vec<redis::Value> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.failed(e))?;
            let ((s, us), (epoch, now_seq)): ((u64, u64), (Option<String>, Option<u64>)) = (
                redis::from_redis_value_ref(&reply[0]).map_err(bad_reply)?,
                redis::from_redis_value_ref(&reply[1]).map_err(bad_reply)?,
            );
            if epoch.unwrap_or_default() != pos.epoch && !pos.epoch.is_empty() {
                return Err(StoreError::Changed(
                    "a restore replaced the allowlist while it was read; run it again".into(),
                ));
            }
            if now_seq.unwrap_or(0) != seq {
                continue;
            }
            if let Some(values) = reply.get(2) {
                let values: Vec<Option<String>> =
                    redis::from_redis_value_ref(values).map_err(bad_reply)?;
                for (cidr, json) in touched.iter().zip(values) {
                    let net = M::parse(cidr).map_err(StoreError::Reply)?;
                    match json.map(|j| parse_entry(cidr, &j)) {
                        Some(Ok(e)) => {
                            entries.insert(net, e);
                        }
                        _ => {
                            entries.remove(&net);
                        }
                    }
                }
            }
            let now_ms = s * 1000 + us / 1000;
            return Ok(Listing {
                epoch: pos.epoch,
                seq,
                now_ms,
                entries: entries
                    .into_values()
                    .filter(|e| super::expiry::live(e.expires_at, now_ms))
                    .collect(),
            });
        }
        Err(StoreError::Changed(format!(
            "the allowlist kept changing while it was read ({LISTING_ROUNDS} rounds); run it again"
        )))
    }

    /// One snapshot page: every entry whole (a node keeps note, actor and
    /// created_at beside its table, to put the list back if Redis loses it).
    pub async fn page<C: ConnectionLike>(
        &self,
        conn: &mut C,
        cursor: u64,
    ) -> Result<(u64, Vec<Entry<M>>), StoreError> {
        let (next, pairs) = self.scan(conn, cursor, SNAPSHOT_PAGE).await?;
        let mut out = Vec::with_capacity(pairs.len());
        for (cidr, json) in pairs {
            match parse_entry(&cidr, &json) {
                Ok(e) => out.push(e),
                // Only a hand-edited hash gets here; the rest of the table still holds.
                Err(e) => {
                    tracing::warn!(%cidr, error = %e, "skipping an unreadable allowlist entry")
                }
            }
        }
        Ok((next, out))
    }

    /// One page of live entries for the admin API and `tollgate allow list`,
    /// sorted within the page, with Redis time and the next cursor (0: done).
    pub async fn list_page(&self, cursor: u64, count: usize) -> Result<Page<M>, StoreError> {
        let mut conn = self.writer().await?;
        let ((s, us), (epoch, seq)): ((u64, u64), (Option<String>, Option<u64>)) = redis::pipe()
            .atomic()
            .cmd("TIME")
            .cmd("HMGET")
            .arg(&self.keys.meta)
            .arg(&["epoch", "seq"])
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let now_ms = s * 1000 + us / 1000;
        let (next, pairs) = self.scan(&mut conn, cursor, count).await?;
        let mut entries: Vec<Entry<M>> = pairs
            .iter()
            .filter_map(|(cidr, json)| parse_entry(cidr, json).ok())
            .filter(|e| super::expiry::live(e.expires_at, now_ms))
            .collect();
        entries.sort_by(|a, b| a.cidr.cmp(&b.cidr));
        entries.dedup_by(|a, b| a.cidr == b.cidr);
        Ok(Page {
            epoch: epoch.unwrap_or_default(),
            seq: seq.unwrap_or(0),
            now_ms,
            entries,
            cursor: next,
        })
    }

    /// One live entry by its exact member, and Redis time: one HGET.
    pub async fn get(&self, member: &M) -> Result<(Option<Entry<M>>, u64), StoreError> {
        let mut conn = self.writer().await?;
        let ((s, us), json): ((u64, u64), Option<String>) = redis::pipe()
            .atomic()
            .cmd("TIME")
            .cmd("HGET")
            .arg(&self.keys.entries)
            .arg(member.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let now_ms = s * 1000 + us / 1000;
        let found = json
            .and_then(|j| parse_entry::<M>(&member.to_string(), &j).ok())
            .filter(|e| super::expiry::live(e.expires_at, now_ms));
        Ok((found, now_ms))
    }
}

impl RedisAllowlist {
    /// The longest live entry holding `ip`: one HMGET of every network that
    /// could hold it (33 for IPv4, 129 for IPv6), never the whole list.
    pub async fn lookup(&self, ip: std::net::IpAddr) -> Result<(Option<Entry>, u64), StoreError> {
        let ip = crate::client_ip::canonical(ip);
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let nets: Vec<IpNet> = (0..=width)
            .rev()
            .map(|len| IpNet::new(ip, len).expect("length within width").trunc())
            .collect();
        let mut conn = self.writer().await?;
        let ((s, us), jsons): ((u64, u64), Vec<Option<String>>) = redis::pipe()
            .atomic()
            .cmd("TIME")
            .cmd("HMGET")
            .arg(&self.keys.entries)
            .arg(nets.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        let now_ms = s * 1000 + us / 1000;
        let found = nets.iter().zip(jsons).find_map(|(net, json)| {
            let e = parse_entry::<IpNet>(&net.to_string(), &json?).ok()?;
            super::expiry::live(e.expires_at, now_ms).then_some(e)
        });
        Ok((found, now_ms))
    }
}

/// One page of a listing. Pages are not one snapshot: an entry changed
/// between two pages shows as it was when its page was read.
#[derive(Clone, Debug)]
pub struct Page<M: Member = IpNet> {
    /// The dataset and its `seq` when the page was read.
    pub epoch: String,
    pub seq: u64,
    /// Redis time of the page; `expires_at - now_ms` is what remains.
    pub now_ms: u64,
    pub entries: Vec<Entry<M>>,
    /// Where the next page starts; 0 when this was the last.
    pub cursor: u64,
}

/// An entry in the `entries` hash that cannot be read (only a hand-edited
/// hash has one).
#[derive(Debug, thiserror::Error)]
enum StoredEntryError {
    #[error("{0}")]
    Member(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

fn parse_entry<M: Member>(cidr: &str, json: &str) -> Result<Entry<M>, StoredEntryError> {
    let net = M::parse(cidr).map_err(StoredEntryError::Member)?;
    let j: StoredJson = serde_json::from_str(json)?;
    Ok(Entry {
        cidr: net,
        expires_at: j.expires_at,
        note: j.note,
        created_at: j.created_at,
        actor: j.actor,
        exempt: j.exempt,
        payload: M::payload(j.payload.as_ref()).map_err(StoredEntryError::Member)?,
    })
}

fn number(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Reply(format!("expected a number, got {s:?}")))
}

fn bad_reply(e: impl std::fmt::Display) -> StoreError {
    StoreError::Reply(e.to_string())
}

fn unexpected(script: &str, reply: &[String]) -> StoreError {
    StoreError::Reply(format!("{script} reply {reply:?}"))
}
