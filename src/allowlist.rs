//! The distributed IP allowlist, and the machinery every replicated list
//! shares: the denylist is the same types and scripts with another
//! `kind::ListKind` (its own keys and stream, `[denylist]`, `/v1/denylist`).
//!
//! The admin side (admin API, `tollgate allow`) writes through one Lua script
//! per change (`lua/allow_*.lua`): the entry, `seq` and a stream event move
//! together. Every `serve` follows the stream into a local table that request
//! handlers read without a lock and without Redis. With no Redis, the embedded
//! store keeps the same semantics in process (one replica only).
//!
//! - `cidr`: canonical networks and addresses; `input`: validation of a new entry.
//! - `table`: the longest-prefix table and its Redis-time clock; `family`: its
//!   per-family maps, sharded copy-on-write so a node holds its entries once.
//! - `event`: a stream event; `redis_store`: the scripts; `stored_json`: an
//!   entry's expiry read fast from its JSON; `local`: the embedded twin.
//! - `follower`: snapshot, then `XREAD BLOCK`, resyncing on gaps, epochs and
//!   a Redis that went backwards; `status`: its freshness for `/readyz` and
//!   `/metrics`; `state_file`: the table kept across a node's restarts.
//! - `reaper`: expires due entries; `snapshot_budget`: the snapshot pages
//!   all nodes together may ask of Redis.
//! - `export`: the JSON document of `tollgate allow export` / `restore`;
//!   `export_file`: the file `tollgate follow` keeps equal to the live list;
//!   `export_metrics`: its metrics as a node_exporter textfile.
//! - `gate`: what a rule's `allowlist` mode makes of a request.
//! - `recovery`: when Redis lost the list, the one node elected in Redis puts
//!   its table back, and writes refuse to start from nothing meanwhile (its
//!   Redis side: `redis_store/fleet.rs`; the follower's: `follower/lost.rs`);
//!   `details`: the note, actor and created_at a node keeps for that.

pub mod ban;
pub mod cidr;
pub mod details;
pub mod event;
pub mod expiry;
pub mod export;
pub mod export_file;
pub mod export_metrics;
mod family;
pub mod follower;
pub mod gate;
pub mod input;
pub mod kind;
mod local;
pub mod member;
pub mod reaper;
pub mod recovery;
pub mod redis_store;
pub mod snapshot_budget;
pub mod state_file;
pub mod status;
mod stored_json;
pub mod table;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::sync::watch;

use crate::config::Config;
use crate::keys::KeySpace;
use crate::redis_conn::StoreError;
use details::Details;
use local::LocalAllowlist;
use recovery::{Born, WriteError};
use redis_store::{RedisAllowlist, Restored};

use expiry::ExpiresAt;
use kind::ListKind;
use member::Member;
pub use redis_store::Page;
use status::Status;
use table::{Clock, Table};

pub use input::NewEntry;

/// One entry of a list, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<M: Member = IpNet> {
    /// The member (a network; an override's rule and key): the protocol's
    /// `cidr` field, named so for every kind.
    pub cidr: M,
    /// ms since the Unix epoch, Redis time; 0: never.
    pub expires_at: ExpiresAt,
    pub note: String,
    /// When the last upsert of this entry was written.
    pub created_at: u64,
    pub actor: String,
    /// An allowlist entry marked exempt: its addresses are never banned by a
    /// rule (`src/ban.rs`); a manual deny still refuses them.
    pub exempt: bool,
    /// What the entry carries for decisions (`()` for the IP lists).
    pub payload: M::Payload,
}

/// An entry just written, and the event number of that write.
#[derive(Clone, Debug)]
pub struct Stored<M: Member = IpNet> {
    pub entry: Entry<M>,
    pub seq: u64,
}

/// Every live entry at one moment.
#[derive(Clone, Debug)]
pub struct Listing<M: Member = IpNet> {
    pub epoch: String,
    pub seq: u64,
    /// Redis time of the listing; `expires_at - now_ms` is what remains.
    pub now_ms: u64,
    /// Sorted by member.
    pub entries: Vec<Entry<M>>,
}

