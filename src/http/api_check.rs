//! `POST /v1/check`: a decision for applications, by rule or with ad-hoc limits.
//!
//! `{"rule": "login", "key": "user:42", "cost": 1}` or
//! `{"key": "user:42", "limits": ["100/m"], "algorithm": "gcra", "cost": 1}`
//! → 200 `{"allowed", "limit", "remaining", "reset_ms", "retry_after_ms", "limits": [...]}`
//! (the top-level numbers are the tightest limit's). Being limited is an
//! answer, not an error: the status is 200 either way. A shadow rule (or
//! `--shadow`) answers `"allowed": true` with the true `remaining`.
//!
//! Every number a client sends is capped by `[api]`: the cost by the core
//! (`check/caps.rs`, as on every surface), the ad-hoc limits here (only this
//! surface takes them). One call can never make Redis or this process do
//! unbounded work.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::{json_body, read_limited};
use super::observe::observed;
use super::response::ApiError;
use crate::app::App;
use crate::check::caps::CapField;
use crate::check::LimitSpec;
use crate::config::ApiConfig;
use crate::keys::AD_HOC_RULE;
use crate::limiter::{Algorithm, LimitState};
use crate::rate::Rate;
use crate::rule::{find_limited, OnRedisError};

/// Bodies above this are refused (413) before they are parsed: a valid body
/// within the `[api]` caps is well under 4 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    key: String,
    rule: Option<String>,
    limits: Option<Vec<String>>,
    algorithm: Option<String>,
    cost: Option<u64>,
    /// gcra only, one ad-hoc limit only (default: the limit).
    burst: Option<u64>,
}

#[derive(Serialize)]
struct Answer {
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_ms: u64,
    retry_after_ms: u64,
    limits: Vec<LimitJson>,
    /// A stored override decided without a limiter call (`unlimited`,
    /// `deny`); then `limits` is empty and the numbers above are 0.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    overridden: Option<&'static str>,
}

#[derive(Serialize)]
struct LimitJson {
    limit: u64,
    window_ms: u64,
    remaining: u64,
    reset_ms: u64,
}

/// Through the router (its tests; the route's layer observes it).
pub async fn check(State(app): State<Arc<App>>, req: Request) -> Response {
    respond(&app, req.into_body()).await
}

/// Straight from the connection (`http::decision_handler`), observed under
/// its route as the router's layer would: the second hottest path skips the
/// router's per-request boxing, like the forward-auth routes.
pub async fn direct<B>(app: Arc<App>, req: axum::http::Request<B>) -> Response
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    observed(&app, "/v1/check", &parts.headers, respond(&app, body)).await
}

