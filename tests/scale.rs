//! The allowlist at scale, in a test binary of its own: paged snapshots
//! racing writes, a 3-node 200 000-entry resync whose every Redis call is one
//! bounded page, mass expiry reaped in bounded calls, the fleet's page budget.
//! They assert work per call and call counts, never a call's duration (the
//! benchmark measures those: `scripts/bench_allowlist.py`).
//!
//! Why a binary of its own: cargo runs test binaries one after another, so
//! these tests never share the two cores with the rest of the suite (a
//! sustained-load or proxy test alongside would slow the 200 000-entry
//! resync a lot). Inside this binary they run one at a time as well
//! (`allowlist_scale::heavy`).

/// The same support code as `tests/tests.rs`; this binary uses only part of it.
#[allow(dead_code, unused_imports)]
mod support;

mod allowlist_scale;
