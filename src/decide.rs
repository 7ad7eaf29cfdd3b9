//! From a request to a decision: every matching rule applies, and the request
//! passes only if all pass.

use std::sync::Arc;

use futures::future::join_all;

use crate::allowlist::gate::Membership;
use crate::app::App;
use crate::check::{LimitSpec, Source};
use crate::limiter::{LimitState, Outcome};
use crate::metrics::Outcome as Counted;
use crate::request::RequestView;
use crate::rule::Rule;

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
    pub name: Arc<str>,
    pub state: LimitState,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub verdict: Verdict,
    pub items: Vec<Item>,
}

impl App {
    /// Decide a forward-auth request.
    pub async fn decide(&self, req: &RequestView<'_>) -> Decision {
        let rules = self.rules.load();
        let applicable: Vec<(&Rule, String)> = {
            // Allowlist gates first: a refused request is charged nothing.
            let allowlist = Membership::new(&self.allowlist, req);
            // Descriptor rules belong to Envoy's rate limit service (`grpc/rls.rs`).
            let matching = || {
                rules
                    .iter()
                    .filter(|r| r.descriptor.is_none() && r.matcher.matches(req))
            };
            if let Some(gate) = matching().find(|r| allowlist.refuses(r)) {
                use crate::metrics::Outcome::not_allowlisted;
                self.metrics
                    .rule_decision(&gate.counters, &gate.name, not_allowlisted);
                return Decision {
                    verdict: Verdict::NotAllowlisted,
                    items: Vec::new(),
                };
            }
            let mut applicable = Vec::new();
            for rule in matching() {
                if rule.track.is_some() {
                    track(self, rule, req);
                }
                // The allowlist decides for a pure gate the client passes and
                // for a bypass: one `allowlisted` outcome, no limiter call.
                if allowlist.bypasses(rule) || (rule.limits.is_empty() && allowlist.admits(rule)) {
                    self.metrics.rule_decision(
                        &rule.counters,
                        &rule.name,
                        crate::metrics::Outcome::allowlisted,
                    );
                    continue;
                }
                if rule.limits.is_empty() {
                    continue;
                }
                if let Some(key) = rule.key.build(req) {
                    applicable.push((rule, key));
                }
            }
            applicable
        };
        // Rules are independent calls (different keys, maybe different slots): run them together.
        let outcomes = join_all(
            applicable
                .iter()
                .map(|(rule, key)| self.limiter.check(LimitSpec::from(*rule), key, 1)),
        )
        .await;

        let mut verdict = Verdict::Allowed;
        let mut items = Vec::new();
        for ((rule, _), (outcome, source)) in applicable.iter().zip(outcomes) {
            let outcome_label = counted(&outcome, source, rule.shadow);
            self.metrics
                .rule_decision(&rule.counters, &rule.name, outcome_label);
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
            let (allowed, retry_after_ms) = (outcome.allowed, outcome.retry_after_ms);
            for (i, mut state) in outcome.limits.into_iter().enumerate() {
                // A limit that denied is next passable at retry_after, which
                // can differ from when its window resets (sliding_window,
                // sliding_log): RateLimit's `t` then agrees with Retry-After.
                if !allowed && state.remaining == 0 {
                    state.reset_ms = retry_after_ms;
                }
                items.push(Item {
                    name: rule.item_names[i].clone(),
                    state,
                });
            }
        }
        Decision { verdict, items }
    }
}

/// Count a request a tracked rule matched (in memory; flushed each second).
fn track(app: &App, rule: &Rule, req: &RequestView<'_>) {
    if let Some(client) = req.client_key_ip {
        app.activity.request(&rule.name, req.path, client);
    }
}

/// The `outcome` label of `tollgate_decisions_total` for one rule's answer.
pub(crate) fn counted(outcome: &Outcome, source: Source, shadow: bool) -> Counted {
    match (outcome.allowed, source, shadow) {
        (false, _, true) => Counted::shadow_limited,
        (true, Source::Fallback, _) => Counted::fallback_allowed,
        (false, Source::Fallback, _) => Counted::fallback_limited,
        (true, _, _) => Counted::allowed,
        (false, _, _) => Counted::limited,
    }
}
