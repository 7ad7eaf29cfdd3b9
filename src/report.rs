//! Reports: the application charges a rule with `count = "reported"` after
//! the fact ("this login failed"), while requests only check it. Every
//! surface that takes a report (`POST /v1/report`, HAProxy's response hook
//! through it) calls `App::report`, so the guards live here: who may report
//! (a trusted peer), which rules take reports, how a client address becomes
//! the rule's key (as a request from it would: IPv4-mapped folded, IPv6 by
//! `client_ip.ipv6_prefix`), the key bound and the caps.

use std::net::IpAddr;

use crate::app::App;
use crate::check::caps::CapField;
use crate::check::{LimitSpec, Source};
use crate::limiter::Outcome;
use crate::metrics::ReportLabels;
use crate::rule::{find_limited, Count};

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

/// What a report did.
pub struct Reported {
    /// false: the rule's counter was full already (the client is limited
    /// anyway); nothing was added.
    pub counted: bool,
    pub outcome: Outcome,
    pub source: Source,
}

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
        if !self.resolver.is_trusted(peer) {
            return Err(ReportError::Forbidden(format!(
                "only a peer in client_ip.trusted_proxies may report; {peer} is not one"
            )));
        }
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
        let spec = LimitSpec {
            charge: true,
            ..LimitSpec::from(rule)
        };
        let (outcome, source) = self.limiter.check(spec, &key, cost).await.map_err(|r| {
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
