//! The RLS side of a rule: `domain`, `descriptor`, `allow_override`, `override_max`.

use std::collections::HashMap;

use super::super::raw::RawRule;
use super::Collector;
use crate::rate::Rate;
use crate::rule::{DescriptorEntry, DescriptorRule, MAX_DESCRIPTOR_ENTRIES};

/// The rule's descriptor part, or `None` (not an RLS rule, or a problem recorded).
pub(super) fn validate(c: &mut Collector<'_>, i: usize, r: &RawRule) -> Option<DescriptorRule> {
    let at = |field: &str| format!("rule[{i}].{field}");
    let (domain, descriptor) = match (&r.domain, &r.descriptor) {
        (None, None) => {
            if r.allow_override || r.override_max.is_some() {
                c.push(
                    at("allow_override"),
                    r.override_max.as_ref(),
                    "only a rule with a descriptor (Envoy's rate limit service) can take overrides",
                );
            }
            return None;
        }
        (Some(d), None) => {
            c.push(
                at("descriptor"),
                Some(d),
                "missing: a rule with a domain needs descriptor = [{ key = \"...\" }, ...]",
            );
            return None;
        }
        (None, Some(d)) => {
            c.push(at("domain"), Some(d), "missing: a rule with a descriptor needs domain = \"...\" (the domain Envoy's rate limit filter sends)");
            return None;
        }
        (Some(domain), Some(descriptor)) => (domain, descriptor),
    };
    let before = c.issues.len();
    if domain.get_ref().is_empty() {
        c.push(at("domain"), Some(domain), "must not be empty");
    }
    let entries = descriptor.get_ref();
    if entries.is_empty() || entries.len() > MAX_DESCRIPTOR_ENTRIES {
        c.push(
            at("descriptor"),
            Some(descriptor),
            format!("needs 1 to {MAX_DESCRIPTOR_ENTRIES} entries"),
        );
    }
    for (j, e) in entries.iter().enumerate() {
        if e.key.is_empty() {
            c.push(
                at(&format!("descriptor[{j}].key")),
                Some(descriptor),
                "must not be empty",
            );
        }
        if e.value.as_deref() == Some("") {
            c.push(
                at(&format!("descriptor[{j}].value")),
                Some(descriptor),
                "must not be empty (leave value out to match any value and count by it)",
            );
        }
    }
    if r.key.span() != (0..0) {
        c.push(
            at("key"),
            Some(&r.key),
            "a descriptor rule counts by the values of its entries without a value; remove key",
        );
    }
    let m = &r.matcher;
    if m.path.is_some()
        || m.path_prefix.is_some()
        || m.path_starts_with.is_some()
        || m.methods.is_some()
        || m.host.is_some()
    {
        c.push(at("match"), Some(descriptor), "a descriptor rule answers Envoy's rate limit service, which sends descriptors, not requests; remove match");
    }
    if r.allowlist.get_ref() != "ignore" {
        c.push(at("allowlist"), Some(&r.allowlist), "a descriptor rule has no client address to look up; gate with a rule that /check or ext_authz applies");
    }
    let override_max = match (r.allow_override, &r.override_max) {
        (false, None) => None,
        (true, None) => {
            c.push(at("override_max"), Some(descriptor), "missing: allow_override = true needs override_max, the highest rate a descriptor's limit may set, e.g. \"1000/s\"");
            None
        }
        (false, Some(max)) => {
            c.push(
                at("override_max"),
                Some(max),
                "has no effect without allow_override = true",
            );
            None
        }
        (true, Some(max)) => c.parse::<Rate>(&at("override_max"), max),
    };
    if c.issues.len() > before {
        return None;
    }
    Some(DescriptorRule {
        domain: domain.get_ref().clone(),
        entries: entries
            .iter()
            .map(|e| DescriptorEntry {
                key: e.key.clone(),
                value: e.value.clone(),
            })
            .collect(),
        override_max,
    })
}

/// Two rules with the same domain and descriptor would make the answer
/// depend on their order: refuse the later one.
pub(super) fn duplicates(c: &mut Collector<'_>, rules: &[RawRule]) {
    type Pattern = (String, Vec<(String, Option<String>)>);
    let mut seen: HashMap<Pattern, usize> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        let (Some(domain), Some(descriptor)) = (&r.domain, &r.descriptor) else {
            continue;
        };
        let pattern = (
            domain.get_ref().clone(),
            descriptor
                .get_ref()
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
        );
        if let Some(first) = seen.get(&pattern) {
            c.push(
                format!("rule[{i}].descriptor"),
                Some(descriptor),
                format!("rule[{first}] already has this domain and descriptor"),
            );
        } else {
            seen.insert(pattern, i);
        }
    }
}
