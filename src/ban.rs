//! Bans that follow from a rule (`rule::ban`): each limited answer of a
//! banning rule for a client address is one ban step. `App::decided` runs it,
//! so every surface that decides (forward-auth, `/v1/check`, RLS, ext_authz)
//! goes through it, and nothing else does.
//!
//! The step, in order, stopping at the first that answers:
//! - an exempt allowlist entry holds the address: never banned automatically
//!   (no store call);
//! - this node's denylist already refuses it: not banned again (no call);
//! - one store call (`Allowlist::ban`; in Redis `lua/deny_ban.lua` in the
//!   denylist's slot) counts the answer and, on an offence, writes the deny
//!   entry through the list's one upsert, actor `rule:<name>`;
//! - after a ban, this node waits (bounded) until its own table holds the
//!   entry, so the client's next request here is refused; other nodes get it
//!   from the stream.
//!
//! A failed step changes no answer: the request was limited and stays so;
//! the step is counted (`outcome="failed"`), and the state is logged once
//! entering and once leaving (`tollgate_ban_step_failing`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::allowlist::ban::{BanAnswer, BanAsk};
use crate::app::App;
use crate::rule::Rule;

/// A ban step's store call may take this long; then it failed (the answer
/// it would add to is a 429 already on its way).
const STEP_TIMEOUT: Duration = Duration::from_millis(500);
/// After a ban, how long this node waits for its follower to apply it.
const APPLY_WAIT: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    rule: String,
    /// exempt, already_denied, counted, banned, shadow, failed
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BanLabels {
    rule: String,
    /// "true": a shadow rule's would-be ban (nothing was written).
    shadow: &'static str,
}

/// The ban step's metrics and failure state.
#[derive(Default)]
pub struct Bans {
    steps: Family<StepLabels, Counter>,
    bans: Family<BanLabels, Counter>,
    failing_gauge: Gauge,
    /// The last step failed: logged once when it starts, once when it ends.
    failing: AtomicBool,
}

impl Bans {
    pub fn new(registry: &mut Registry) -> Bans {
        let b = Bans::default();
        registry.register(
            "ban_steps",
            "Ban steps (limited answers of banning rules) by rule and outcome",
            b.steps.clone(),
        );
        registry.register(
            "bans",
            "Addresses banned by a rule (shadow=\"true\": would have been, by a shadow rule)",
            b.bans.clone(),
        );
        registry.register(
            "ban_step_failing",
            "1 while ban steps fail (the store did not answer); limited answers are unchanged",
            b.failing_gauge.clone(),
        );
        b
    }

    fn step(&self, rule: &str, outcome: &'static str) {
        self.steps
            .get_or_create(&StepLabels {
                rule: rule.to_string(),
                outcome,
            })
            .inc();
    }

    fn ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            self.failing_gauge.set(0);
            tracing::info!("ban steps work again");
        }
    }

    fn failed(&self, rule: &str, error: &dyn std::fmt::Display) {
        self.step(rule, "failed");
        if !self.failing.swap(true, Ordering::Relaxed) {
            self.failing_gauge.set(1);
            tracing::warn!(rule, error = %error, "ban steps fail: limited clients are not banned until the denylist's store answers");
        }
    }
}

impl App {
    /// One limited answer of `rule` (which bans) for the client key `key`.
    pub(crate) async fn ban_step(&self, rule: &Rule, key: &str) {
        let Some(ban) = &rule.ban else { return };
        // A banning rule is keyed by the address alone (`config/validate/ban.rs`).
        let Ok(ip) = key.parse::<IpAddr>() else {
            return;
        };
        let ip = crate::net::canonical(ip);
        let bans = &self.bans;
        if self.allowlist.exempts(ip) {
            bans.step(&rule.name, "exempt");
            return;
        }
        if self.denylist.holds(ip).is_some() {
            bans.step(&rule.name, "already_denied");
            return;
        }
        let ask = BanAsk {
            cidr: self.banned_net(ip),
            rule: &rule.name,
            ban,
            shadow: rule.shadow,
        };
        let answer = match tokio::time::timeout(STEP_TIMEOUT, self.denylist.ban(&ask)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return bans.failed(&rule.name, &e),
            Err(_) => return bans.failed(&rule.name, &"timed out"),
        };
        bans.ok();
        match answer {
            BanAnswer::AlreadyDenied => bans.step(&rule.name, "already_denied"),
            BanAnswer::Counted(_) => bans.step(&rule.name, "counted"),
            BanAnswer::Shadow {
                offence,
                ttl_ms,
                note,
            } => {
                bans.step(&rule.name, "shadow");
                bans.bans
                    .get_or_create(&BanLabels {
                        rule: rule.name.clone(),
                        shadow: "true",
                    })
                    .inc();
                tracing::info!(rule = %rule.name, cidr = %ask.cidr, offence, ttl_ms, actor = %ask.actor(), %note, "would ban (shadow rule): nothing written");
            }
            BanAnswer::Banned {
                stored,
                offence,
                ttl_ms,
            } => {
                bans.step(&rule.name, "banned");
                bans.bans
                    .get_or_create(&BanLabels {
                        rule: rule.name.clone(),
                        shadow: "false",
                    })
                    .inc();
                tracing::info!(rule = %rule.name, cidr = %ask.cidr, offence, ttl_ms, seq = stored.seq, "banned");
                self.denylist.applied(stored.seq, APPLY_WAIT).await;
            }
        }
    }

    /// What a ban denies: the address, or its IPv6 network by `client_ip.ipv6_prefix`.
    fn banned_net(&self, ip: IpAddr) -> IpNet {
        let len = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => self.resolver.ipv6_prefix(),
        };
        IpNet::new(ip, len).expect("prefix within width").trunc()
    }
}
