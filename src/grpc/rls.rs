//! `ShouldRateLimit`: each descriptor is an independent limiter call (as in
//! Envoy's ratelimit service), so a denied descriptor charges nothing while
//! the others are charged as usual; the answer is `OVER_LIMIT` when any
//! non-shadow descriptor is over.
//!
//! Per descriptor, `current_limit` is the tightest of the rule's limits (the
//! one the `X-RateLimit-*` headers report): `requests_per_unit` + `unit` when
//! its period is one of Envoy's units (a month is 30 days, a year 365);
//! otherwise `unit = UNKNOWN`, `requests_per_unit` the limit, and the window
//! in the name as RateLimit-Policy writes it (`"login;w=30"`).
//!
//! The denylist first: a request with a descriptor entry `remote_address`
//! (Envoy's `remote_address` action: the client address) whose value is on
//! the denylist is `OVER_LIMIT` for every descriptor, with
//! `x-tollgate-reason: denied` (and `retry-after` for a timed entry), and
//! nothing is charged. Without such an entry RLS knows no client: not denied.

use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use futures::future::{join_all, OptionFuture};
use tonic::{Request, Response, Status};

use super::descriptors::{self, Charge, DAY_MS};
use crate::app::App;
use crate::decide::{Decision, Item, Verdict};
use crate::http::response::{decision_parts, Flavor};
use crate::limiter::{LimitState, Outcome};

pub struct Rls {
    app: Arc<App>,
}

impl Rls {
    pub fn new(app: Arc<App>) -> Self {
        Rls { app }
    }
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let result = should_rate_limit(&self.app, request.get_ref()).await;
        super::count(&self.app, "ShouldRateLimit", &result);
        result.map(Response::new)
    }
}

pub async fn should_rate_limit(
    app: &App,
    req: &RateLimitRequest,
) -> Result<RateLimitResponse, Status> {
    if let Some(denied) = denied(app, req) {
        return Ok(denied);
    }
    let rules = app.rules.load();
    let charges = descriptors::resolve(&rules, &req.domain, &req.descriptors, req.hits_addend)?;
    // Every descriptor within the caps before any is charged: a refusal
    // (`INVALID_ARGUMENT` naming the field) writes nothing.
    for c in charges.iter().flatten() {
        app.limiter
            .admit(&c.spec(), c.cost)
            .map_err(|r| Status::invalid_argument(format!("{}: {r}", c.field(r.field))))?;
    }
    let outcomes = join_all(charges.iter().map(|c| {
        OptionFuture::from(
            c.as_ref()
                .map(|c| app.limiter.check(c.spec(), &c.key, c.cost)),
        )
    }))
    .await;

    let mut decision = Decision {
        verdict: Verdict::Allowed,
        items: Vec::new(),
    };
    let mut statuses = Vec::with_capacity(charges.len());
    for (charge, outcome) in charges.iter().zip(outcomes) {
        let (Some(charge), Some(answer)) = (charge, outcome) else {
            statuses.push(DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            });
            continue;
        };
        let (outcome, source) = answer
            .map_err(|r| Status::invalid_argument(format!("{}: {r}", charge.field(r.field))))?;
        let rule = charge.rule;
        app.decided(rule, &charge.key, &outcome, source).await;
        let over = !outcome.allowed && !rule.shadow;
        if over {
            let retry = match decision.verdict {
                Verdict::Limited { retry_after_ms } => retry_after_ms.max(outcome.retry_after_ms),
                _ => outcome.retry_after_ms,
            };
            decision.verdict = Verdict::Limited {
                retry_after_ms: retry,
            };
        }
        statuses.push(status(charge, &outcome, over));
        for (state, name) in outcome.limits.into_iter().zip(charge.item_names.iter()) {
            decision.items.push(Item {
                name: name.clone(),
                state,
            });
        }
    }
    let overall = if matches!(decision.verdict, Verdict::Limited { .. }) {
        Code::OverLimit
    } else {
        Code::Ok
    };
    let response_headers_to_add = if app.config.server.grpc_ratelimit_headers {
        super::pb_headers(&decision_parts(&decision, Flavor::Standard).1).collect()
    } else {
        Vec::new()
    };
    Ok(RateLimitResponse {
        overall_code: overall as i32,
        statuses,
        response_headers_to_add,
        ..Default::default()
    })
}

