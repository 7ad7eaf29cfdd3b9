//! What an override gives its key: its own rates (any the rule's algorithm
//! takes), `unlimited` (admitted without a limiter call) or `deny` (refused
//! without one). As JSON, in Redis, events, the state file and the API:
//! `["100/m", "5000/h"]`, `"unlimited"` or `"deny"`.

use serde_json::{json, Value};

use crate::rate::Rate;
use crate::rule::Rule;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverrideLimits {
    Rates(Vec<Rate>),
    Unlimited,
    Deny,
}

impl OverrideLimits {
    pub fn to_json(&self) -> Value {
        match self {
            OverrideLimits::Rates(rates) => {
                json!(rates.iter().map(|r| r.to_string()).collect::<Vec<_>>())
            }
            OverrideLimits::Unlimited => json!("unlimited"),
            OverrideLimits::Deny => json!("deny"),
        }
    }

    /// `rule` as it applies to the overridden key: its rates replaced (and
    /// its gcra burst, sized for its own limit, dropped), as
    /// `check/overridden.rs` calls the limiter. `None` for `unlimited` and
    /// `deny`, which call no limiter.
    pub fn applied_to(&self, rule: &Rule) -> Option<Rule> {
        let OverrideLimits::Rates(rates) = self else {
            return None;
        };
        Some(Rule {
            limits: rates.clone(),
            limit_specs: rates.iter().map(|r| r.to_string()).collect(),
            burst: None,
            ..rule.clone()
        })
    }

    /// Read what `to_json` wrote (validation of operator input is `input`'s).
    pub fn from_json(v: &Value) -> Result<OverrideLimits, String> {
        match v {
            Value::String(s) if s == "unlimited" => Ok(OverrideLimits::Unlimited),
            Value::String(s) if s == "deny" => Ok(OverrideLimits::Deny),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| format!("{i} is not a rate"))?
                        .parse::<Rate>()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map(OverrideLimits::Rates),
            other => Err(format!(
                "limits {other}: expected rates like [\"100/m\"], \"unlimited\" or \"deny\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_back_what_they_write() {
        for l in [
            OverrideLimits::Rates(vec!["100/m".parse().unwrap(), "5000/h".parse().unwrap()]),
            OverrideLimits::Unlimited,
            OverrideLimits::Deny,
        ] {
            assert_eq!(OverrideLimits::from_json(&l.to_json()).unwrap(), l);
        }
        assert!(OverrideLimits::from_json(&json!([])).is_err());
        assert!(OverrideLimits::from_json(&json!("more")).is_err());
    }
}
