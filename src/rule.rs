//! A rule: which requests it matches, what it counts them by, and its limits.

pub mod ban;
mod changes;
mod descriptor;
mod key;
mod matcher;

pub use changes::Changes;
pub use descriptor::{DescriptorEntry, DescriptorRule, MAX_ENTRIES as MAX_DESCRIPTOR_ENTRIES};
pub use key::{KeyPart, KeyTemplate, UnknownKeyPart};
pub use matcher::Matcher;

use std::sync::Arc;

use crate::limiter::{Algorithm, LeaseSize};
use crate::metrics::RuleCounters;
use crate::named::named_enum;
use crate::rate::Rate;

#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique; appears in Redis keys, response headers and metric labels.
    pub name: String,
    pub matcher: Matcher,
    pub key: KeyTemplate,
    /// All must pass. Empty only for a pure allowlist gate (`allowlist = "require"`).
    pub limits: Vec<Rate>,
    /// The limits as written, for headers and `config check` output.
    pub limit_specs: Vec<String>,
    /// Each limit's name in the RateLimit headers (see `item_name`), built once.
    pub item_names: Vec<Arc<str>>,
    pub algorithm: Algorithm,
    /// gcra only: the bucket size (units that may pass at once); None: the limit.
    /// Only with a single limit (see `config/validate.rs`).
    pub burst: Option<u64>,
    pub allowlist: AllowlistMode,
    pub on_redis_error: OnRedisError,
    /// What charges the rule: every request it matches, or the application's
    /// reports (`POST /v1/report`) while requests only check it.
    pub count: Count,
    /// `count = "reported"` only: the upstream statuses that charge the rule
    /// when a proxy reports an answer (`POST /report`); empty for a rule
    /// counting requests, and for one only the application charges.
    pub report_statuses: Vec<u16>,
    pub shadow: bool,
    /// fixed_window only: hot keys are decided from slices of their quota
    /// taken from Redis in advance (`limiter/lease.rs`).
    pub lease: Option<LeaseSize>,
    /// `Some`: a rule for Envoy's rate limit service (gRPC), keyed by a
    /// descriptor; `/check` and ext_authz never apply it.
    pub descriptor: Option<DescriptorRule>,
    /// `Some(track_paths)`: a tracked rule (`track = true`): its requests,
    /// clients and at most this many paths per hour are counted (`activity`).
    pub track: Option<u32>,
    /// `Some`: limited answers for a client address ban it (`ban.rs`, `src/ban.rs`).
    pub ban: Option<ban::Ban>,
    /// This rule's `tollgate_decisions_total` handles, resolved on first use.
    pub counters: RuleCounters,
}

/// How a rule treats allowlisted clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowlistMode {
    /// Members skip this rule.
    Bypass,
    /// Non-members get 403.
    Require,
    Ignore,
}

/// What a rule answers when Redis is slow or down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRedisError {
    Allow,
    Deny,
    /// An in-process limiter with the same algorithm, per replica.
    Local,
}

/// `report_statuses` when a rule with `count = "reported"` names none: the
/// answers that mean "these credentials failed" (401: not authenticated,
/// 403: not allowed). Not 429, an upstream's own limit (counting it would
/// charge a client again for being limited), nor 400/404 (a client's bug
/// more often than an attack); a rule that wants them lists them.
pub const DEFAULT_REPORT_STATUSES: [u16; 2] = [401, 403];

/// What a rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Every request the rule matches is charged (when it passes).
    Requests,
    /// Requests are only checked (allowed while the counter has room, charged
    /// nothing); the application charges outcomes with `POST /v1/report`,
    /// e.g. failed logins.
    Reported,
}

named_enum!(Count, "count", {
    "requests" => Requests, "reported" => Reported,
});
named_enum!(AllowlistMode, "allowlist mode", {
    "bypass" => Bypass, "require" => Require, "ignore" => Ignore,
});
named_enum!(OnRedisError, "on_redis_error", {
    "allow" => Allow, "deny" => Deny, "local" => Local,
});

/// Everything but the name, as `config check` prints it and a reload
/// compares it: `match path_prefix=/login methods=POST; key ip; limits [5/m]; …`.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.matcher;
        let mut cond = Vec::new();
        if let Some(p) = &m.path_prefix {
            cond.push(format!("path_prefix={p}"));
        }
        if let Some(p) = &m.path_starts_with {
            cond.push(format!("path_starts_with={p}"));
        }
        if let Some(p) = &m.path {
            cond.push(format!("path={p}"));
        }
        if let Some(ms) = &m.methods {
            cond.push(format!("methods={}", ms.join(",")));
        }
        if let Some(h) = &m.host {
            cond.push(format!("host={h}"));
        }
        let cond = match (&self.descriptor, cond.is_empty()) {
            (Some(d), _) => format!("RLS {d}"),
            (None, true) => "every request".to_string(),
            (None, false) => cond.join(" "),
        };
        let key = match &self.descriptor {
            Some(d) => match &d.override_max {
                Some(max) => format!("descriptor values (overrides up to {max})"),
                None => "descriptor values".to_string(),
            },
            None => self.key.to_string(),
        };
        let limits: Vec<String> = self.limits.iter().map(|l| l.to_string()).collect();
        write!(
            f,
            "match {}; key {}; limits [{}]; algorithm {}{}{}; allowlist {}; on_redis_error {}{}{}{}{}",
            cond,
            key,
            limits.join(", "),
            self.algorithm,
            self.burst
                .map(|b| format!(" (burst {b})"))
                .unwrap_or_default(),
            self.lease
                .map(|l| format!(" (lease {l})"))
                .unwrap_or_default(),
            self.allowlist,
            self.on_redis_error,
            if self.count == Count::Reported {
                format!(
                    "; counts reports (upstream statuses {:?})",
                    self.report_statuses
                )
            } else {
                String::new()
            },
            if self.shadow { "; shadow" } else { "" },
            self.track
                .map(|n| format!("; tracked (up to {n} paths an hour)"))
                .unwrap_or_default(),
            self.ban.map(|b| format!("; {b}")).unwrap_or_default()
        )
    }
}

impl Rule {
    /// Name of one limit's item in the RateLimit headers and in `config check`:
    /// the rule name alone when it has one limit, else `rule:spec` (e.g. `login:20/h`).
    pub fn item_name(name: &str, specs: &[String], index: usize) -> Arc<str> {
        if specs.len() == 1 {
            Arc::from(name)
        } else {
            Arc::from(format!("{}:{}", name, specs[index]))
        }
    }
}

/// Why a rule named by a caller (`POST /v1/check`, `/v1/limits`, `tollgate
/// limits`) cannot be used to count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleLookupError {
    #[error("unknown rule {0:?}")]
    Unknown(String),
    #[error("rule {0:?} has no limits (it is an allowlist gate)")]
    NoLimits(String),
}

/// The rule called `name`, if it has limits to count: the one lookup every
/// caller that names a rule goes through.
pub fn find_limited<'r>(rules: &'r [Rule], name: &str) -> Result<&'r Rule, RuleLookupError> {
    let rule = rules
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| RuleLookupError::Unknown(name.to_string()))?;
    if rule.limits.is_empty() {
        return Err(RuleLookupError::NoLimits(name.to_string()));
    }
    Ok(rule)
}
