//! Inspecting and resetting one rule's counters for one key: the admin API
//! (`/v1/limits/{rule}/{key}`) and the CLI (`tollgate limits`) share this.

use serde::Serialize;

use crate::keys::KeySpace;
use crate::limiter::{Call, Store};
use crate::redis_conn::StoreError;
use crate::rule::Rule;

#[derive(Debug, Serialize)]
pub struct CounterView {
    pub rule: String,
    pub key: String,
    pub algorithm: String,
    pub limits: Vec<LimitView>,
}

#[derive(Debug, Serialize)]
pub struct LimitView {
    pub limit: String,
    pub window_ms: u64,
    /// Units counted now (for sliding_window, the weighted estimate).
    pub used: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// The counters of `rule` for `key`, read without charging anything.
/// Keys are opaque: any string is looked up verbatim.
pub async fn show(
    store: &Store,
    keys: &KeySpace,
    rule: &Rule,
    key: &str,
) -> Result<CounterView, StoreError> {
    let base = keys.limit_base(rule.algorithm, &rule.name, key);
    let outcome = store
        .peek(Call {
            algorithm: rule.algorithm,
            base: &base,
            limits: &rule.limits,
            cost: 0,
            burst: rule.burst,
            charge: true,
        })
        .await?;
    Ok(CounterView {
        rule: rule.name.clone(),
        key: key.to_string(),
        algorithm: rule.algorithm.to_string(),
        limits: outcome
            .limits
            .iter()
            .zip(&rule.limit_specs)
            .map(|(s, spec)| LimitView {
                limit: spec.clone(),
                window_ms: s.period_ms,
                used: s.limit - s.remaining.min(s.limit),
                remaining: s.remaining,
                reset_ms: s.reset_ms,
            })
            .collect(),
    })
}

/// Delete the counters of `rule` for `key` and tell every replica (deny caches).
pub async fn reset(
    store: &Store,
    keys: &KeySpace,
    rule: &Rule,
    key: &str,
) -> Result<(), StoreError> {
    let base = keys.limit_base(rule.algorithm, &rule.name, key);
    store
        .reset(&base, &rule.limits, &keys.reset_channel())
        .await
}

/// The rule's base key for `key` (for callers that clear local caches too).
pub fn base(keys: &KeySpace, rule: &Rule, key: &str) -> String {
    keys.limit_base(rule.algorithm, &rule.name, key)
}