async fn respond<B>(app: &App, body: B) -> Response
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = match read_limited(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match answer(app, &body).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parse the body; a failure names the field it is about (`(body)` for the whole).
fn parse(body: &[u8]) -> Result<Body, ApiError> {
    json_body(body)
}

async fn answer(app: &App, body: &[u8]) -> Result<Answer, ApiError> {
    let caps = app.limiter.caps();
    let caps: &ApiConfig = &caps;
    let body = parse(body)?;
    let key = body.key.as_str();
    if key.is_empty() || key.len() > caps.max_key_bytes {
        return Err(ApiError::bad(
            "key",
            format!(
                "must be 1 to {} bytes (api.max_key_bytes)",
                caps.max_key_bytes
            ),
        ));
    }
    let cost = body.cost.unwrap_or(1);

    let rules = app.rules.load();
    let ad_hoc_limits: Vec<Rate>;
    // A configured rule counts through its own handles (`RuleCounters`).
    let (spec, shadow, configured) = match (&body.rule, &body.limits) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(
                "limits",
                "give either rule or limits, not both",
            ))
        }
        (None, None) => return Err(ApiError::bad("rule", "missing: give a rule name or limits")),
        (Some(name), None) => {
            for (field, given) in [
                ("algorithm", body.algorithm.is_some()),
                ("burst", body.burst.is_some()),
            ] {
                if given {
                    return Err(ApiError::bad(
                        field,
                        format!("a rule has its own {field}; only ad-hoc limits take one"),
                    ));
                }
            }
            let rule =
                find_limited(&rules, name).map_err(|e| ApiError::bad("rule", e.to_string()))?;
            (LimitSpec::from(rule), rule.shadow, Some(rule))
        }
        (None, Some(list)) => {
            let algorithm = match &body.algorithm {
                None => Algorithm::FixedWindow,
                Some(a) => a.parse().map_err(|e: crate::named::UnknownName| {
                    ApiError::bad("algorithm", e.to_string())
                })?,
            };
            ad_hoc_limits = ad_hoc(list, algorithm, caps)?;
            let burst = match body.burst {
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
                Some(b) if b < 1 || b > caps.max_limit => {
                    return Err(ApiError::bad(
                        "burst",
                        format!(
                            "must be a whole number from 1 to {} (api.max_limit)",
                            caps.max_limit
                        ),
                    ))
                }
                Some(b) => Some(b),
            };
            let spec = LimitSpec {
                rule: AD_HOC_RULE,
                algorithm,
                limits: &ad_hoc_limits,
                burst,
                on_redis_error: OnRedisError::Local,
                charge: true,
                lease: None,
            };
            (spec, caps.shadow, None)
        }
    };
    let rule = spec.rule;
    let (outcome, source) = app.limiter.check(spec, key, cost).await.map_err(|r| {
        let field = match r.field {
            CapField::Cost => "cost".to_string(),
            CapField::Burst => "burst".to_string(),
            CapField::Limit(i) => format!("limits[{i}]"),
        };
        ApiError::bad(&field, r.message)
    })?;
    match configured {
        Some(configured) => app.decided(configured, key, &outcome, source).await,
        None => app
            .metrics
            .decision(rule, crate::decide::counted(&outcome, source, shadow)),
    }
    // Every limit call reports its limits; an override's answer has none.
    let none = LimitState {
        limit: 0,
        period_ms: 0,
        remaining: 0,
        reset_ms: 0,
    };
    let t: &LimitState = outcome.tightest().unwrap_or(&none);
    let overridden = (source == crate::check::Source::Override).then_some(if outcome.allowed {
        "unlimited"
    } else {
        "deny"
    });
    // A shadow rule counts and reports, but never denies.
    let allowed = outcome.allowed || shadow;
    Ok(Answer {
        allowed,
        limit: t.limit,
        remaining: t.remaining,
        reset_ms: t.reset_ms,
        retry_after_ms: if allowed { 0 } else { outcome.retry_after_ms },
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
        overridden,
    })
}

/// Ad-hoc limits, each within the `[api]` caps; an error names `limits[i]`.
fn ad_hoc(list: &[String], algorithm: Algorithm, caps: &ApiConfig) -> Result<Vec<Rate>, ApiError> {
    crate::check::caps::rates(list, algorithm, caps).map_err(|e| ApiError::bad(e.field, e.message))
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn field(body: &str) -> String {
        match parse(body.as_bytes()) {
            Ok(_) => "(ok)".into(),
            Err(e) => e.field.unwrap(),
        }
    }

    #[test]
    fn a_bad_body_names_its_field() {
        assert_eq!(field(r#"{"key": "k", "cots": 1}"#), "cots");
        assert_eq!(field(r#"{"rule": "r"}"#), "key");
        assert_eq!(field(r#"{"key": 5}"#), "key");
        assert_eq!(field(r#"{"key": "k", "limits": ["1/s", 7]}"#), "limits[1]");
        assert_eq!(field(r#"{"key": "k", "cost": -1}"#), "cost");
        assert_eq!(field(r#"{"key": "k", "cost": 1.5}"#), "cost");
        assert_eq!(field(r#"["k"]"#), "(body)");
        assert_eq!(field("{oops"), "(body)");
        assert_eq!(field(""), "(body)");
        assert_eq!(field(r#"{"key": "k"}"#), "(ok)");
    }
}
