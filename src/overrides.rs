//! Per-client overrides: one rule's limits replaced for one exact key (an
//! address, an `api_key` header value, a descriptor value), by an operator,
//! now, on every replica. A third kind of replicated list
//! (`allowlist::kind::ListKind::Override`): the same scripts, stream,
//! follower, embedded store, reaper, state file and recovery as the IP
//! lists, with another member (`key`: the rule and the key) and a payload
//! (`limits`: rates, `unlimited` or `deny`), in an exact-match table (`set`).
//!
//! A decision looks its (rule, key) up in this node's table, without Redis
//! (`Limiter::check_all` and `check` do, for every surface: `crate::check`).
//!
//! - `key`: the member, `rule/key` in Redis; `limits`: the payload;
//! - `set`: the table and its lookup; `input`: validation of a new override.

pub mod input;
pub mod key;
pub mod limits;
pub mod set;

use crate::allowlist::Allowlist;

pub use key::OverrideKey;
pub use limits::OverrideLimits;

/// The overrides: a list whose members are (rule, key) pairs.
pub type Overrides = Allowlist<OverrideKey>;
