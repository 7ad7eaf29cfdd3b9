//! The overrides' table: rule → key → (expiry, limits), an exact match. A
//! lookup borrows the rule and key a request built (two hash probes, no
//! allocation, no lock, no Redis). A publish clones the maps (the follower
//! publishes once per batch of events; the IP lists' sharded copy-on-write
//! `family` would be the next step for very large override tables).

use std::collections::HashMap;

use crate::allowlist::expiry::{live, ExpiresAt};
use crate::allowlist::member::MemberSet;
use crate::allowlist::table::Table;

use super::key::OverrideKey;
use super::limits::OverrideLimits;

#[derive(Clone, Default)]
pub struct OverrideSet {
    rules: HashMap<String, HashMap<String, (ExpiresAt, OverrideLimits)>>,
    len: usize,
}

impl MemberSet<OverrideKey> for OverrideSet {
    fn insert(&mut self, m: OverrideKey, expires_at: ExpiresAt, limits: OverrideLimits) {
        let keys = self.rules.entry(m.rule).or_default();
        if keys.insert(m.key, (expires_at, limits)).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, m: &OverrideKey) {
        if let Some(keys) = self.rules.get_mut(&m.rule) {
            if keys.remove(&m.key).is_some() {
                self.len -= 1;
            }
            if keys.is_empty() {
                self.rules.remove(&m.rule);
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (OverrideKey, ExpiresAt, OverrideLimits)> + '_> {
        Box::new(self.rules.iter().flat_map(|(rule, keys)| {
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
        let (exp, limits) = self.set.rules.get(rule)?.get(key)?;
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
}
