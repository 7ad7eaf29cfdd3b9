//! A node's copy of a list: its member set (for the IP lists, longest-prefix
//! tables for IPv4 and IPv6: `Networks`), the position in the event sequence
//! it reflects, and a clock in Redis time.
//!
//! Request handlers read a `Table` through `ArcSwap` (see `Allowlist`), so a
//! lookup never waits on a lock or on Redis. The owner (the follower, or the
//! embedded store) changes its own copy and publishes a clone; the clone
//! shares all but the shards changed since (see `family`).

use std::net::IpAddr;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::event::{Event, Op};
use super::expiry::{live, ExpiresAt};
use super::family::Family;
use super::member::{Member, MemberSet};
use super::status::Reason;
use super::Entry;

/// Redis time (ms since the Unix epoch), estimated on this node: a reading of
/// Redis `TIME` taken at a monotonic instant, plus the time elapsed since.
/// Wall-clock steps on the node do not move it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    base: Instant,
    base_ms: u64,
}

impl Clock {
    /// `reference_ms` was the reference time at `at`.
    pub fn synced(reference_ms: u64, at: Instant) -> Clock {
        Clock {
            base: at,
            base_ms: reference_ms,
        }
    }

    /// The node's own clock (the embedded store has no Redis).
    pub fn system() -> Clock {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock::synced(ms, Instant::now())
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

/// What applying one event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The table cannot follow this event; load a fresh snapshot.
    Resync(Reason),
}

/// The IP lists' member set: a longest-prefix map per family.
#[derive(Clone, Default)]
pub struct Networks {
    v4: Family<u32>,
    v6: Family<u128>,
}

impl MemberSet<IpNet> for Networks {
    fn insert(&mut self, net: IpNet, expires_at: ExpiresAt, _: ()) {
        match net {
            IpNet::V4(n) => self
                .v4
                .insert(n.network().into(), n.prefix_len(), expires_at),
            IpNet::V6(n) => self
                .v6
                .insert(n.network().into(), n.prefix_len(), expires_at),
        }
    }

