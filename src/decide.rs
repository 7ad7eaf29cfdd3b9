//! From a request to a decision: a client on the denylist is refused first;
//! then every matching rule applies, and the request
//! passes only if all pass. Its rules are charged all or nothing
//! (`Limiter::check_all`): a request one rule refuses spends no other rule's quota.

use std::sync::Arc;

use crate::allowlist::gate::Membership;
use crate::app::App;
use crate::check::caps::Refused;
use crate::check::{Ask, LimitSpec, Source};
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
    /// The client is on the denylist: refused before any rule is charged.
    /// `retry_after_ms`: until a timed entry ends (`None`: permanent).
    Denied {
        retry_after_ms: Option<u64>,
    },
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
    /// Decide a forward-auth request. A charge past the caps is refused
    /// (configured rules cost 1 each, which every cap admits; the core
    /// checks anyway, so no surface depends on that).
    pub async fn decide(&self, req: &RequestView<'_>) -> Result<Decision, Refused> {
        // The denylist first: a denied client is charged nothing, and a
        // manual deny beats the allowlist (README, "IP denylist").
        if let Some(retry_after_ms) = crate::allowlist::gate::denied(&self.denylist, req) {
            self.denied_requests.inc();
            return Ok(Decision {
                verdict: Verdict::Denied { retry_after_ms },
                items: Vec::new(),
            });
        }
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
                return Ok(Decision {
                    verdict: Verdict::NotAllowlisted,
                    items: Vec::new(),
                });
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
        let asks: Vec<Ask<'_>> = applicable
            .iter()
            .map(|(rule, key)| Ask {
                spec: LimitSpec::from(*rule),
                key,
                cost: 1,
                shadow: rule.shadow,
            })
            .collect();
        let outcomes = self.limiter.check_all(&asks).await?;

        let mut verdict = Verdict::Allowed;
        let mut items = Vec::new();
        // A rule left unasked (another was denied from the deny cache) is
        // neither counted nor reported.
        for ((rule, key), answer) in applicable.iter().zip(outcomes) {
            let Some((outcome, source)) = answer else {
                continue;
            };
            self.decided(rule, key, &outcome, source).await;
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
                    // An override may have more limits than its rule.
                    name: rule
                        .item_names
                        .get(i)
                        .unwrap_or(&rule.item_names[0])
                        .clone(),
                    state,
                });
            }
        }
        Ok(Decision { verdict, items })
    }
}

impl App {
    /// One rule's answer for one key, on any surface: counted in
    /// `tollgate_decisions_total`, and a limited key remembered for "who is
    /// hurting" (`GET /v1/rules/{rule}/top`; in memory, flushed each second).
    /// A limited answer of a banning rule is also a ban step (`ban.rs`),
    /// awaited so that a ban holds on this node before the answer leaves;
    /// any other answer costs no store call here.
    pub(crate) async fn decided(&self, rule: &Rule, key: &str, outcome: &Outcome, source: Source) {
        let label = counted(outcome, source, rule.shadow);
        self.metrics
            .rule_decision(&rule.counters, &rule.name, label);
        if label == Counted::limited {
            self.activity.limited(&rule.name, key);
        }
        if !outcome.allowed && rule.ban.is_some() {
            // Boxed: rare, and it keeps every surface's future small.
            Box::pin(self.ban_step(rule, key)).await;
        }
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
        (true, Source::Override, _) => Counted::override_unlimited,
        (false, Source::Override, _) => Counted::override_deny,
        (false, _, true) => Counted::shadow_limited,
        (true, Source::Fallback, _) => Counted::fallback_allowed,
        (false, Source::Fallback, _) => Counted::fallback_limited,
        (true, _, _) => Counted::allowed,
        (false, _, _) => Counted::limited,
    }
}
