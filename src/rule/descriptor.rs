//! Rules for Envoy's rate limit service (RLS): which `(domain, descriptor)`
//! a rule answers, and the counter key a descriptor gets.
//!
//! As in envoyproxy/ratelimit, a descriptor is a list of `key=value` entries.
//! A rule's entry with a value matches only that value; an entry without one
//! matches any value, and that value becomes part of the counter key (one
//! counter per remote address, say). A descriptor matches a rule when it has
//! the same keys in the same order; when several rules match, the one with an
//! exact value earliest wins (Envoy's service walks its tree trying
//! `key_value` before `key` at every level).

use crate::keys::bounded_part;
use crate::rate::Rate;

/// The RLS side of a rule (`domain` + `descriptor` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorRule {
    pub domain: String,
    pub entries: Vec<DescriptorEntry>,
    /// `Some` when `allow_override = true`: a descriptor's own `limit`
    /// (RateLimitOverride) replaces the rule's limits, capped at this rate.
    pub override_max: Option<Rate>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorEntry {
    pub key: String,
    /// `None`: any value, and the value is part of the counter key.
    pub value: Option<String>,
}

/// Most entries a rule's descriptor may have (Envoy's are a handful; the
/// bound keeps [`DescriptorRule::matches`]' specificity a plain integer).
pub const MAX_ENTRIES: usize = 16;

impl DescriptorRule {
    /// How specifically this rule matches a descriptor, or `None`.
    /// Bigger is more specific: bit `MAX_ENTRIES - 1 - i` is set when entry
    /// `i` matched by exact value, so an exact value earlier outranks any later.
    pub fn matches<'e>(
        &self,
        domain: &str,
        entries: impl ExactSizeIterator<Item = (&'e str, &'e str)>,
    ) -> Option<u32> {
        if self.domain != domain || entries.len() != self.entries.len() {
            return None;
        }
        let mut specificity = 0u32;
        for (i, ((key, value), want)) in entries.zip(&self.entries).enumerate() {
            if key != want.key {
                return None;
            }
            match &want.value {
                Some(v) if v == value => specificity |= 1 << (MAX_ENTRIES - 1 - i),
                Some(_) => return None,
                None => {}
            }
        }
        Some(specificity)
    }

    /// The counter key of a matching descriptor: the values of the entries
    /// without a configured value, joined with `+`. `%` and `+` inside a value
    /// are percent-encoded so that two different descriptors never share a key;
    /// a value over 128 bytes is bounded like any key part (`keys::bounded_part`).
    /// A rule whose entries all have values counts every caller in one key (`""`).
    pub fn key<'e>(&self, entries: impl Iterator<Item = (&'e str, &'e str)>) -> String {
        let mut out = String::new();
        let mut first = true;
        for ((_, value), want) in entries.zip(&self.entries) {
            if want.value.is_some() {
                continue;
            }
            if !first {
                out.push('+');
            }
            first = false;
            for ch in bounded_part(value).chars() {
                match ch {
                    '%' => out.push_str("%25"),
                    '+' => out.push_str("%2B"),
                    c => out.push(c),
                }
            }
        }
        out
    }
}

impl std::fmt::Display for DescriptorRule {
    /// `domain "edge": remote_address, path=/login` (for `config check`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "domain {:?}:", self.domain)?;
        for (i, e) in self.entries.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            match &e.value {
                Some(v) => write!(f, "{sep}{}={v}", e.key)?,
                None => write!(f, "{sep}{}", e.key)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(entries: &[(&str, Option<&str>)]) -> DescriptorRule {
        DescriptorRule {
            domain: "edge".into(),
            entries: entries
                .iter()
                .map(|(k, v)| DescriptorEntry {
                    key: k.to_string(),
                    value: v.map(str::to_string),
                })
                .collect(),
            override_max: None,
        }
    }

    fn m(r: &DescriptorRule, domain: &str, d: &[(&str, &str)]) -> Option<u32> {
        r.matches(domain, d.iter().copied())
    }

    #[test]
    fn a_key_without_value_matches_any_value_and_keys_the_counter() {
        let r = rule(&[("remote_address", None), ("path", Some("/login"))]);
        let d = [("remote_address", "10.0.0.1"), ("path", "/login")];
        assert!(m(&r, "edge", &d).is_some());
        assert_eq!(r.key(d.iter().copied()), "10.0.0.1");
        assert_eq!(
            m(&r, "edge", &[("remote_address", "x"), ("path", "/other")]),
            None
        );
        assert_eq!(m(&r, "other", &d), None, "another domain");
        assert_eq!(m(&r, "edge", &d[..1]), None, "fewer entries");
        assert_eq!(
            m(&r, "edge", &[("path", "/login"), ("remote_address", "x")]),
            None
        );
    }

    #[test]
    fn an_exact_value_earlier_outranks_one_later() {
        let first_exact = rule(&[("a", Some("1")), ("b", None)]);
        let second_exact = rule(&[("a", None), ("b", Some("2"))]);
        let d = [("a", "1"), ("b", "2")];
        assert!(m(&first_exact, "edge", &d) > m(&second_exact, "edge", &d));
        assert!(m(&second_exact, "edge", &d) > m(&rule(&[("a", None), ("b", None)]), "edge", &d));
    }

    #[test]
    fn keys_of_different_descriptors_differ() {
        let r = rule(&[("a", None), ("b", None)]);
        let k1 = r.key([("a", "x+y"), ("b", "z")].into_iter());
        let k2 = r.key([("a", "x"), ("b", "y+z")].into_iter());
        assert_eq!(k1, "x%2By+z");
        assert_ne!(k1, k2);
        assert_eq!(rule(&[("a", Some("1"))]).key([("a", "1")].into_iter()), "");
        let long = "x".repeat(7000);
        let k = rule(&[("a", None)]).key([("a", long.as_str())].into_iter());
        assert!(k.len() <= 105 && k.contains('#'), "{k}");
    }
}
