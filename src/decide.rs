//! From a request to a decision: every matching rule applies, and the request
//! passes only if all pass.

use futures::future::join_all;

use crate::allowlist::gate::Membership;
use crate::app::App;
use crate::limiter::{Algorithm, Call, LimitState, Outcome};
use crate::rate::Rate;
use crate::request::RequestView;
use crate::rule::{OnRedisError, Rule};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited {
        retry_after_ms: u64,
    },
    /// A matching `allowlist = "require"` rule and a client not on the allowlist.
    NotAllowlisted,
}

/// One limit that applied, as the RateLimit headers report it.
#[derive(Clone, Debug)]
pub struct Item {
    pub name: String,
    pub state: LimitState,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub verdict: Verdict,
    pub items: Vec<Item>,
}

/// What one limiter call needs beyond its key.
pub struct LimitSpec<'a> {
    pub rule: &'a str,
    pub algorithm: Algorithm,
    pub limits: &'a [Rate],
    pub on_redis_error: OnRedisError,
}

impl<'a> From<&'a Rule> for LimitSpec<'a> {
    fn from(rule: &'a Rule) -> Self {
        LimitSpec {
            rule: &rule.name,
            algorithm: rule.algorithm,
            limits: &rule.limits,
            on_redis_error: rule.on_redis_error,
        }
    }
}

impl App {
    /// Decide a forward-auth request.
    pub async fn decide(&self, req: &RequestView<'_>) -> Decision {
        let rules = self.rules.load();
        let applicable: Vec<(&Rule, String)> = {
            // Allowlist gates first: a refused request is charged nothing.
            let allowlist = Membership::new(&self.allowlist, req);
            let matching = || rules.iter().filter(|r| r.matcher.matches(req));
            if let Some(gate) = matching().find(|r| allowlist.refuses(r)) {
                use crate::metrics::Outcome::not_allowlisted;
                self.metrics.decision(&gate.name, not_allowlisted);
                return Decision {
                    verdict: Verdict::NotAllowlisted,
                    items: Vec::new(),
                };
            }
            matching()
                .filter(|r| !r.limits.is_empty() && !allowlist.bypasses(r))
                .filter_map(|r| Some((r, r.key.build(req)?)))
                .collect()
        };
        // Rules are independent calls (different keys, maybe different slots): run them together.
        let outcomes = join_all(
            applicable
                .iter()
                .map(|(rule, key)| self.check(LimitSpec::from(*rule), key, 1)),
        )
        .await;

        let mut verdict = Verdict::Allowed;
        let mut items = Vec::new();
        for ((rule, _), outcome) in applicable.iter().zip(outcomes) {
            if !outcome.allowed && !rule.shadow {
                let retry = match verdict {
                    Verdict::Limited { retry_after_ms } => {
                        retry_after_ms.max(outcome.retry_after_ms)
                    }
                    _ => outcome.retry_after_ms,
                };
                verdict = Verdict::Limited {
                    retry_after_ms: retry,
                };
            }
            for (i, state) in outcome.limits.into_iter().enumerate() {
                items.push(Item {
                    name: rule.item_name(i),
                    state,
                });
            }
        }
        Decision { verdict, items }
    }

    /// One limiter call, with the rule's `on_redis_error` applied on failure.
    pub async fn check(&self, spec: LimitSpec<'_>, key: &str, cost: u64) -> Outcome {
        let base = self.keys.limit_base(spec.algorithm, spec.rule, key);
        let call = Call {
            algorithm: spec.algorithm,
            base: &base,
            limits: spec.limits,
            cost,
        };
        let err = match self.store.check(call).await {
            Ok(outcome) => {
                self.note_redis(Ok(()));
                return outcome;
            }
            Err(e) => e,
        };
        self.note_redis(Err(&err));
        tracing::debug!(rule = spec.rule, error = %err, "limiter call failed");
        match spec.on_redis_error {
            OnRedisError::Allow => unknown_state(spec.limits, true),
            OnRedisError::Deny => unknown_state(spec.limits, false),
            OnRedisError::Local => {
                let replicas = self
                    .config
                    .redis
                    .as_ref()
                    .map_or(1, |r| r.fallback_replicas) as u64;
                let shares: Vec<Rate> = spec
                    .limits
                    .iter()
                    .map(|r| Rate {
                        limit: (r.limit / replicas).max(1),
                        period_ms: r.period_ms,
                    })
                    .collect();
                self.fallback.check(Call {
                    limits: &shares,
                    ..call
                })
            }
        }
    }
}

/// The answer when no store could be asked: full quota shown, or a 1 s denial.
fn unknown_state(limits: &[Rate], allowed: bool) -> Outcome {
    Outcome {
        allowed,
        retry_after_ms: if allowed { 0 } else { 1000 },
        limits: limits
            .iter()
            .map(|r| LimitState {
                limit: r.limit,
                period_ms: r.period_ms,
                remaining: if allowed { r.limit } else { 0 },
                reset_ms: r.period_ms,
            })
            .collect(),
    }
}
