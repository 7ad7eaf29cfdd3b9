//! The metrics of the request path, the limiter and Redis, registered here;
//! the allowlist registers its own (`allowlist/status.rs`) into the same registry.
//! Labels never carry client keys or IPs: only rule names and fixed words.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How one rule decided one request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    allowed,
    limited,
    /// A shadow rule would have denied.
    shadow_limited,
    /// Redis was away; `on_redis_error` allowed.
    fallback_allowed,
    /// Redis was away; `on_redis_error` denied.
    fallback_limited,
    /// A `require` rule and a client not on the allowlist.
    not_allowlisted,
    /// The allowlist let the request through this rule: a `require` gate
    /// without limits passed, or a `bypass` rule skipped.
    allowlisted,
    /// A stored override `unlimited`: admitted without a limiter call.
    override_unlimited,
    /// A stored override `deny`: refused without a limiter call.
    override_deny,
}

impl Outcome {
    /// This outcome's place in `ALL`.
    pub fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|o| *o == self)
            .expect("ALL lists every outcome")
    }

    pub const ALL: [Outcome; 9] = [
        Outcome::allowed,
        Outcome::limited,
        Outcome::shadow_limited,
        Outcome::fallback_allowed,
        Outcome::fallback_limited,
        Outcome::not_allowlisted,
        Outcome::allowlisted,
        Outcome::override_unlimited,
        Outcome::override_deny,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub rule: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// The class of a Redis refusal (`oom`, `auth`, `noperm`, `misconf`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

/// A report (`POST /v1/report`): its rule, and whether it was counted
/// (false: the rule's counter was full already).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportLabels {
    pub rule: String,
    pub counted: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/check`, `/v1/limits/{rule}/{*key}`).
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `ShouldRateLimit` or `Check`.
    pub method: &'static str,
    /// The gRPC status name (`OK`, `INVALID_ARGUMENT`).
    pub code: &'static str,
}

/// How a lease rule's hot-key decision was answered (`limiter/lease.rs`):
/// `slice` from a slice held here (no Redis call); `take_granted`,
/// `take_denied`, `take_failed`: one Redis call that took a slice, or was
/// denied one, or failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    pub how: &'static str,
}

/// The lease counters, cloned into the limiter's lease table.
#[derive(Clone, Default)]
pub struct LeaseMetrics {
    pub decisions: Family<LeaseLabels, Counter>,
    pub units_granted: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `decision`, `admin` or `grpc`.
    pub listener: &'static str,
}

pub struct Metrics {
    /// Tells this registry's cached handles from another's (`rule_decision`,
    /// `http_request`): tests run several apps in one process.
    id: u64,
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub redis_call_duration: Histogram,
    pub redis_errors: Family<KindLabels, Counter>,
    pub redis_up: Gauge,
    /// 1 for the class Redis refuses limiter calls with (OOM, ACL...), else 0.
    pub redis_refusing: Family<ClassLabels, Gauge>,
    pub deny_cache_hits: Counter,
    pub leases: LeaseMetrics,
    pub redis_open_slots: Gauge,
    pub redis_refusing_slots: Family<ClassLabels, Gauge>,
    pub reset_channel_up: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// Forward-auth requests refused before any rule: original-request
    /// headers not believable, or a path that cannot be normalised.
    pub refused_requests: Family<ReasonLabels, Counter>,
    pub reports: Family<ReportLabels, Counter>,
    pub deny_cache_evictions: Counter,
    pub local_store_refusals: Counter,
    pub open_connections: Family<ListenerLabels, Gauge>,
}

/// Handles cached per thread by `Metrics::http_request`.
const HTTP_CACHE_SLOTS: usize = 64;

/// A rule's `tollgate_decisions_total` series, one per outcome, resolved on
/// its first decision (`Metrics::rule_decision`). A copy of a rule starts
/// unresolved, so a rule cloned into another app counts in that app's metrics.
#[derive(Debug, Default)]
pub struct RuleCounters(OnceLock<(u64, [Counter; Outcome::ALL.len()])>);

impl Clone for RuleCounters {
    fn clone(&self) -> Self {
        RuleCounters::default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions per rule and outcome",
            decisions.clone(),
        );
        // 50 µs .. ~100 ms: a local Redis answers in well under a millisecond.
        let redis_call_duration = Histogram::new([
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        ]);
        registry.register(
            "redis_call_duration_seconds",
            "Duration of limiter calls to Redis",
            redis_call_duration.clone(),
        );
        let redis_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "redis_errors",
            "Failed Redis calls by kind (timeout, unreachable, refused, server)",
            redis_errors.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "redis_up",
            "1 while Redis answers, 0 while decisions use on_redis_error",
            redis_up.clone(),
        );
        let redis_refusing = Family::<ClassLabels, Gauge>::default();
        for refusal in crate::redis_conn::Refusal::ALL {
            // Every class present from the start: 0 is a value an alert can read.
            let _ = redis_refusing.get_or_create(&ClassLabels {
                class: refusal.label(),
            });
        }
        registry.register(
            "redis_refusing",
            "1 while Redis refuses limiter calls with this class of error until an operator acts (oom, auth, noperm, misconf)",
            redis_refusing.clone(),
        );
        let deny_cache_hits = Counter::default();
        registry.register(
            "deny_cache_hits",
            "Denials answered from the local deny cache without Redis",
            deny_cache_hits.clone(),
        );
        let leases = LeaseMetrics::default();
        registry.register(
            "lease_decisions",
            "Hot-key decisions of lease rules: from a slice held here (how=slice, no Redis call), or one Redis call taking a slice (take_granted, take_denied, take_failed)",
            leases.decisions.clone(),
        );
        registry.register(
            "lease_units_granted",
            "Units handed to this replica in lease slices (each counted in Redis first)",
            leases.units_granted.clone(),
        );
        let redis_open_slots = Gauge::default();
        registry.register(
            "redis_open_slots",
            "Redis Cluster slots whose keys use on_redis_error because their master failed",
            redis_open_slots.clone(),
        );
        let redis_refusing_slots = Family::<ClassLabels, Gauge>::default();
        for refusal in crate::redis_conn::Refusal::ALL {
            let _ = redis_refusing_slots.get_or_create(&ClassLabels {
                class: refusal.label(),
            });
        }
        registry.register(
            "redis_refusing_slots",
            "Redis Cluster slots whose master refuses limiter calls with this class of error (oom, auth, noperm, misconf); their keys use on_redis_error",
            redis_refusing_slots.clone(),
        );
        let reset_channel_up = Gauge::default();
        registry.register(
            "reset_channel_up",
            "1 while this replica hears resets from other replicas (its deny cache is in use), 0 otherwise",
            reset_channel_up.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            http_requests.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls (Envoy's rate limit service and ext_authz) by method and status code",
            grpc_requests.clone(),
        );
        let refused_requests = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Forward-auth requests refused before any rule (untrusted_peer, wrong_header_family, duplicate_header, not_ascii, bad_host, bad_path)",
            refused_requests.clone(),
        );
        let reports = Family::<ReportLabels, Counter>::default();
        registry.register(
            "reports",
            "Reports charged to rules with count = \"reported\" (POST /v1/report), by rule and whether they were counted (false: the counter was full)",
            reports.clone(),
        );
        let deny_cache_evictions = Counter::default();
        registry.register(
            "deny_cache_evictions",
            "Deny-cache entries dropped to stay under redis.deny_cache_bytes",
            deny_cache_evictions.clone(),
        );
        let local_store_refusals = Counter::default();
        registry.register(
            "local_store_refusals",
            "In-process calls answered as limited because local_store.max_bytes was reached",
            local_store_refusals.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Open HTTP connections per listener (at most server.max_connections each)",
            open_connections.clone(),
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            grpc_requests,
            registry,
            refused_requests,
            reports,
            deny_cache_evictions,
            local_store_refusals,
            open_connections,
            decisions,
            redis_call_duration,
            redis_errors,
            redis_up,
            redis_refusing,
            deny_cache_hits,
            leases,
            redis_open_slots,
            redis_refusing_slots,
            reset_channel_up,
            http_requests,
        }
    }

    /// Let another module register its own metrics (e.g. the allowlist's).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Count one decision of a rule that has no `RuleCounters` at hand (the
    /// ad-hoc `POST /v1/check` rule names).
    pub fn decision(&self, rule: &str, outcome: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels {
                rule: rule.to_string(),
                outcome,
            })
            .inc();
    }

    /// Count one decision of a configured rule through its own handles: the
    /// series are looked up on the rule's first decision, not on every one
    /// (a lookup takes the family's lock and hashes a `String` label).
    pub fn rule_decision(&self, counters: &RuleCounters, rule: &str, outcome: Outcome) {
        let owner = self.id;
        let resolved = counters.0.get_or_init(|| {
            let series = Outcome::ALL.map(|o| {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        rule: rule.to_string(),
                        outcome: o,
                    })
                    .clone()
            });
            (owner, series)
        });
        if resolved.0 == owner {
            resolved.1[outcome.index()].inc();
        } else {
            // A rule resolved against another `Metrics` (a test's second app on
            // one parsed config): count it here, the slow way.
            self.decision(rule, outcome);
        }
    }

    /// `tollgate_http_requests_total{endpoint, status}` + 1, through a
    /// per-thread cache of the handles: a hot route answers a handful of
    /// statuses, and the family lookup would take its lock on every request.
    pub fn http_request(&self, endpoint: &'static str, status: u16) {
        thread_local! {
            static SEEN: RefCell<Vec<(u64, &'static str, u16, Counter)>> = const { RefCell::new(Vec::new()) };
        }
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let hit = seen
                .iter()
                .find(|(id, e, s, _)| *id == self.id && std::ptr::eq(*e, endpoint) && *s == status);
            if let Some((.., counter)) = hit {
                counter.inc();
                return;
            }
            let counter = self
                .http_requests
                .get_or_create(&HttpLabels { endpoint, status })
                .clone();
            counter.inc();
            // Bounded: routes × statuses seen by this thread; a stale entry of
            // a dropped `Metrics` (tests) only costs a slot.
            if seen.len() < HTTP_CACHE_SLOTS {
                seen.push((self.id, endpoint, status, counter));
            }
        });
    }

    /// Create every `rule × outcome` series of `tollgate_decisions_total` at 0
    /// (at start and on reload), so dashboards and `rate()` see a series from
    /// the first scrape instead of only after a rule's first decision.
    pub fn zero_decisions<'a>(&self, rules: impl IntoIterator<Item = &'a str>) {
        for rule in rules {
            for outcome in Outcome::ALL {
                let _ = self.decisions.get_or_create(&DecisionLabels {
                    rule: rule.to_string(),
                    outcome,
                });
            }
        }
    }

    /// Prometheus/OpenMetrics text exposition.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, Outcome, RuleCounters};

    fn line(m: &Metrics, start: &str) -> String {
        let text = m.render().unwrap();
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start} in\n{text}"))
            .to_string()
    }

    #[test]
    fn a_rules_handles_count_in_the_metrics_that_resolved_them_and_a_copy_starts_afresh() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let counters = RuleCounters::default();
        a.rule_decision(&counters, "login", Outcome::limited);
        a.rule_decision(&counters, "login", Outcome::limited);
        // The same handles used with another registry count there, not in `a`.
        b.rule_decision(&counters, "login", Outcome::limited);
        // A copied rule (another app's config) resolves against its own registry.
        let copy = counters.clone();
        b.rule_decision(&copy, "login", Outcome::allowed);
        let limited = r#"tollgate_decisions_total{rule="login",outcome="limited"}"#;
        let allowed = r#"tollgate_decisions_total{rule="login",outcome="allowed"}"#;
        assert_eq!(line(&a, limited), format!("{limited} 2"));
        assert_eq!(line(&b, limited), format!("{limited} 1"));
        assert_eq!(line(&b, allowed), format!("{allowed} 1"));
        assert_eq!(
            line(&a, allowed),
            format!("{allowed} 0"),
            "resolving made every outcome's series"
        );
    }

    #[test]
    fn cached_http_counters_keep_registries_and_statuses_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        for _ in 0..3 {
            a.http_request("/check", 200);
        }
        a.http_request("/check", 429);
        b.http_request("/check", 200);
        let ok = r#"tollgate_http_requests_total{endpoint="/check",status="200"}"#;
        let limited = r#"tollgate_http_requests_total{endpoint="/check",status="429"}"#;
        assert_eq!(line(&a, ok), format!("{ok} 3"));
        assert_eq!(line(&a, limited), format!("{limited} 1"));
        assert_eq!(line(&b, ok), format!("{ok} 1"));
    }

    #[test]
    fn every_outcome_has_its_own_index() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