/// The answer for a request whose `remote_address` is on the denylist.
fn denied(app: &App, req: &RateLimitRequest) -> Option<RateLimitResponse> {
    let retry_after_ms = req
        .descriptors
        .iter()
        .flat_map(|d| &d.entries)
        .filter(|e| e.key == "remote_address")
        .filter_map(|e| crate::allowlist::cidr::parse_ip(&e.value).ok())
        .find_map(|ip| app.denylist.holds(ip))?;
    app.denied_requests.inc();
    let decision = Decision {
        verdict: Verdict::Denied { retry_after_ms },
        items: Vec::new(),
    };
    Some(RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses: req
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code: Code::OverLimit as i32,
                ..Default::default()
            })
            .collect(),
        response_headers_to_add: super::pb_headers(&decision_parts(&decision, Flavor::Standard).1)
            .collect(),
        ..Default::default()
    })
}

/// One descriptor's status from its rule's outcome.
fn status(charge: &Charge<'_>, outcome: &Outcome, over: bool) -> DescriptorStatus {
    // The tightest limit, as X-RateLimit-* reports it (ties: the one resetting last).
    let tightest = outcome
        .limits
        .iter()
        .enumerate()
        .min_by_key(|(_, l)| (l.remaining, std::cmp::Reverse(l.reset_ms)));
    let Some((i, state)) = tightest else {
        return DescriptorStatus {
            code: if over { Code::OverLimit } else { Code::Ok } as i32,
            ..Default::default()
        };
    };
    DescriptorStatus {
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        // A stored override may have more limits than the rule names.
        current_limit: Some(current_limit(
            charge.item_names.get(i).unwrap_or(&charge.item_names[0]),
            state,
        )),
        limit_remaining: u32::try_from(state.remaining).unwrap_or(u32::MAX),
        duration_until_reset: Some(PbDuration {
            seconds: (state.reset_ms / 1000) as i64,
            nanos: ((state.reset_ms % 1000) * 1_000_000) as i32,
        }),
        ..Default::default()
    }
}

/// A limit in Envoy's terms (see the module comment for periods that are not a unit).
pub fn current_limit(name: &str, state: &LimitState) -> RateLimit {
    let units = [
        (1000, Unit::Second),
        (60_000, Unit::Minute),
        (3_600_000, Unit::Hour),
        (DAY_MS, Unit::Day),
        (7 * DAY_MS, Unit::Week),
        (30 * DAY_MS, Unit::Month),
        (365 * DAY_MS, Unit::Year),
    ];
    let unit = units
        .iter()
        .find(|(ms, _)| *ms == state.period_ms)
        .map(|(_, unit)| *unit);
    RateLimit {
        name: match unit {
            Some(_) => name.to_string(),
            None => format!("{name};w={}", state.period_ms.div_ceil(1000)),
        },
        requests_per_unit: u32::try_from(state.limit).unwrap_or(u32::MAX),
        unit: unit.unwrap_or(Unit::Unknown) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: u64, period_ms: u64) -> LimitState {
        LimitState {
            limit,
            period_ms,
            remaining: 0,
            reset_ms: 0,
        }
    }

    #[test]
    fn limits_use_envoy_units_when_they_fit_and_name_the_window_otherwise() {
        let l = current_limit("login", &state(5, 60_000));
        assert_eq!(
            (l.requests_per_unit, l.unit, l.name.as_str()),
            (5, Unit::Minute as i32, "login")
        );
        let l = current_limit("login", &state(7, 7 * 86_400_000));
        assert_eq!(l.unit, Unit::Week as i32);
        let l = current_limit("api", &state(100, 30_000));
        assert_eq!(
            (l.requests_per_unit, l.unit, l.name.as_str()),
            (100, Unit::Unknown as i32, "api;w=30")
        );
        let l = current_limit("big", &state(u64::MAX, 1000));
        assert_eq!(l.requests_per_unit, u32::MAX);
    }
}
