//! From a `RateLimitRequest`'s descriptors to limiter calls: which rule each
//! descriptor falls under, its counter key, its limits and its cost.

use std::borrow::Cow;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use tonic::Status;

use crate::check::LimitSpec;
use crate::rate::Rate;
use crate::rule::Rule;

/// Most descriptors one call may carry: each is a limiter call of its own.
pub const MAX_DESCRIPTORS: usize = 64;

/// One descriptor that a rule answers.
pub struct Charge<'r> {
    pub rule: &'r Rule,
    pub key: String,
    /// The rule's limits, or the descriptor's override (capped).
    pub limits: Cow<'r, [Rate]>,
    /// Names of `limits` in the RateLimit headers.
    pub item_names: Cow<'r, [Arc<str>]>,
    pub cost: u64,
    /// The descriptor's place in the request, and whether its cost is its
    /// own `hits_addend` (else the request's): how a refusal names the field.
    pub index: usize,
    pub own_cost: bool,
}

impl<'r> Charge<'r> {
    /// The field a refused charge is about, as the request spells it.
    pub fn field(&self, what: crate::check::caps::CapField) -> String {
        use crate::check::caps::CapField;
        let i = self.index;
        match what {
            CapField::Cost if self.own_cost => format!("descriptors[{i}].hits_addend"),
            CapField::Cost => "hits_addend".to_string(),
            CapField::Limit(_) => format!("descriptors[{i}].limit"),
            CapField::Burst => format!("descriptors[{i}]"),
        }
    }

    pub fn spec(&self) -> LimitSpec<'_> {
        let rule = LimitSpec::from(self.rule);
        LimitSpec {
            limits: &self.limits,
            // A gcra burst is sized for the rule's own limit, not an override's.
            burst: match self.limits {
                Cow::Borrowed(_) => rule.burst,
                Cow::Owned(_) => None,
            },
            ..rule
        }
    }
}

/// A charge per descriptor, `None` where no rule matches (answered `OK`
/// with no limit, as Envoy's ratelimit service does). Bad input is an
/// `INVALID_ARGUMENT` naming the field.
pub fn resolve<'r>(
    rules: &'r [Rule],
    domain: &str,
    descriptors: &[RateLimitDescriptor],
    hits_addend: u32,
) -> Result<Vec<Option<Charge<'r>>>, Status> {
    if domain.is_empty() {
        return Err(Status::invalid_argument("domain: must not be empty"));
    }
    if descriptors.is_empty() || descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!(
            "descriptors: 1 to {MAX_DESCRIPTORS} per call"
        )));
    }
    descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| resolve_one(rules, domain, d, hits_addend, i))
        .collect()
}

fn resolve_one<'r>(
    rules: &'r [Rule],
    domain: &str,
    d: &RateLimitDescriptor,
    hits_addend: u32,
    i: usize,
) -> Result<Option<Charge<'r>>, Status> {
    if d.is_negative_hits {
        return Err(Status::invalid_argument(format!(
            "descriptors[{i}].is_negative_hits: returning hits is not supported"
        )));
    }
    let entries = || d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str()));
    // The most specific match; validation refuses two rules with one pattern.
    let Some(rule) = rules
        .iter()
        .filter_map(|r| Some((r.descriptor.as_ref()?.matches(domain, entries())?, r)))
        .max_by_key(|(specificity, _)| *specificity)
        .map(|(_, r)| r)
    else {
        return Ok(None);
    };
    let descriptor = rule.descriptor.as_ref().expect("matched");
    // 0 means 1 (the field's default); the descriptor's own count wins.
    let cost = match &d.hits_addend {
        Some(own) => own.value,
        None => u64::from(hits_addend),
    }
    .max(1);
    let (limits, item_names) = match (&descriptor.override_max, &d.limit) {
        (Some(max), Some(wanted)) => {
            let rate = override_rate(wanted, max)
                .map_err(|e| Status::invalid_argument(format!("descriptors[{i}].limit: {e}")))?;
            (
                Cow::Owned(vec![rate]),
                Cow::Owned(vec![Arc::from(rule.name.as_str())]),
            )
        }
        _ => (
            Cow::Borrowed(rule.limits.as_slice()),
            Cow::Borrowed(rule.item_names.as_slice()),
        ),
    };
    Ok(Some(Charge {
        rule,
        key: descriptor.key(entries()),
        limits,
        item_names,
        cost,
        index: i,
        own_cost: d.hits_addend.is_some(),
    }))
}

/// A descriptor's own limit as a rate; above `max`, `max` itself.
fn override_rate(wanted: &RateLimitOverride, max: &Rate) -> Result<Rate, OverrideError> {
    let unit = RateLimitUnit::try_from(wanted.unit).unwrap_or(RateLimitUnit::Unknown);
    let period_ms = unit_ms(unit).ok_or(OverrideError::Unit)?;
    if wanted.requests_per_unit == 0 {
        return Err(OverrideError::Zero);
    }
    let rate = Rate {
        limit: u64::from(wanted.requests_per_unit),
        period_ms,
    };
    // wanted/period > max.limit/max.period, without rounding.
    let above = u128::from(rate.limit) * u128::from(max.period_ms)
        > u128::from(max.limit) * u128::from(rate.period_ms);
    Ok(if above { max.clone() } else { rate })
}

/// A descriptor's own limit that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum OverrideError {
    #[error("unit must be SECOND, MINUTE, HOUR, DAY, MONTH or YEAR")]
    Unit,
    #[error("requests_per_unit must be at least 1")]
    Zero,
}

/// A day; a month is 30 of them and a year 365, as in envoyproxy/ratelimit.
pub const DAY_MS: u64 = 86_400_000;

/// An override's unit in milliseconds (overrides have no WEEK).
fn unit_ms(unit: RateLimitUnit) -> Option<u64> {
    const DAY: u64 = DAY_MS;
    Some(match unit {
        RateLimitUnit::Second => 1000,
        RateLimitUnit::Minute => 60_000,
        RateLimitUnit::Hour => 3_600_000,
        RateLimitUnit::Day => DAY,
        RateLimitUnit::Month => 30 * DAY,
        RateLimitUnit::Year => 365 * DAY,
        RateLimitUnit::Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(rpu: u32, unit: RateLimitUnit, max: &str) -> Result<Rate, OverrideError> {
        let wanted = RateLimitOverride {
            requests_per_unit: rpu,
            unit: unit as i32,
        };
        override_rate(&wanted, &max.parse().unwrap())
    }

    #[test]
    fn an_override_above_its_cap_is_the_cap() {
        assert_eq!(
            over(5, RateLimitUnit::Minute, "100/s").unwrap().to_string(),
            "5/m"
        );
        assert_eq!(
            over(100, RateLimitUnit::Second, "100/s")
                .unwrap()
                .to_string(),
            "100/s"
        );
        assert_eq!(
            over(101, RateLimitUnit::Second, "100/s")
                .unwrap()
                .to_string(),
            "100/s"
        );
        assert_eq!(
            over(7000, RateLimitUnit::Minute, "100/s")
                .unwrap()
                .to_string(),
            "100/s"
        );
        assert!(over(0, RateLimitUnit::Second, "1/s")
            .unwrap_err()
            .to_string()
            .contains("requests_per_unit"));
        assert!(over(1, RateLimitUnit::Unknown, "1/s")
            .unwrap_err()
            .to_string()
            .contains("unit"));
    }
}