impl Listing {
    /// The longest live entry holding `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Entry> {
        let table = Table::from_entries(String::new(), 0, Clock::system(), &self.entries);
        let (net, _) = table.lookup_at(ip, self.now_ms)?;
        self.entries.iter().find(|e| e.cidr == net)
    }
}

/// Where the allowlist is kept: Redis (every replica follows its stream) or
/// in process (one replica).
#[allow(clippy::large_enum_variant)] // one per process
enum Backend<M: Member> {
    Redis(RedisAllowlist<M>),
    Local(LocalAllowlist<M>),
}

/// One replicated list of any kind (`member`): the IP allowlist and
/// denylist (`Allowlist<IpNet>`, the default), the overrides.
pub struct Allowlist<M: Member = IpNet> {
    /// Which list this is (allowlist, denylist): its keys, settings and words.
    kind: ListKind,
    /// What request handlers read; replaced whole by the follower or the embedded store.
    table: ArcSwap<Table<M>>,
    /// The table reflects a known dataset: the first snapshot is loaded, or
    /// the state file was (always true for the embedded store).
    synced: AtomicBool,
    backend: Backend<M>,
    /// The follower's view of its freshness (stale, source_lost, resyncs).
    status: Status,
    /// Bumped at each publish by the follower: the state file and `tollgate
    /// follow`'s export wait on it.
    changes: watch::Sender<u64>,
    /// `allowlist.state_file`: where the follower keeps its table across restarts.
    state_file: Option<PathBuf>,
    /// How fast the follower pages a snapshot, and its jitter before one.
    pacing: follower::Pacing,
    /// Note, actor and created_at of the table's entries (to give it back whole).
    details: Details<M>,
    /// This node in a restore's origin: host name and a random tag per process.
    node_id: String,
    /// The embedded store's ban counts (`ban.rs`); unused with Redis.
    bans: ban::Bans,
}

impl Allowlist {
    /// The allowlist of a config: in Redis when `[redis]` is set, else in process.
    /// Nothing is dialled here.
    pub fn new(config: &Config) -> Allowlist {
        Allowlist::of(config, ListKind::Allow)
    }

    /// The IP list of `kind` (its `[allowlist]` or `[denylist]` settings, its keys).
    pub fn of(config: &Config, kind: ListKind) -> Allowlist {
        Allowlist::build(config, kind)
    }

    /// Whether a live entry of this node's table holds `ip`, and for how
    /// long: `Some(None)` for a permanent entry, `Some(Some(ms))` until the
    /// longest timed one ends (Redis time). Lock-free, never touches Redis.
    pub fn holds(&self, ip: IpAddr) -> Option<Option<u64>> {
        let table = self.table.load();
        let now_ms = table.clock.now_ms();
        let (_, expires_at) = table.lookup_at(ip, now_ms)?;
        Some((expires_at != 0).then(|| expires_at.saturating_sub(now_ms)))
    }

    /// Whether `ip` is on the allowlist now. Lock-free, never touches Redis.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.table.load().lookup(ip).is_some()
    }
}

