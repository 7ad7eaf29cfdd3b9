//! The embedded allowlist (no Redis, one replica): the scripts' semantics in
//! process. Each change bumps `seq` and publishes a new table at once, while
//! the lock is held, so tables are published in `seq` order.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::expiry::live;
use super::member::{Member, MemberSet};
use super::table::{Clock, Table};
use super::{new_epoch, Entry, Listing, NewEntry, Page, Stored};

struct State<M: Member> {
    entries: BTreeMap<M, Entry<M>>,
    /// The published table's source; its clock is the store's clock.
    table: Table<M>,
}

pub struct LocalAllowlist<M: Member> {
    state: Mutex<State<M>>,
}

impl<M: Member> LocalAllowlist<M> {
    pub fn new() -> LocalAllowlist<M> {
        LocalAllowlist {
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                table: Table::empty(new_epoch(), 0, Clock::system()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // A panic while holding the lock leaves consistent data: every change
        // below completes before anything can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn table(&self) -> Table<M> {
        self.lock().table.clone()
    }

    pub fn upsert(&self, new: &NewEntry<M>, publish: &ArcSwap<Table<M>>) -> Stored<M> {
        let mut s = self.lock();
        let now = s.table.clock.now_ms();
        let expires_at = if new.ttl_ms == 0 { 0 } else { now + new.ttl_ms };
        let entry = Entry {
            cidr: new.cidr.clone(),
            expires_at,
            note: new.note.clone(),
            created_at: now,
            actor: new.actor.clone(),
            exempt: new.exempt,
            payload: new.payload.clone(),
        };
        s.entries.insert(new.cidr.clone(), entry.clone());
        s.table
            .set
            .insert(new.cidr.clone(), expires_at, new.payload.clone());
        let seq = s.commit(publish);
        Stored { entry, seq }
    }

    pub fn remove(&self, cidr: &M, _actor: &str, publish: &ArcSwap<Table<M>>) -> Option<u64> {
        let mut s = self.lock();
        s.entries.remove(cidr)?;
        s.table.set.remove(cidr);
        Some(s.commit(publish))
    }

    /// Drop every entry as a new epoch (`allow clear`); how many there were.
    pub fn clear(&self, _actor: &str, publish: &ArcSwap<Table<M>>) -> u64 {
        let mut s = self.lock();
        let held = s.entries.len() as u64;
        s.entries.clear();
        let clock = s.table.clock;
        s.table = Table::empty(new_epoch(), 0, clock);
        s.commit(publish);
        held
    }

    /// Expire every due entry (one `seq` each, like the reap script).
    pub fn reap(&self, publish: &ArcSwap<Table<M>>) -> usize {
        let mut s = self.lock();
        let now = s.table.clock.now_ms();
        let due: Vec<M> = s
            .entries
            .values()
            .filter(|e| !live(e.expires_at, now))
            .map(|e| e.cidr.clone())
            .collect();
        for cidr in &due {
            s.entries.remove(cidr);
            s.table.set.remove(cidr);
            s.table.seq += 1;
        }
        if !due.is_empty() {
            publish.store(std::sync::Arc::new(s.table.clone()));
        }
        due.len()
    }

    pub fn listing(&self) -> Listing<M> {
        let s = self.lock();
        let now = s.table.clock.now_ms();
        Listing {
            epoch: s.table.epoch.clone(),
            seq: s.table.seq,
            now_ms: now,
            entries: s
                .entries
                .values()
                .filter(|e| live(e.expires_at, now))
                .cloned()
                .collect(),
        }
    }
}

impl<M: Member> LocalAllowlist<M> {
    /// Entries `cursor..cursor + count` of the sorted listing; the next cursor (0: done).
    pub fn page(&self, cursor: u64, count: usize) -> Page<M> {
        let mut l = self.listing();
        l.entries.sort_by(|a, b| a.cidr.cmp(&b.cidr));
        let start = (cursor as usize).min(l.entries.len());
        let end = (start + count).min(l.entries.len());
        Page {
            epoch: l.epoch,
            seq: l.seq,
            now_ms: l.now_ms,
            entries: l.entries[start..end].to_vec(),
            cursor: if end == l.entries.len() {
                0
            } else {
                end as u64
            },
        }
    }
}

impl LocalAllowlist<IpNet> {
    /// Whether the entry of exactly `cidr` is exempt.
    pub fn exempt(&self, cidr: &IpNet) -> bool {
        self.lock().entries.get(cidr).is_some_and(|e| e.exempt)
    }
}

impl<M: Member> State<M> {
    /// One more change: the next `seq`, and the table handlers see.
    fn commit(&mut self, publish: &ArcSwap<Table<M>>) -> u64 {
        self.table.seq += 1;
        publish.store(std::sync::Arc::new(self.table.clone()));
        self.table.seq
    }
}
