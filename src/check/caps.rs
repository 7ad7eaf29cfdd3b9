//! The caps every charge meets, whatever surface asked for it (forward-auth,
//! `POST /v1/check`, Envoy's RLS `hits_addend`, ext_authz, the embedded
//! store): `Limiter::check` and `Limiter::check_all` refuse a charge past them
//! before anything is written, so a new surface cannot skip one.
//!
//! Why each exists:
//! - `api.max_cost`: one call's units (a cost is client input on every
//!   surface that takes one; Envoy can set `hits_addend` from request data).
//! - `api.max_log_limit` for sliding_log: its script adds one sorted-set member
//!   per unit, so a cost of 200 000 was one 546 ms `EVALSHA` that tripped every
//!   replica's breaker. The cap bounds the members one call adds.
//! - cost within the smallest limit (or the gcra burst): a charge that could
//!   never pass is a mistake, not a request.
//! - gcra: its script's integer arithmetic is exact while burst × period in
//!   µs stays below 2^53 (`lua/gcra.lua`); past that it would round.

use crate::check::LimitSpec;
use crate::config::ApiConfig;
use crate::limiter::Algorithm;
use crate::rate::Rate;

/// 2^53: the first integer a Lua number (a double) cannot tell from its neighbour.
pub const GCRA_EXACT_BELOW: u128 = 1 << 53;

/// What a refused charge is about; each surface names it in its own terms
/// (`cost`, `hits_addend`, `limits[i]`, `burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapField {
    Cost,
    /// The i-th limit of the call (an ad-hoc limit or an RLS override).
    Limit(usize),
    /// The gcra burst the call names.
    Burst,
}

/// A charge past a cap: nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub field: CapField,
    /// The `reason` label of `tollgate_refused_requests_total`.
    pub reason: &'static str,
    pub message: String,
}

/// Whether `cost` units of `spec` may be charged under `caps`.
pub fn admit(caps: &ApiConfig, spec: &LimitSpec<'_>, cost: u64) -> Result<(), Refused> {
    let refuse = |field, reason, message: String| {
        Err(Refused {
            field,
            reason,
            message,
        })
    };
    if cost < 1 || cost > caps.max_cost {
        return refuse(
            CapField::Cost,
            "cost_over_cap",
            format!(
                "must be a whole number from 1 to {} (api.max_cost)",
                caps.max_cost
            ),
        );
    }
    if spec.algorithm == Algorithm::SlidingLog && cost > caps.max_log_limit {
        return refuse(
            CapField::Cost,
            "cost_over_log_cap",
            format!(
                "a sliding_log cost may not exceed {} (api.max_log_limit)",
                caps.max_log_limit
            ),
        );
    }
    if let Some(min) = spec.burst.or(spec.limits.iter().map(|r| r.limit).min()) {
        if cost > min {
            return refuse(
                CapField::Cost,
                "cost_over_limit",
                format!("{cost} is more than the limit {min}: it could never pass"),
            );
        }
    }
    if spec.algorithm == Algorithm::Gcra {
        for (i, rate) in spec.limits.iter().enumerate() {
            let burst = spec.burst.unwrap_or(rate.limit);
            if !gcra_exact(burst, rate.period_ms) {
                let field = match spec.burst {
                    Some(_) => CapField::Burst,
                    None => CapField::Limit(i),
                };
                return refuse(
                    field,
                    "gcra_range",
                    gcra_range_message(burst, rate.period_ms),
                );
            }
        }
    }
    Ok(())
}

/// gcra's arithmetic is exact for this bucket and period (see the module comment).
pub fn gcra_exact(burst: u64, period_ms: u64) -> bool {
    u128::from(burst) * u128::from(period_ms) * 1000 < GCRA_EXACT_BELOW
}

/// Why a gcra bucket is refused, with the largest bucket its period allows.
pub fn gcra_range_message(burst: u64, period_ms: u64) -> String {
    let most = (GCRA_EXACT_BELOW - 1) / (u128::from(period_ms.max(1)) * 1000);
    format!("gcra needs burst × period in µs below 2^53 for exact arithmetic: a bucket of {burst} over {period_ms} ms is past it (at most {most} for this period)")
}

/// A field of a request refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRefused {
    pub field: String,
    pub message: String,
}