impl<M: Member> Allowlist<M> {
    /// The list of `kind` with members `M` (its config section, its keys).
    pub fn build(config: &Config, kind: ListKind) -> Allowlist<M> {
        let settings = config.list(kind);
        let keys = KeySpace::new(&config.prefix).list(kind.tag());
        let state_file = settings.state_file.clone();
        let (backend, table, details, synced) = match &config.redis {
            Some(r) => {
                // The last known table, served before Redis answers.
                let saved = state_file
                    .as_deref()
                    .and_then(|p| state_file::load(p, kind));
                let synced = saved.is_some();
                let (table, details) = saved.unwrap_or_else(|| {
                    (
                        Table::empty(String::new(), 0, Clock::system()),
                        Default::default(),
                    )
                });
                (
                    Backend::Redis(RedisAllowlist::of(r.endpoint.clone(), keys, kind)),
                    table,
                    details,
                    synced,
                )
            }
            None => {
                let local = LocalAllowlist::new();
                let table = local.table();
                (Backend::Local(local), table, Default::default(), true)
            }
        };
        Allowlist {
            kind,
            table: ArcSwap::from_pointee(table),
            synced: AtomicBool::new(synced),
            backend,
            status: Status::default(),
            changes: watch::Sender::new(0),
            state_file,
            pacing: follower::Pacing {
                pages_per_second: settings.snapshot_pages_per_second,
                fleet_pages_per_second: settings.snapshot_fleet_pages_per_second,
                jitter_max: settings.snapshot_jitter_max,
            },
            details: Details::new(details),
            node_id: node_id(),
            bans: Default::default(),
        }
    }

    /// Which list this is.
    pub fn kind(&self) -> ListKind {
        self.kind
    }

    /// This node as a fleet restore records it.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(crate) fn details(&self) -> &Details<M> {
        &self.details
    }

    /// This node's own table, with each entry's details, as a listing (the
    /// document `GET /v1/allowlist/export` serves): what the node serves
    /// now, from its memory, whatever Redis holds.
    pub fn node_listing(&self) -> Listing<M> {
        if let Backend::Local(l) = &self.backend {
            return l.listing();
        }
        let table = self.table();
        let now_ms = table.clock.now_ms();
        Listing {
            epoch: table.epoch.clone(),
            seq: table.seq,
            now_ms,
            entries: self.details.entries_of(&table, now_ms),
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Wakes at each table the follower publishes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn state_file(&self) -> Option<&Path> {
        self.state_file.as_deref()
    }

    /// The first snapshot is loaded: lookups reflect the shared allowlist.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The table request handlers see now.
    pub fn table(&self) -> Arc<Table<M>> {
        self.table.load_full()
    }

    pub(crate) fn publish(&self, table: &Table<M>) {
        self.table.store(Arc::new(table.clone()));
        self.changes.send_modify(|n| *n += 1);
    }

    pub(crate) fn mark_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub(crate) fn redis(&self) -> Option<&RedisAllowlist<M>> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            Backend::Local(_) => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local(_))
    }

    /// Add or refresh an entry (validated by `input`).
    pub async fn upsert(&self, new: &NewEntry<M>) -> Result<Stored<M>, WriteError> {
        match &self.backend {
            Backend::Redis(r) => r.upsert(new).await,
            Backend::Local(l) => Ok(l.upsert(new, &self.table)),
        }
    }

    /// Remove an entry: its event's `seq`, or `None` when there was no such entry.
    pub async fn remove(&self, cidr: &M, actor: &str) -> Result<Option<u64>, WriteError> {
        match &self.backend {
            Backend::Redis(r) => r.remove(cidr, actor).await,
            Backend::Local(l) => Ok(l.remove(cidr, actor, &self.table)),
        }
    }

    /// Every live entry, from the source of truth (Redis, or the embedded store).
    pub async fn list(&self) -> Result<Listing<M>, StoreError> {
        match &self.backend {
            Backend::Redis(r) => Ok(r.listing().await?),
            Backend::Local(l) => Ok(l.listing()),
        }
    }

    /// One page of live entries from the source of truth, from `cursor` (0:
    /// the first page); its `cursor` is where the next starts (0: done).
    pub async fn list_page(&self, cursor: u64, count: usize) -> Result<Page<M>, StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.list_page(cursor, count).await,
            Backend::Local(l) => Ok(l.page(cursor, count)),
        }
    }

    /// One live entry by its exact member in the source of truth, and its time.
    pub async fn get(&self, member: &M) -> Result<(Option<Entry<M>>, u64), StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.get(member).await,
            Backend::Local(l) => {
                let listing = l.listing();
                let found = listing.entries.into_iter().find(|e| &e.cidr == member);
                Ok((found, listing.now_ms))
            }
        }
    }

    /// Replace the whole allowlist in Redis with `entries`, as a new epoch
    /// that every follower resyncs to (`tollgate allow restore`).
    pub async fn restore(&self, entries: &[Entry<M>], actor: &str) -> Result<Restored, StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.restore(entries, actor, &Born::Restore).await,
            Backend::Local(_) => Err(StoreError::Unsupported(
                "restore works on Redis; the embedded store lives in one process",
            )),
        }
    }

    /// The intended wipe (`allow clear`): a new, empty epoch with a
    /// `restore` event (`meta.born = clear`), so every node follows it and
    /// none takes it for a Redis that lost its data. How many entries the
    /// cleared list held.
    pub async fn clear(&self, actor: &str) -> Result<(Restored, u64), StoreError> {
        match &self.backend {
            Backend::Redis(r) => {
                let held = r.stored_count().await?;
                Ok((r.restore(&[], actor, &Born::Clear).await?, held))
            }
            Backend::Local(l) => {
                let held = l.clear(actor, &self.table);
                Ok((
                    Restored {
                        done: true,
                        epoch: self.table().epoch.clone(),
                        kept: 0,
                        dropped: 0,
                    },
                    held,
                ))
            }
        }
    }

    /// Where the epoch Redis holds came from, if a fleet restore made it.
    pub async fn restored_from(&self) -> Result<Option<recovery::Origin>, StoreError> {
        match &self.backend {
            Backend::Redis(r) => Ok(r.birth_now().await?.origin),
            Backend::Local(_) => Ok(None),
        }
    }

    /// Expire every due entry, one `expire` event each; how many expired.
    pub async fn reap(&self) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.reap().await,
            Backend::Local(l) => Ok(l.reap(&self.table)),
        }
    }
}