    fn remove(&mut self, net: &IpNet) {
        match net {
            IpNet::V4(n) => self.v4.remove(n.network().into(), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(n.network().into(), n.prefix_len()),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// IPv4 first; unordered within a family (`live_entries` sorts).
    fn iter(&self) -> Box<dyn Iterator<Item = (IpNet, ExpiresAt, ())> + '_> {
        let v4 = self.v4.iter().map(|(bits, len, e)| {
            (
                IpNet::V4(Ipv4Net::new(bits.into(), len).expect("stored length is valid")),
                e,
                (),
            )
        });
        Box::new(v4.chain(self.v6.iter().map(|(bits, len, e)| {
            (
                IpNet::V6(Ipv6Net::new(bits.into(), len).expect("stored length is valid")),
                e,
                (),
            )
        })))
    }

    fn reserve(&mut self, total: usize, sample: &[Entry]) {
        // HSCAN's order is random: the first page's mix of families stands for the list.
        let v4 = sample.iter().filter(|e| e.cidr.addr().is_ipv4()).count();
        let share = |k: usize| total.saturating_mul(k) / sample.len().max(1);
        self.v4.reserve(share(v4));
        self.v6.reserve(share(sample.len() - v4));
    }
}

/// A node's copy of one list: its members, the position in the event
/// sequence they reflect, and a clock in Redis time. The same for every
/// kind of list (`member`); lookups are the kind's own (`Table<IpNet>`
/// below, `crate::overrides` for overrides).
pub struct Table<M: Member = IpNet> {
    pub set: M::Set,
    /// The dataset these entries belong to; empty before its first write.
    pub epoch: String,
    /// The last event applied (0: none).
    pub seq: u64,
    /// Stream id of the last event read (`0-0`: none); a follower tails from here.
    pub last_id: String,
    pub clock: Clock,
}

impl<M: Member> Clone for Table<M> {
    fn clone(&self) -> Self {
        Table {
            set: self.set.clone(),
            epoch: self.epoch.clone(),
            seq: self.seq,
            last_id: self.last_id.clone(),
            clock: self.clock,
        }
    }
}

impl<M: Member> Table<M> {
    /// An empty table at (`epoch`, `seq`).
    pub fn empty(epoch: String, seq: u64, clock: Clock) -> Table<M> {
        Table {
            set: M::Set::default(),
            epoch,
            seq,
            last_id: "0-0".into(),
            clock,
        }
    }

    pub fn of_entries<'a>(
        epoch: String,
        seq: u64,
        clock: Clock,
        entries: impl IntoIterator<Item = &'a Entry<M>>,
    ) -> Table<M> {
        let mut t = Table::<M>::empty(epoch, seq, clock);
        for e in entries {
            t.set
                .insert(e.cidr.clone(), e.expires_at, e.payload.clone());
        }
        t
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The members live at `now_ms` with their expiry and payload, sorted.
    pub fn live_members(&self, now_ms: u64) -> Vec<(M, ExpiresAt, M::Payload)> {
        let mut live: Vec<_> = self
            .set
            .iter()
            .filter(|(_, e, _)| live(*e, now_ms))
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        live
    }

    /// How many members are live at `now_ms`.
    pub fn live_count(&self, now_ms: u64) -> usize {
        self.set.iter().filter(|(_, e, _)| live(*e, now_ms)).count()
    }

    /// The earliest expiry after `now_ms` (when the live set changes next by itself).
    pub fn next_expiry(&self, now_ms: u64) -> Option<ExpiresAt> {
        self.set
            .iter()
            .map(|(_, e, _)| e)
            .filter(|&e| e != 0 && e > now_ms)
            .min()
    }

    /// Apply one event in `seq` order.
    pub fn apply(&mut self, ev: &Event<M>) -> Applied {
        // Events come from XREAD after this table's `last_id`, and every write
        // moves `seq` and `last_id` together in one script: an event there whose
        // `seq` is not above ours means the stream's history was rewritten
        // (failover to a lagging replica, AOF loss). Only a snapshot is safe then.
        if ev.op == Op::Restore {
            // A new dataset replaced the old one whole: only a snapshot has it.
            if ev.epoch == self.epoch && ev.seq <= self.seq {
                return Applied::Resync(Reason::Backwards);
            }
            return Applied::Resync(Reason::Epoch);
        }
        if self.epoch.is_empty() && self.seq == 0 && ev.seq == 1 {
            // The snapshot saw an empty dataset; this is its first write.
            self.epoch = ev.epoch.clone();
        }
        if ev.epoch != self.epoch {
            return Applied::Resync(Reason::Epoch);
        }
        if ev.seq <= self.seq {
            return Applied::Resync(Reason::Backwards);
        }
        if ev.seq != self.seq + 1 {
            return Applied::Resync(Reason::Gap);
        }
        match (ev.op, &ev.cidr, &ev.payload) {
            (Op::Upsert, Some(m), Some(p)) => self.set.insert(m.clone(), ev.expires_at, p.clone()),
            (Op::Remove | Op::Expire, Some(m), _) => self.set.remove(m),
            // The parser never yields these: refuse rather than half-apply.
            _ => return Applied::Resync(Reason::UnknownEvent),
        }
        self.seq = ev.seq;
        Applied::Applied
    }
}

impl Table<IpNet> {
    pub fn new(epoch: String, seq: u64, clock: Clock) -> Table {
        Table::empty(epoch, seq, clock)
    }

    pub fn from_entries<'a>(
        epoch: String,
        seq: u64,
        clock: Clock,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Table {
        Table::of_entries(epoch, seq, clock, entries)
    }

    pub fn insert(&mut self, net: IpNet, expires_at: ExpiresAt) {
        self.set.insert(net, expires_at, ());
    }

    pub fn remove(&mut self, net: &IpNet) {
        self.set.remove(net);
    }

    /// Every network with its expiry, IPv4 first; unordered within a family
    /// (`live_entries` sorts).
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, ExpiresAt)> + '_ {
        self.set.iter().map(|(n, e, ())| (n, e))
    }

    /// The networks live at `now_ms`, sorted.
    pub fn live_entries(&self, now_ms: u64) -> Vec<(IpNet, ExpiresAt)> {
        let mut live: Vec<_> = self.entries().filter(|(_, e)| live(*e, now_ms)).collect();
        live.sort();
        live
    }

    /// The longest live network holding `ip`, now (Redis time).
    pub fn lookup(&self, ip: IpAddr) -> Option<(IpNet, ExpiresAt)> {
        self.lookup_at(ip, self.clock.now_ms())
    }

