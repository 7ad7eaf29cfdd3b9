//! What a node keeps of each entry beyond its network and expiry: note,
//! actor and created_at. Request handlers never read it (the table answers
//! them); it is there so a node can give its table back whole: to Redis when
//! Redis lost it (`recovery`), to `GET /v1/allowlist/export`, and to its
//! state file.
//!
//! One copy per node, behind a mutex only the follower, an export and the
//! state file take (never a request). It may run a batch ahead of the
//! published table; an export takes the table's entries and looks their
//! details up here (an entry without any gets empty ones).

use std::collections::HashMap;
use std::sync::Mutex;

use ipnet::IpNet;

use super::event::{Event, Op};
use super::member::Member;
use super::table::Table;
use super::Entry;

/// An entry's details.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct About {
    pub note: String,
    pub actor: String,
    pub created_at: u64,
    pub exempt: bool,
}

impl About {
    pub fn of<M: Member>(e: &Entry<M>) -> About {
        About {
            note: e.note.clone(),
            actor: e.actor.clone(),
            created_at: e.created_at,
            exempt: e.exempt,
        }
    }
}

/// Member → details, as a snapshot or the events built them.
pub type AboutMap<M = IpNet> = HashMap<M, About>;

/// Record what an event applied to a table changes: an upsert sets the
/// entry's details, a remove or an expire drops them. `id_ms` is the event's
/// stream time: the created_at of an upsert written before events carried it.
pub fn note_event<M: Member>(map: &mut AboutMap<M>, ev: &Event<M>, id_ms: u64) {
    let Some(net) = ev.cidr.clone() else { return };
    match ev.op {
        Op::Upsert => {
            map.insert(
                net,
                About {
                    note: ev.note.clone(),
                    actor: ev.actor.clone(),
                    created_at: if ev.created_at > 0 {
                        ev.created_at
                    } else {
                        id_ms
                    },
                    exempt: ev.exempt,
                },
            );
        }
        Op::Remove | Op::Expire => {
            map.remove(&net);
        }
        Op::Restore => {}
    }
}

pub struct Details<M: Member = IpNet>(Mutex<AboutMap<M>>);

impl<M: Member> Default for Details<M> {
    fn default() -> Self {
        Details(Mutex::new(HashMap::new()))
    }
}

impl<M: Member> Details<M> {
    pub fn new(map: AboutMap<M>) -> Details<M> {
        Details(Mutex::new(map))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AboutMap<M>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace them all (a snapshot was loaded).
    pub fn replace(&self, map: AboutMap<M>) {
        *self.lock() = map;
    }

    /// Change them under the lock (events applied to the published table).
    pub fn update(&self, f: impl FnOnce(&mut AboutMap<M>)) {
        f(&mut self.lock());
    }

    /// The entries of `table` live at `now_ms`, sorted, with their details.
    pub fn entries_of(&self, table: &Table<M>, now_ms: u64) -> Vec<Entry<M>> {
        let map = self.lock();
        table
            .live_members(now_ms)
            .into_iter()
            .map(|(cidr, expires_at, payload)| {
                let about = map.get(&cidr).cloned().unwrap_or_default();
                Entry {
                    cidr,
                    expires_at,
                    note: about.note,
                    created_at: about.created_at,
                    actor: about.actor,
                    exempt: about.exempt,
                    payload,
                }
            })
            .collect()
    }
}

impl Details<IpNet> {
    /// Whether the entry of exactly `cidr` is marked exempt.
    pub fn exempt(&self, cidr: &IpNet) -> bool {
        self.lock().get(cidr).is_some_and(|a| a.exempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::table::Clock;

    fn ev(op: Op, created_at: u64) -> Event {
        Event {
            epoch: "e".into(),
            seq: 1,
            op,
            cidr: Some("203.0.113.0/24".parse().unwrap()),
            expires_at: 0,
            note: "office".into(),
            actor: "cli".into(),
            created_at,
            exempt: false,
            payload: Some(()),
        }
    }

    #[test]
    fn events_keep_the_details_of_the_entries_they_change() {
        let mut map = AboutMap::new();
        note_event(&mut map, &ev(Op::Upsert, 7), 99);
        let net: IpNet = "203.0.113.0/24".parse().unwrap();
        assert_eq!(map[&net].created_at, 7);
        assert_eq!(map[&net].note, "office");
        note_event(&mut map, &ev(Op::Upsert, 0), 99);
        assert_eq!(map[&net].created_at, 99, "an older event: its stream time");
        note_event(&mut map, &ev(Op::Expire, 0), 100);
        assert!(map.is_empty());
    }

    #[test]
    fn an_export_takes_the_tables_live_entries_and_their_details() {
        let mut t = Table::new("e".into(), 2, Clock::system());
        t.insert("203.0.113.0/24".parse().unwrap(), 0);
        t.insert("198.51.100.7/32".parse().unwrap(), 50);
        let mut map = AboutMap::new();
        note_event(&mut map, &ev(Op::Upsert, 7), 0);
        let details = Details::new(map);
        let entries = details.entries_of(&t, 100);
        assert_eq!(entries.len(), 1, "the expired one is left out");
        assert_eq!(
            (entries[0].note.as_str(), entries[0].created_at),
            ("office", 7)
        );
    }
}