impl Allowlist {
    /// The longest live entry holding `ip` in the source of truth, and its
    /// time: one lookup, never the whole list.
    pub async fn check(&self, ip: IpAddr) -> Result<(Option<Entry>, u64), StoreError> {
        match &self.backend {
            Backend::Redis(r) => r.lookup(ip).await,
            Backend::Local(l) => {
                let listing = l.listing();
                Ok((listing.lookup(ip).cloned(), listing.now_ms))
            }
        }
    }

    /// `restore`, reading an export from `reader` as it stages it: the file
    /// is never held whole. The inner error lists every problem of a bad
    /// document; then the staged entries are dropped and nothing changed.
    pub async fn restore_from<R: std::io::Read + Send + 'static>(
        &self,
        reader: R,
        actor: &str,
    ) -> Result<Result<Restored, export::ExportError>, StoreError> {
        let Backend::Redis(r) = &self.backend else {
            return Err(StoreError::Unsupported(
                "restore works on Redis; the embedded store lives in one process",
            ));
        };
        let mut staging = r.stage_begin().await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Entry>>(4);
        let kind = self.kind;
        let parser = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(redis_store::RESTORE_CHUNK);
            let read = export::stream(reader, kind, |e| {
                chunk.push(e);
                if chunk.len() == redis_store::RESTORE_CHUNK {
                    let _ = tx.blocking_send(std::mem::take(&mut chunk));
                }
            });
            if !chunk.is_empty() {
                let _ = tx.blocking_send(chunk);
            }
            read
        });
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = r.stage(&mut staging, &chunk).await {
                r.stage_abort(staging).await;
                return Err(e);
            }
        }
        // The parser only panics on a bug: let it surface as one.
        let read = parser
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        match read {
            Err(problems) => {
                r.stage_abort(staging).await;
                Ok(Err(problems))
            }
            Ok(_) => Ok(Ok(r.stage_finish(staging, actor, &Born::Restore).await?)),
        }
    }
}

/// `host-1a2b3c4d`: the host (for an operator reading an event) and a random
/// tag (two processes on one host, or nodes in one test, differ).
fn node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// A random id for a new dataset.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}