    /// The longest network holding `ip` that is live at `now_ms`. When the
    /// longest one has expired (its event not yet here), a shorter live one
    /// still matches. No allocation: one hash probe per prefix length present.
    pub fn lookup_at(&self, ip: IpAddr, now_ms: u64) -> Option<(IpNet, ExpiresAt)> {
        match crate::client_ip::canonical(ip) {
            IpAddr::V4(a) => self
                .set
                .v4
                .longest(u32::from(a), now_ms)
                .map(|(len, e)| (IpNet::V4(Ipv4Net::new(a, len).expect("valid").trunc()), e)),
            IpAddr::V6(a) => self
                .set
                .v6
                .longest(u128::from(a), now_ms)
                .map(|(len, e)| (IpNet::V6(Ipv6Net::new(a, len).expect("valid").trunc()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, u64)]) -> Table {
        let mut t = Table::new("e".into(), 0, Clock::system());
        for (net, exp) in entries {
            t.insert(net.parse().unwrap(), *exp);
        }
        t
    }

    fn hit(t: &Table, ip: &str, now: u64) -> Option<String> {
        t.lookup_at(ip.parse().unwrap(), now)
            .map(|(n, _)| n.to_string())
    }

    #[test]
    fn the_longest_prefix_matches() {
        let t = table(&[("10.0.0.0/8", 0), ("10.1.2.0/24", 0), ("2001:db8::/32", 0)]);
        assert_eq!(hit(&t, "10.1.2.3", 5).as_deref(), Some("10.1.2.0/24"));
        assert_eq!(hit(&t, "10.9.9.9", 5).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(hit(&t, "11.0.0.1", 5), None);
        assert_eq!(hit(&t, "2001:db8::1", 5).as_deref(), Some("2001:db8::/32"));
        assert_eq!(hit(&t, "2001:db9::1", 5), None);
    }

    #[test]
    fn an_ipv4_mapped_client_matches_the_ipv4_entry() {
        let t = table(&[("203.0.113.0/24", 0)]);
        assert_eq!(
            hit(&t, "::ffff:203.0.113.9", 5).as_deref(),
            Some("203.0.113.0/24")
        );
    }

    #[test]
    fn an_expired_longer_prefix_falls_back_to_a_live_shorter_one() {
        let t = table(&[
            ("10.0.0.0/8", 1_000),
            ("10.1.0.0/16", 0),
            ("10.1.2.0/24", 100),
            ("10.1.2.3/32", 50),
        ]);
        assert_eq!(hit(&t, "10.1.2.3", 10).as_deref(), Some("10.1.2.3/32"));
        assert_eq!(hit(&t, "10.1.2.3", 50).as_deref(), Some("10.1.2.0/24"));
        assert_eq!(hit(&t, "10.1.2.3", 100).as_deref(), Some("10.1.0.0/16"));
        assert_eq!(hit(&t, "10.2.0.1", 999).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(
            hit(&t, "10.2.0.1", 1_000),
            None,
            "expires at its expires_at"
        );
    }

    fn ev(seq: u64, op: Op, cidr: &str) -> Event {
        Event {
            epoch: "e".into(),
            seq,
            op,
            cidr: Some(cidr.parse().unwrap()),
            expires_at: 0,
            note: String::new(),
            actor: String::new(),
            created_at: 0,
            exempt: false,
            payload: Some(()),
        }
    }

    #[test]
    fn events_apply_in_order_and_a_repeated_seq_gaps_and_epochs_resync() {
        let mut t = table(&[]);
        assert_eq!(t.apply(&ev(1, Op::Upsert, "10.0.0.0/8")), Applied::Applied);
        assert_eq!(
            t.apply(&ev(1, Op::Remove, "10.0.0.0/8")),
            Applied::Resync(Reason::Backwards)
        );
        assert_eq!(hit(&t, "10.0.0.1", 1).as_deref(), Some("10.0.0.0/8"));
        assert_eq!(t.apply(&ev(2, Op::Expire, "10.0.0.0/8")), Applied::Applied);
        assert_eq!(hit(&t, "10.0.0.1", 1), None);
        assert!(matches!(
            t.apply(&ev(4, Op::Upsert, "10.0.0.0/8")),
            Applied::Resync(_)
        ));
        let mut other = ev(3, Op::Upsert, "10.0.0.0/8");
        other.epoch = "f".into();
        assert!(matches!(t.apply(&other), Applied::Resync(_)));
        assert_eq!(t.seq, 2);
    }

    #[test]
    fn a_restore_event_always_resyncs() {
        let mut t = table(&[("10.0.0.0/8", 0)]);
        let restore = |epoch: &str, seq| Event {
            epoch: epoch.into(),
            seq,
            op: Op::Restore,
            cidr: None,
            expires_at: 0,
            note: String::new(),
            actor: String::new(),
            created_at: 0,
            exempt: false,
            payload: Some(()),
        };
        assert_eq!(t.apply(&restore("new", 1)), Applied::Resync(Reason::Epoch));
        t.epoch = "new".into();
        t.seq = 1;
        assert_eq!(
            t.apply(&restore("new", 1)),
            Applied::Resync(Reason::Backwards)
        );
        assert_eq!(t.len(), 1, "nothing half-applied");
    }

    #[test]
    fn an_empty_snapshot_adopts_the_epoch_of_the_first_write() {
        let mut t = Table::new(String::new(), 0, Clock::system());
        let mut first = ev(1, Op::Upsert, "10.0.0.0/8");
        first.epoch = "new".into();
        assert_eq!(t.apply(&first), Applied::Applied);
        assert_eq!(t.epoch, "new");
    }
}
