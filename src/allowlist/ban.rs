//! A rule's ban step on the denylist (`src/ban.rs` drives it): count one
//! limited answer for an address and, when that makes an offence, write the
//! deny entry through the list's one upsert. In Redis, one atomic script
//! (`lua/deny_ban.lua`, its half in `redis_store/ban.rs`); with the embedded
//! store the same semantics under one lock here.

use std::collections::HashMap;
use std::sync::Mutex;

use ipnet::IpNet;

use super::recovery::WriteError;
use super::{Allowlist, Backend, NewEntry, Stored};
use crate::rule::ban::Ban;

/// One limited answer to count.
pub struct BanAsk<'a> {
    /// The address, or its IPv6 network.
    pub cidr: IpNet,
    pub rule: &'a str,
    pub ban: &'a Ban,
    /// Count and tell, write nothing (`shadow = true`).
    pub shadow: bool,
}

impl BanAsk<'_> {
    /// Who the entry names: `rule:<name>`, or `shadow:<name>`.
    pub fn actor(&self) -> String {
        let who = if self.shadow { "shadow" } else { "rule" };
        format!("{who}:{}", self.rule)
    }
}

#[derive(Debug)]
pub enum BanAnswer {
    /// A live entry holds this network already: nothing counted, nothing written.
    AlreadyDenied,
    /// `n` limited answers of `after` so far.
    Counted(u64),
    /// This offence banned the address: the entry as written.
    Banned {
        stored: Stored,
        offence: u64,
        ttl_ms: u64,
    },
    /// A shadow rule's offence: what would have been written.
    Shadow {
        offence: u64,
        ttl_ms: u64,
        note: String,
    },
}

impl Allowlist {
    /// Count one limited answer of a banning rule; ban on an offence.
    pub async fn ban(&self, ask: &BanAsk<'_>) -> Result<BanAnswer, WriteError> {
        match &self.backend {
            Backend::Redis(r) => r.ban(ask).await,
            Backend::Local(l) => {
                // One lock for the whole step: check, count, write.
                let mut counts = self.bans.lock().unwrap_or_else(|p| p.into_inner());
                let now = self.table.load().clock.now_ms();
                if self.holds_exactly(&ask.cidr, now) {
                    return Ok(BanAnswer::AlreadyDenied);
                }
                let offence = match counts.count(ask, now) {
                    Err(n) => return Ok(BanAnswer::Counted(n)),
                    Ok(offence) => offence,
                };
                let ttl_ms = ask.ban.length(offence).as_millis() as u64;
                let note = ask.ban.note(ask.rule, offence);
                if ask.shadow {
                    return Ok(BanAnswer::Shadow {
                        offence,
                        ttl_ms,
                        note,
                    });
                }
                let new = NewEntry {
                    cidr: ask.cidr,
                    ttl_ms,
                    note,
                    actor: ask.actor(),
                    new_epoch: false,
                    exempt: false,
                    payload: (),
                };
                Ok(BanAnswer::Banned {
                    stored: l.upsert(&new, &self.table),
                    offence,
                    ttl_ms,
                })
            }
        }
    }

    /// Wait until this node's table has applied `seq` (the follower caught
    /// up to a write of this node), at most `wait`; whether it did.
    pub async fn applied(&self, seq: u64, wait: std::time::Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let caught_up = tokio::time::timeout(wait, async {
            while self.table.load().seq < seq {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        });
        caught_up.await.unwrap_or(false)
    }

    /// Whether an exempt entry holds `ip` (never banned automatically).
    /// The longest live entry holding `ip` decides (as for every lookup):
    /// this node's table and the details it keeps, never Redis.
    pub fn exempts(&self, ip: std::net::IpAddr) -> bool {
        let table = self.table.load();
        let Some((net, _)) = table.lookup_at(ip, table.clock.now_ms()) else {
            return false;
        };
        match &self.backend {
            Backend::Local(l) => l.exempt(&net),
            Backend::Redis(_) => self.details.exempt(&net),
        }
    }

    /// A live entry of exactly `cidr` (as the script's check: the entry a ban would write).
    fn holds_exactly(&self, cidr: &IpNet, now: u64) -> bool {
        let table = self.table.load();
        table
            .lookup_at(cidr.network(), now)
            .is_some_and(|(net, _)| net == *cidr)
    }
}

/// The embedded store's counts: per rule and network, the current window's
/// limited answers and the offences still remembered. Pruned of what has
/// ended whenever it grows past `PRUNE_AT`, so it holds about the addresses
/// limited within the longest `within`/`remember`.
#[derive(Default)]
pub(super) struct LocalBans {
    /// (rule, network) -> (answers, window end ms).
    windows: HashMap<(String, IpNet), (u64, u64)>,
    /// (rule, network) -> (offences, forgotten at ms).
    offences: HashMap<(String, IpNet), (u64, u64)>,
}

const PRUNE_AT: usize = 10_000;

impl LocalBans {
    /// `Ok(offence)` when this answer makes one (the window starts over), else `Err(answers so far)`.
    fn count(&mut self, ask: &BanAsk<'_>, now: u64) -> Result<u64, u64> {
        if self.windows.len() + self.offences.len() > PRUNE_AT {
            self.windows.retain(|_, (_, end)| *end > now);
            self.offences.retain(|_, (_, end)| *end > now);
        }
        let id = (ask.rule.to_string(), ask.cidr);
        let w = self.windows.entry(id.clone()).or_insert((0, 0));
        if w.1 <= now {
            *w = (0, now + ask.ban.within_ms());
        }
        w.0 += 1;
        if w.0 < ask.ban.after {
            return Err(w.0);
        }
        self.windows.remove(&id);
        let o = self.offences.entry(id).or_insert((0, 0));
        if o.1 <= now {
            o.0 = 0;
        }
        *o = (o.0 + 1, now + ask.ban.remember_ms());
        Ok(o.0)
    }
}

pub(super) type Bans = Mutex<LocalBans>;
