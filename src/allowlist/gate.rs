//! What a rule's `allowlist` mode makes of one request: `bypass` lets members
//! skip the rule, `require` refuses non-members (403), `ignore` does nothing.
//! Before any of that, `denied`: a client on the denylist is refused (403)
//! whatever the rules and the allowlist say.
//! The client is `RequestView::client_ip` (the full canonical address, not
//! the /64 the `ip` key uses), looked up once per request at most.

use std::cell::Cell;
use std::net::IpAddr;

use super::Allowlist;
use crate::request::RequestView;
use crate::rule::{AllowlistMode, Rule};

/// Allowlist membership of one request's client, looked up on first use.
pub struct Membership<'a> {
    allowlist: &'a Allowlist,
    client: Option<IpAddr>,
    member: Cell<Option<bool>>,
}

impl<'a> Membership<'a> {
    pub fn new(allowlist: &'a Allowlist, req: &RequestView<'_>) -> Self {
        Membership {
            allowlist,
            client: req.client_ip,
            member: Cell::new(None),
        }
    }

    fn member(&self) -> bool {
        if let Some(m) = self.member.get() {
            return m;
        }
        // No client address (an application call): not a member.
        let m = self.client.is_some_and(|ip| self.allowlist.contains(ip));
        self.member.set(Some(m));
        m
    }

    /// A `require` rule refuses this client (a shadow rule never refuses).
    pub fn refuses(&self, rule: &Rule) -> bool {
        rule.allowlist == AllowlistMode::Require && !rule.shadow && !self.member()
    }

    /// A `require` rule lets this client through its gate.
    pub fn admits(&self, rule: &Rule) -> bool {
        rule.allowlist == AllowlistMode::Require && self.member()
    }

    /// A `bypass` rule lets this client skip its limits.
    pub fn bypasses(&self, rule: &Rule) -> bool {
        rule.allowlist == AllowlistMode::Bypass && self.member()
    }
}

/// The denylist's answer for one request's client, asked before any rule and
/// before the allowlist (a manual deny beats an allow): `Some(retry)` when a
/// live entry holds the client (`retry`: ms until a timed entry ends, `None`
/// for a permanent one). No client address (`POST /v1/check`): never denied.
pub fn denied(denylist: &Allowlist, req: &RequestView<'_>) -> Option<Option<u64>> {
    denylist.holds(req.client_ip?)
}
