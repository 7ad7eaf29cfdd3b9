//! An override's member: a rule and one key of it. Its canonical text, the
//! member's name in Redis and in events, is `rule/key`: a rule name never
//! holds a `/` (letters, digits, `_`, `-`, `.`), so the first `/` splits it,
//! and the key is kept as the rule builds it, byte for byte.

use std::fmt;

use crate::allowlist::member::Member;

use super::limits::OverrideLimits;
use super::set::OverrideSet;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OverrideKey {
    pub rule: String,
    pub key: String,
}

/// A rule name as the config accepts it.
pub fn is_rule_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl fmt::Display for OverrideKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.rule, self.key)
    }
}

impl Member for OverrideKey {
    type Payload = OverrideLimits;
    type Set = OverrideSet;

    fn parse(text: &str) -> Result<OverrideKey, String> {
        match text.split_once('/') {
            Some((rule, key)) if is_rule_name(rule) && !key.is_empty() => Ok(OverrideKey {
                rule: rule.to_string(),
                key: key.to_string(),
            }),
            _ => Err(format!("{text:?} is not RULE/KEY")),
        }
    }

    fn payload(json: Option<&serde_json::Value>) -> Result<OverrideLimits, String> {
        let json = json.ok_or("an override without limits")?;
        OverrideLimits::from_json(json)
    }

    fn payload_json(limits: &OverrideLimits) -> Option<serde_json::Value> {
        Some(limits.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_slash_splits_rule_and_key() {
        let k = OverrideKey::parse("api/tenant/acme").unwrap();
        assert_eq!((k.rule.as_str(), k.key.as_str()), ("api", "tenant/acme"));
        assert_eq!(k.to_string(), "api/tenant/acme");
        for bad in ["api", "api/", "/key", "9api/key", "a b/key"] {
            assert!(OverrideKey::parse(bad).is_err(), "{bad}");
        }
    }

    /// The lists' event parser reads an override's upsert whole: its member
    /// and its payload; one without limits is refused (then a resync).
    #[test]
    fn an_override_event_carries_its_limits() {
        use crate::allowlist::event::{Event, Op};
        use std::collections::HashMap;
        let fields = |pairs: &[(&str, &str)]| -> HashMap<String, redis::Value> {
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        redis::Value::BulkString(v.as_bytes().to_vec()),
                    )
                })
                .collect()
        };
        let mut pairs = vec![
            ("epoch", "e"),
            ("seq", "3"),
            ("op", "upsert"),
            ("cidr", "api/tenant acme"),
            ("expires_at", "0"),
            ("ver", "1"),
            ("payload", r#"["100/m","5000/h"]"#),
        ];
        let ev = Event::<OverrideKey>::from_fields(&fields(&pairs)).unwrap();
        assert_eq!(ev.op, Op::Upsert);
        assert_eq!(ev.cidr.unwrap().key, "tenant acme");
        assert_eq!(
            ev.payload.unwrap().to_json(),
            serde_json::json!(["100/m", "5000/h"])
        );
        pairs.pop();
        assert!(Event::<OverrideKey>::from_fields(&fields(&pairs)).is_err());
        pairs[2] = ("op", "remove");
        let ev = Event::<OverrideKey>::from_fields(&fields(&pairs)).unwrap();
        assert_eq!(ev.payload, None, "a remove carries none");
    }
}
