//! `POST /v1/check`: a decision for applications, by rule or with ad-hoc limits.
//!
//! `{"rule": "login", "key": "user:42", "cost": 1}` or
//! `{"key": "user:42", "limits": ["100/m"], "algorithm": "gcra", "cost": 1}`
//! → 200 `{"allowed", "limit", "remaining", "reset_ms", "retry_after_ms", "limits": [...]}`
//! (the top-level numbers are the tightest limit's). Being limited is an
//! answer, not an error: the status is 200 either way.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::response::ApiError;
use crate::app::App;
use crate::check::LimitSpec;
use crate::keys::AD_HOC_RULE;
use crate::limiter::{Algorithm, LimitState};
use crate::rate::Rate;
use crate::rule::OnRedisError;

#[derive(Serialize)]
struct Answer {
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_ms: u64,
    retry_after_ms: u64,
    limits: Vec<LimitJson>,
}

#[derive(Serialize)]
struct LimitJson {
    limit: u64,
    window_ms: u64,
    remaining: u64,
    reset_ms: u64,
}

/// Longest client key we accept; keys go into Redis key names.
const MAX_KEY_BYTES: usize = 512;

pub async fn check(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match answer(&app, &body).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(app: &App, body: &[u8]) -> Result<Answer, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("(body)", format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad("(body)", "expected a JSON object"))?;
    for field in obj.keys() {
        if !["rule", "key", "cost", "limits", "algorithm", "burst"].contains(&field.as_str()) {
            return Err(ApiError::bad(
                field.clone(),
                format!("unknown field {field:?}"),
            ));
        }
    }
    let key = match obj.get("key") {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => k.as_str(),
        Some(Value::String(_)) => {
            return Err(ApiError::bad(
                "key",
                format!("must be 1 to {MAX_KEY_BYTES} bytes"),
            ))
        }
        Some(_) => return Err(ApiError::bad("key", "must be a string")),
        None => return Err(ApiError::bad("key", "missing")),
    };
    let cost = match obj.get("cost") {
        None => 1,
        Some(c) => c
            .as_u64()
            .filter(|&c| c >= 1)
            .ok_or_else(|| ApiError::bad("cost", "must be a whole number of at least 1"))?,
    };

    let rules = app.rules.load();
    let ad_hoc_limits: Vec<Rate>;
    let spec = match (obj.get("rule"), obj.get("limits")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "limits",
                "give either rule or limits, not both",
            ))
        }
        (None, None) => return Err(ApiError::bad("rule", "missing: give a rule name or limits")),
        (Some(rule), None) => {
            for field in ["algorithm", "burst"] {
                if obj.contains_key(field) {
                    return Err(ApiError::bad(
                        field,
                        format!("a rule has its own {field}; only ad-hoc limits take one"),
                    ));
                }
            }
            let name = rule
                .as_str()
                .ok_or_else(|| ApiError::bad("rule", "must be a string"))?;
            let rule = rules
                .iter()
                .find(|r| r.name == name)
                .ok_or_else(|| ApiError::bad("rule", format!("unknown rule {name:?}")))?;
            if rule.limits.is_empty() {
                return Err(ApiError::bad(
                    "rule",
                    format!("rule {name:?} has no limits (it is an allowlist gate)"),
                ));
            }
            LimitSpec::from(rule)
        }
        (None, Some(limits)) => {
            let list = limits.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                ApiError::bad(
                    "limits",
                    "must be a non-empty array of rates like \"100/m\"",
                )
            })?;
            let mut parsed = Vec::with_capacity(list.len());
            for (i, l) in list.iter().enumerate() {
                let field = format!("limits[{i}]");
                let text = l
                    .as_str()
                    .ok_or_else(|| ApiError::bad(&field, "must be a string like \"100/m\""))?;
                let rate: Rate = text
                    .parse()
                    .map_err(|e: crate::rate::RateError| ApiError::bad(&field, e.to_string()))?;
                if parsed.iter().any(|p: &Rate| p.period_ms == rate.period_ms) {
                    return Err(ApiError::bad(&field, "two limits with the same period"));
                }
                parsed.push(rate);
            }
            ad_hoc_limits = parsed;
            let algorithm = match obj.get("algorithm") {
                None => Algorithm::FixedWindow,
                Some(a) => a
                    .as_str()
                    .ok_or_else(|| ApiError::bad("algorithm", "must be a string"))?
                    .parse()
                    .map_err(|e: String| ApiError::bad("algorithm", e))?,
            };
            let burst = match obj.get("burst") {
                None => None,
                Some(_) if algorithm != Algorithm::Gcra => {
                    return Err(ApiError::bad(
                        "burst",
                        "only the gcra algorithm takes a burst",
                    ))
                }
                Some(_) if ad_hoc_limits.len() != 1 => {
                    return Err(ApiError::bad("burst", "a burst needs exactly one limit"))
                }
                Some(b) => Some(b.as_u64().filter(|&b| b >= 1).ok_or_else(|| {
                    ApiError::bad("burst", "must be a whole number of at least 1")
                })?),
            };
            LimitSpec {
                rule: AD_HOC_RULE,
                algorithm,
                limits: &ad_hoc_limits,
                burst,
                on_redis_error: OnRedisError::Local,
            }
        }
    };
    if let Some(min) = spec.burst.or(spec.limits.iter().map(|r| r.limit).min()) {
        if cost > min {
            return Err(ApiError::bad(
                "cost",
                format!("{cost} is more than the limit {min}: it could never pass"),
            ));
        }
    }
    let (outcome, _) = app.check(spec, key, cost).await;
    let t: &LimitState = outcome.tightest().expect("at least one limit");
    Ok(Answer {
        allowed: outcome.allowed,
        limit: t.limit,
        remaining: t.remaining,
        reset_ms: t.reset_ms,
        retry_after_ms: outcome.retry_after_ms,
        limits: outcome
            .limits
            .iter()
            .map(|s| LimitJson {
                limit: s.limit,
                window_ms: s.period_ms,
                remaining: s.remaining,
                reset_ms: s.reset_ms,
            })
            .collect(),
    })
}
