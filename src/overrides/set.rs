//! The overrides' table: (rule, key) → (expiry, limits), an exact match. A
//! lookup borrows the rule and key a request built: one shard picked by
//! their hash, two hash probes, no allocation, no lock, no Redis.
//!
//! Split into `SHARDS` copy-on-write shards, as the IP lists' `family` is:
//! the follower changes its working table and publishes a clone, which
//! shares every shard; a change copies only the shard it touches
//! (`Arc::make_mut`), so publishing after one event costs 1/SHARDS of the
//! table, not all of it, and a node holds its overrides once.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::FxHasher;

use crate::allowlist::expiry::{live, ExpiresAt};
use crate::allowlist::member::MemberSet;
use crate::allowlist::table::Table;

use super::key::OverrideKey;
use super::limits::OverrideLimits;

const SHARDS: usize = 256;

/// rule → key → (expiry, limits).
type Shard = HashMap<String, HashMap<String, (ExpiresAt, OverrideLimits)>>;

#[derive(Clone)]
pub struct OverrideSet {
    shards: Vec<Arc<Shard>>,
    len: usize,
}

impl Default for OverrideSet {
    fn default() -> Self {
        OverrideSet {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            len: 0,
        }
    }
}

/// The shard of (rule, key): FxHash, fixed across processes and runs.
fn shard_of(rule: &str, key: &str) -> usize {
    let mut h = FxHasher::default();
    rule.hash(&mut h);
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl MemberSet<OverrideKey> for OverrideSet {
    fn insert(&mut self, m: OverrideKey, expires_at: ExpiresAt, limits: OverrideLimits) {
        let shard = Arc::make_mut(&mut self.shards[shard_of(&m.rule, &m.key)]);
        if shard
            .entry(m.rule)
            .or_default()
            .insert(m.key, (expires_at, limits))
            .is_none()
        {
            self.len += 1;
        }
    }

    fn remove(&mut self, m: &OverrideKey) {
        let i = shard_of(&m.rule, &m.key);
        let present = self.shards[i]
            .get(&m.rule)
            .is_some_and(|keys| keys.contains_key(&m.key));
        if !present {
            return;
        }
        let shard = Arc::make_mut(&mut self.shards[i]);
        if let Some(keys) = shard.get_mut(&m.rule) {
            keys.remove(&m.key);
            if keys.is_empty() {
                shard.remove(&m.rule);
            }
        }
        self.len -= 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (OverrideKey, ExpiresAt, OverrideLimits)> + '_> {
        Box::new(self.shards.iter().flat_map(|shard| {
            shard.iter().flat_map(|(rule, keys)| {
                keys.iter().map(move |(key, (exp, limits))| {
                    (
                        OverrideKey {
                            rule: rule.clone(),
                            key: key.clone(),
                        },
                        *exp,
                        limits.clone(),
                    )
                })
            })
        }))
    }
}

impl Table<OverrideKey> {
    /// The override of `rule` for `key` live now (Redis time), and when it ends (0: never).
    pub fn lookup(&self, rule: &str, key: &str) -> Option<(&OverrideLimits, ExpiresAt)> {
        self.lookup_at(rule, key, self.clock.now_ms())
    }

    /// The same at `now_ms`: an override past its expiry no longer
    /// matches, on every node at the same moment, before its event arrives.
    pub fn lookup_at(
        &self,
        rule: &str,
        key: &str,
        now_ms: u64,
    ) -> Option<(&OverrideLimits, ExpiresAt)> {
        let (exp, limits) = self.set.shards[shard_of(rule, key)].get(rule)?.get(key)?;
        live(*exp, now_ms).then_some((limits, *exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::table::Clock;

    #[test]
    fn an_exact_key_matches_until_it_expires() {
        let mut t = Table::<OverrideKey>::empty("e".into(), 0, Clock::system());
        let k = |key: &str| OverrideKey {
            rule: "api".into(),
            key: key.into(),
        };
        t.set.insert(k("acme"), 100, OverrideLimits::Unlimited);
        t.set.insert(k("acme"), 0, OverrideLimits::Deny);
        t.set.insert(k("beta"), 100, OverrideLimits::Unlimited);
        assert_eq!(t.len(), 2, "a second upsert replaces");
        assert_eq!(
            t.lookup_at("api", "acme", 500).unwrap().0,
            &OverrideLimits::Deny
        );
        assert!(t.lookup_at("api", "beta", 99).is_some());
        assert!(
            t.lookup_at("api", "beta", 100).is_none(),
            "expired at expires_at"
        );
        assert!(t.lookup_at("web", "acme", 1).is_none());
        t.set.remove(&k("acme"));
        assert!(t.lookup_at("api", "acme", 1).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_published_clone_keeps_its_entries_while_the_working_copy_changes() {
        let mut t = Table::<OverrideKey>::empty("e".into(), 0, Clock::system());
        for i in 0..1000 {
            let k = OverrideKey {
                rule: "api".into(),
                key: format!("k{i}"),
            };
            t.set.insert(k, 0, OverrideLimits::Unlimited);
        }
        let published = t.clone();
        t.set.remove(&OverrideKey {
            rule: "api".into(),
            key: "k7".into(),
        });
        assert!(published.lookup_at("api", "k7", 1).is_some());
        assert!(t.lookup_at("api", "k7", 1).is_none());
        assert_eq!((published.len(), t.len()), (1000, 999));
        let shared = (0..SHARDS)
            .filter(|&i| Arc::ptr_eq(&published.set.shards[i], &t.set.shards[i]))
            .count();
        assert_eq!(shared, SHARDS - 1, "only the touched shard was copied");
    }
}
