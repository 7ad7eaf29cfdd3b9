//! The one place a stored override changes a limiter call (`crate::overrides`):
//! `Limiter::check` and `check_all` pass every ask through `apply`, so every
//! surface (forward-auth, `POST /v1/check`, RLS, ext_authz, reported
//! counts) sees the same override. A lookup in this node's table: no Redis
//! call, no lock, no allocation.
//!
//! - rates: the ask keeps its rule, algorithm and key and takes the
//!   override's rates. Counter keys are built from the algorithm, the rule,
//!   the key and each period, so a rate with a period the rule has keeps
//!   that period's counter (`10/m` → `100/m` keeps the 7 already spent), and
//!   a new period starts its own. The gcra bucket is the override's limit
//!   (the rule's `burst` is sized for the rule's limit), and hot-key leases
//!   are off for the key (a lease's slices are cut from the rule's limit).
//! - `unlimited`: admitted without a limiter call (`override_unlimited`).
//! - `deny`: refused without a limiter call (`override_deny`); `Retry-After`
//!   is what remains of a timed override, else `DENY_RETRY_MS`.
//!
//! An override whose rates the running caps refuse for a call (the rule's
//! algorithm changed since it was set, or a cost past its smallest rate) is
//! left out of that call: the rule's own limits decide (`Limiter::override_of`).
//!
//! A stored override also beats an RLS descriptor's own `limit`: an operator
//! set it for that exact key, the more specific and deliberate act.

use crate::allowlist::table::Table;
use crate::limiter::Outcome;
use crate::overrides::{OverrideKey, OverrideLimits};

use super::LimitSpec;

/// `Retry-After` of a permanent `deny` override: a client is told to come
/// back in a minute, not never (an operator lifts a deny by removing it).
pub const DENY_RETRY_MS: u64 = 60_000;

/// What an override makes of one ask.
pub enum Overridden<'t> {
    /// The ask with the override's rates.
    Spec(LimitSpec<'t>),
    /// Answered without a limiter call: `unlimited` or `deny`.
    Answer(Outcome),
}

/// The override of (`spec.rule`, `key`) live now in `table`, if any.
pub fn apply<'t>(
    table: &'t Table<OverrideKey>,
    spec: &LimitSpec<'t>,
    key: &str,
) -> Option<Overridden<'t>> {
    if table.is_empty() {
        return None;
    }
    let now_ms = table.clock.now_ms();
    let (limits, expires_at) = table.lookup_at(spec.rule, key, now_ms)?;
    Some(match limits {
        OverrideLimits::Rates(rates) => Overridden::Spec(LimitSpec {
            limits: rates,
            burst: None,
            lease: None,
            ..*spec
        }),
        OverrideLimits::Unlimited => Overridden::Answer(Outcome {
            allowed: true,
            retry_after_ms: 0,
            limits: Vec::new(),
        }),
        OverrideLimits::Deny => Overridden::Answer(Outcome {
            allowed: false,
            retry_after_ms: match expires_at {
                0 => DENY_RETRY_MS,
                at => at.saturating_sub(now_ms).max(1),
            },
            limits: Vec::new(),
        }),
    })
}
