//! Reports: the application charges a rule with `count = "reported"` after
//! the fact ("this login failed"), while requests only check it. Two ways in,
//! both here so the guards live in one place: who may report (a trusted
//! peer), which rules take reports, how a client becomes the rule's key (as a
//! request from it would: IPv4-mapped folded, IPv6 by
//! `client_ip.ipv6_prefix`), the key bound and the caps.
//!
//! - `App::report`: the application names the rule and the client or key
//!   (`POST /v1/report`).
//! - `App::report_answer`: a proxy describes the original request as it does
//!   to `/check` and adds the upstream's status (`POST /report`, HAProxy's
//!   `http-response` hook); every rule with `count = "reported"` that the
//!   request matches and whose `report_statuses` hold the status is charged
//!   one unit, each on its own (a full counter adds nothing to it and does
//!   not stop the others: each counts its own failures).

use std::net::IpAddr;

use crate::allowlist::gate::Membership;
use crate::app::App;
use crate::check::caps::CapField;
use crate::check::{LimitSpec, Source};
use crate::limiter::Outcome;
use crate::metrics::ReportLabels;
use crate::request::RequestView;
use crate::rule::{find_limited, Count, Rule};

/// Whom a report is about.
pub enum Who<'a> {
    /// A client address, as text: the rule must be keyed by `ip` alone.
    Client(&'a str),
    /// The key exactly as the rule builds it (a header's value, a user id).
    Key(&'a str),
}

/// Why a report was refused; it charged nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum ReportError {
    /// The peer may not report (not in `client_ip.trusted_proxies`).
    Forbidden(String),
    /// Bad input: the field, and what is wrong with it.
    Bad {
        field: &'static str,
        message: String,
    },
}

/// What a report did to one rule.
pub struct Reported {
    /// false: the rule's counter was full already (the client is limited
    /// anyway); nothing was added.
    pub counted: bool,
    pub outcome: Outcome,
    pub source: Source,
}

/// What a proxy's report did to one rule it charged.
pub struct RuleReported {
    pub rule: String,
    pub reported: Reported,
}

/// The header a proxy names the upstream's status in (`POST /report`).
pub const UPSTREAM_STATUS: &str = "x-upstream-status";

fn bad(field: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::Bad {
        field,
        message: message.into(),
    }
}

impl App {
    /// Charge `cost` units of `rule` for `who`, reported by `peer`.
    pub async fn report(
        &self,
        peer: IpAddr,
        rule: &str,
        who: Who<'_>,
        cost: u64,
    ) -> Result<Reported, ReportError> {
        self.may_report(peer)?;
        let rules = self.rules.load();
        let rule = find_limited(&rules, rule).map_err(|e| bad("rule", e.to_string()))?;
        if rule.count != Count::Reported {
            return Err(bad(
                "rule",
                format!(
                    "rule {:?} counts requests, not reports (set count = \"reported\" on it)",
                    rule.name
                ),
            ));
        }
        let key = match who {
            Who::Client(text) => {
                let ip: IpAddr = text.trim().parse().map_err(|_| {
                    bad("client", format!("{text:?} is not an IPv4 or IPv6 address"))
                })?;
                let ip = self.resolver.key_ip(crate::net::canonical(ip));
                rule.key.for_client(ip).ok_or_else(|| {
                    bad(
                        "client",
                        format!(
                            "rule {:?} is keyed by {}, not by the client address alone: give \"key\"",
                            rule.name, rule.key
                        ),
                    )
                })?
            }
            Who::Key(key) => {
                let max = self.limiter.caps().max_key_bytes;
                if key.is_empty() || key.len() > max {
                    return Err(bad(
                        "key",
                        format!("must be 1 to {max} bytes (api.max_key_bytes)"),
                    ));
                }
                key.to_string()
            }
        };
        self.charge_report(rule, &key, cost).await
    }

    /// A peer may report only from `client_ip.trusted_proxies`: a client
    /// must not charge another's failures. Every way in asks this first.
    pub fn may_report(&self, peer: IpAddr) -> Result<(), ReportError> {
        if self.resolver.is_trusted(peer) {
            return Ok(());
        }
        Err(ReportError::Forbidden(format!(
            "only a peer in client_ip.trusted_proxies may report; {peer} is not one"
        )))
    }

    /// The upstream answered `status` to `req` (as a proxy describes it, by
    /// `peer`): charge one unit of every rule that counts reports, matches
    /// the request and lists the status, keyed as `/check` keys the request.
    /// A rule the allowlist lets this client bypass is not charged (`/check`
    /// never asks it either). No rule applies: an empty list.
    pub async fn report_answer(
        &self,
        peer: IpAddr,
        req: &RequestView<'_>,
        status: u16,
    ) -> Result<Vec<RuleReported>, ReportError> {
        self.may_report(peer)?;
        if !(100..=599).contains(&status) {
            return Err(bad(
                UPSTREAM_STATUS,
                format!("{status} is not an HTTP status (100..599)"),
            ));
        }
        let rules = self.rules.load();
        let applicable: Vec<(&Rule, String)> = {
            // Membership is looked up at most once, and not held across an await.
            let allowlist = Membership::new(&self.allowlist, req);
            rules
                .iter()
                .filter(|r| {
                    r.count == Count::Reported
                        && r.descriptor.is_none()
                        && r.report_statuses.contains(&status)
                        && r.matcher.matches(req)
                        && !allowlist.bypasses(r)
                })
                // A key part the request lacks (a header it did not send):
                // not this rule's request, as for `/check`.
                .filter_map(|r| r.key.build(req).map(|key| (r, key)))
                .collect()
        };
        let mut charged = Vec::new();
        for (rule, key) in applicable {
            let reported = self.charge_report(rule, &key, 1).await?;
            charged.push(RuleReported {
                rule: rule.name.clone(),
                reported,
            });
        }
        Ok(charged)
    }

    /// Charge `cost` units of a reported rule for `key`, within the caps,
    /// and count the report in `tollgate_reports_total{rule,counted}`.
    async fn charge_report(
        &self,
        rule: &Rule,
        key: &str,
        cost: u64,
    ) -> Result<Reported, ReportError> {
        let spec = LimitSpec {
            charge: true,
            ..LimitSpec::from(rule)
        };
        let (outcome, source) = self.limiter.check(spec, key, cost).await.map_err(|r| {
            let field = match r.field {
                CapField::Cost => "cost",
                CapField::Burst => "rule",
                CapField::Limit(_) => "rule",
            };
            bad(field, r.message)
        })?;
        let counted = outcome.allowed;
        self.metrics
            .reports
            .get_or_create(&ReportLabels {
                rule: rule.name.clone(),
                counted: if counted { "true" } else { "false" },
            })
            .inc();
        Ok(Reported {
            counted,
            outcome,
            source,
        })
    }
}
