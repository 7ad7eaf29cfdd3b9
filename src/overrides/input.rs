//! Validation of a new override, shared by the admin API and the CLI (which
//! goes through the API). Everything is checked against the running config
//! before any script runs: bad input writes nothing, and the error names
//! the field (`rule`, `key`, `limits`, `limits[i]`, `ttl`, `note`).
//!
//! The rates an override gives must be ones the rule's algorithm takes, with
//! the caps every charge meets (`check::caps`: counts within
//! `api.max_limit`/`api.max_log_limit`, periods within `api.max_period`,
//! gcra's burst × period bound; an override's gcra bucket is its own limit,
//! not the rule's `burst`). The key must be one the rule can build: at most
//! `api.max_key_bytes`, and at most what the rule's parts allow (each part
//! at most 128 bytes verbatim, `keys::bounded_part`: a longer value is
//! counted under its hashed form, which is the key to give then).

use crate::allowlist::input::{self, NewEntry, MAX_NOTE_BYTES};
use crate::check::{caps, LimitSpec};
use crate::config::Config;
use crate::keys::MAX_KEY_PART_BYTES;
use crate::rule::Rule;

use super::key::OverrideKey;
use super::limits::OverrideLimits;

/// What an operator asks for, as the API body and the CLI carry it.
pub struct Wanted<'a> {
    pub rule: &'a str,
    pub key: &'a str,
    pub limits: &'a serde_json::Value,
    pub ttl: Option<&'a str>,
    pub note: Option<&'a str>,
    pub actor: String,
}

fn bad(field: &str, message: impl Into<String>) -> (String, String) {
    (field.to_string(), message.into())
}

/// The rule an override names: configured, and with limits to replace.
pub fn rule<'c>(config: &'c Config, name: &str) -> Result<&'c Rule, (String, String)> {
    let rule = config
        .rules
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| bad("rule", format!("no rule named {name:?} in the config")))?;
    if rule.limits.is_empty() {
        return Err(bad(
            "rule",
            format!("{name:?} is a pure allowlist gate: it has no limits to override"),
        ));
    }
    Ok(rule)
}

/// The key as `rule` builds it: 1 to `api.max_key_bytes` bytes, and no
/// longer than the rule's keys can be (`rule_key_bound`).
pub fn key(config: &Config, rule: &Rule, key: &str) -> Result<(), (String, String)> {
    let max = config.api.max_key_bytes;
    if key.is_empty() || key.len() > max {
        return Err(bad(
            "key",
            format!("must be 1 to {max} bytes (api.max_key_bytes)"),
        ));
    }
    let bound = rule_key_bound(rule);
    if key.len() > bound {
        return Err(bad(
            "key",
            format!(
                "is {} bytes; rule {:?} builds keys of at most {bound} (each part at most {MAX_KEY_PART_BYTES} bytes verbatim; a longer value is counted under its hashed form: give that)",
                key.len(),
                rule.name
            ),
        ));
    }
    Ok(())
}

/// The longest key `rule` can build: its parts joined with `+`, each at
/// most `MAX_KEY_PART_BYTES` (an address is shorter); a descriptor's value
/// may be percent-encoded (`%`, `+`: 3 bytes each).
pub fn rule_key_bound(rule: &Rule) -> usize {
    let (parts, per_part) = match &rule.descriptor {
        Some(d) => (
            d.entries.iter().filter(|e| e.value.is_none()).count(),
            MAX_KEY_PART_BYTES * 3,
        ),
        None => (rule.key.0.len(), MAX_KEY_PART_BYTES),
    };
    (parts * (per_part + 1)).saturating_sub(1)
}

/// Check a new override; the error is (field, message).
pub fn new_override(
    config: &Config,
    w: &Wanted<'_>,
) -> Result<NewEntry<OverrideKey>, (String, String)> {
    let rule = rule(config, w.rule)?;
    key(config, rule, w.key)?;
    let limits = match w.limits {
        serde_json::Value::String(s) if s == "unlimited" => OverrideLimits::Unlimited,
        serde_json::Value::String(s) if s == "deny" => OverrideLimits::Deny,
        serde_json::Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let text = item
                    .as_str()
                    .ok_or_else(|| bad(&format!("limits[{i}]"), "a rate like \"100/m\""))?;
                list.push(text.to_string());
            }
            let rates = caps::rates(&list, rule.algorithm, &config.api)
                .map_err(|e| (e.field, e.message))?;
            let spec = LimitSpec {
                limits: &rates,
                burst: None,
                ..LimitSpec::from(rule)
            };
            caps::admit(&config.api, &spec, 1).map_err(|r| match r.field {
                caps::CapField::Limit(i) => bad(&format!("limits[{i}]"), r.message),
                _ => bad("limits", r.message),
            })?;
            OverrideLimits::Rates(rates)
        }
        _ => {
            return Err(bad(
                "limits",
                "rates like [\"100/m\"], \"unlimited\" or \"deny\"",
            ))
        }
    };
    // No TTL: permanent (an operator's deliberate change stays until removed).
    let ttl_ms = match w.ttl {
        None => 0,
        Some(t) => {
            let cfg = crate::config::AllowlistConfig {
                allow_permanent: true,
                ..config.overrides.clone()
            };
            input::parse_ttl(t, &cfg).map_err(|e| bad("ttl", e.to_string()))?
        }
    };
    let note = w.note.unwrap_or_default();
    if note.len() > MAX_NOTE_BYTES {
        return Err(bad(
            "note",
            format!("is {} bytes; at most {MAX_NOTE_BYTES} are kept", note.len()),
        ));
    }
    Ok(NewEntry {
        cidr: OverrideKey {
            rule: w.rule.to_string(),
            key: w.key.to_string(),
        },
        ttl_ms,
        note: note.to_string(),
        actor: w.actor.clone(),
        new_epoch: false,
        exempt: false,
        payload: limits,
    })
}