impl FieldRefused {
    fn new(field: &str, message: impl Into<String>) -> FieldRefused {
        FieldRefused {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A list of rates an operator or a client wrote for `algorithm` (ad-hoc
/// `limits` of `POST /v1/check`, an override's `limits`): 1 to
/// `api.max_limits`, each within `api.max_limit` (`api.max_log_limit` for
/// sliding_log) and `api.max_period`, no two with one period. The error
/// names the field (`limits`, `limits[i]`).
pub fn rates(
    list: &[String],
    algorithm: Algorithm,
    caps: &ApiConfig,
) -> Result<Vec<Rate>, FieldRefused> {
    if list.is_empty() || list.len() > caps.max_limits {
        return Err(FieldRefused::new(
            "limits",
            format!(
                "must be 1 to {} rates like \"100/m\" (api.max_limits)",
                caps.max_limits
            ),
        ));
    }
    let (max_limit, cap_key) = if algorithm == Algorithm::SlidingLog {
        (caps.max_log_limit, "api.max_log_limit")
    } else {
        (caps.max_limit, "api.max_limit")
    };
    let mut parsed: Vec<Rate> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let field = format!("limits[{i}]");
        let rate: Rate = text
            .parse()
            .map_err(|e: crate::rate::RateError| FieldRefused::new(&field, e.to_string()))?;
        if rate.limit > max_limit {
            return Err(FieldRefused::new(
                &field,
                format!("a {algorithm} count may not exceed {max_limit} ({cap_key})"),
            ));
        }
        if rate.period() > caps.max_period {
            return Err(FieldRefused::new(
                &field,
                format!(
                    "the period may not exceed {} (api.max_period)",
                    humantime::format_duration(caps.max_period)
                ),
            ));
        }
        if parsed.iter().any(|p| p.period_ms == rate.period_ms) {
            return Err(FieldRefused::new(&field, "two limits with the same period"));
        }
        parsed.push(rate);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Rate;
    use crate::rule::OnRedisError;

    fn caps() -> ApiConfig {
        crate::config::parse("t", "", &crate::config::Overrides::default())
            .unwrap()
            .api
    }

    fn spec<'a>(algorithm: Algorithm, limits: &'a [Rate], burst: Option<u64>) -> LimitSpec<'a> {
        LimitSpec {
            rule: "r",
            algorithm,
            limits,
            burst,
            on_redis_error: OnRedisError::Allow,
            charge: true,
            lease: None,
        }
    }

    #[test]
    fn each_cap_refuses_with_its_reason_and_field() {
        let caps = caps();
        let big: Vec<Rate> = vec!["1000000/h".parse().unwrap()];
        let log = spec(Algorithm::SlidingLog, &big, None);
        assert_eq!(admit(&caps, &log, caps.max_log_limit), Ok(()));
        let r = admit(&caps, &log, caps.max_log_limit + 1).unwrap_err();
        assert_eq!((r.field, r.reason), (CapField::Cost, "cost_over_log_cap"));
        let r = admit(&caps, &log, 200_000).unwrap_err();
        assert_eq!(r.reason, "cost_over_cap");
        let r = admit(&caps, &log, 0).unwrap_err();
        assert_eq!(r.reason, "cost_over_cap");
        let small: Vec<Rate> = vec!["5/m".parse().unwrap()];
        let r = admit(&caps, &spec(Algorithm::FixedWindow, &small, None), 6).unwrap_err();
        assert_eq!(r.reason, "cost_over_limit");
    }

    #[test]
    fn a_gcra_bucket_past_2_pow_53_microseconds_is_refused() {
        let caps = caps();
        // 100 000/day: 1e5 × 8.64e10 µs = 8.64e15 < 2^53 (9.007e15).
        let day: Vec<Rate> = vec!["100000/d".parse().unwrap()];
        assert_eq!(admit(&caps, &spec(Algorithm::Gcra, &day, None), 1), Ok(()));
        let year: Vec<Rate> = vec!["1000/365d".parse().unwrap()];
        let r = admit(&caps, &spec(Algorithm::Gcra, &year, None), 1).unwrap_err();
        assert_eq!((r.field, r.reason), (CapField::Limit(0), "gcra_range"));
        let r = admit(&caps, &spec(Algorithm::Gcra, &day, Some(200_000)), 1).unwrap_err();
        assert_eq!(r.field, CapField::Burst);
        assert!(gcra_exact(104_249, 86_400_000));
        assert!(!gcra_exact(104_250, 86_400_000));
    }
}
