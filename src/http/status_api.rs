//! `GET /v1/status` and `GET /v1/rules` (behind the bearer token): this
//! node's health and its rules as JSON, for the admin page and for scripts.
//!
//! `/readyz` says the same in words and `/metrics` in counters; these put
//! them in one document a program can read without parsing either:
//!
//! - `/v1/status`: version, uptime, readiness, Redis up/down (or the embedded
//!   store), the allowlist's freshness (`in_sync`, `stale` with the sync age,
//!   `source_lost`, `in_process`), entries, epoch, seq, seq lag, resyncs by
//!   reason, and `tollgate_decisions_total` per rule and outcome (a client
//!   polls it and differences the counts for rates), and `restart_pending`:
//!   the settings a reload changed that wait for a restart (`config::diff`),
//!   and `fleet`: the replicas sharing this Redis as the last beat saw them
//!   (`fleet.rs`) and what the `local` fallback divides by.
//!   and `config`: the running config's file, hash, load time and source
//!   (`config::watch::Loaded`), equal on replicas that run the same file.
//! - `/v1/rules`: every rule as loaded (after a reload, the new ones): match,
//!   key, limits, algorithm, burst, lease, allowlist mode, on_redis_error, shadow.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::allowlist::status::{self, Reason};
use crate::app::App;
use crate::config::FallbackReplicas;
use crate::metrics::{DecisionLabels, Outcome};
use crate::rule::Rule;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/status", get(node_status))
        .route("/v1/rules", get(rules))
}

async fn node_status(State(app): State<Arc<App>>) -> Json<Value> {
    Json(status_json(&app))
}

async fn rules(State(app): State<Arc<App>>) -> Json<Value> {
    let rules = app.rules.load();
    Json(json!({ "rules": rules.iter().map(rule_json).collect::<Vec<_>>() }))
}

/// One list's freshness (`allowlist`, `denylist`: the same shape).
fn list_json<M: crate::allowlist::member::Member>(list: &crate::allowlist::Allowlist<M>) -> Value {
    let st = list.status();
    let table = list.table();
    let resyncs: Map<String, Value> = Reason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), json!(st.resync_count(*r))))
        .collect();
    json!({
        "freshness": status::freshness(list),
        "synced": list.is_synced(),
        "sync_age_ms": st.sync_age().map(|a| a.as_millis() as u64),
        "entries": table.live_count(table.clock.now_ms()),
        "epoch": table.epoch,
        "seq": table.seq,
        "seq_lag": st.seq_lag(),
        "resyncs": resyncs,
        "summary": status::describe(list),
        "born": status::birth_json(list),
    })
}

fn status_json(app: &App) -> Value {
    let redis = if app.limiter.store.is_local() {
        json!({"store": "embedded", "up": null})
    } else {
        json!({
            "store": "redis",
            "up": app.metrics.redis_up.get() == 1,
            // Redis answers but refuses calls until an operator acts (oom, auth, noperm, misconf).
            "refusing": app.limiter.breaker.refusing().map(|r| r.label()),
            "open_slots": app.metrics.redis_open_slots.get(),
            // Cluster: slots whose master refuses calls, per class (one OOM master).
            "refusing_slots": app.limiter.slots.as_ref().map(|slots| {
                slots.refusing().into_iter().map(|(r, n)| (r.label().to_string(), json!(n))).collect::<Map<String, Value>>()
            }),
            "reset_channel_up": app.metrics.reset_channel_up.get() == 1,
        })
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": app.started.elapsed().as_millis() as u64,
        "ready": app.is_ready() && app.allowlist.is_synced() && app.denylist.is_synced() && app.overrides.is_synced(),
        "redis": redis,
        "allowlist": list_json(&app.allowlist),
        "denylist": list_json(&app.denylist),
        "overrides": list_json(&app.overrides),
        "decisions": decisions(app),
        "restart_pending": app.restart_pending(),
        "fleet": fleet(app),
        "config": &**app.loaded.load(),
    })
}

/// The fleet registry as this replica last saw it; `null` with the
/// embedded store (one replica, no registry).
fn fleet(app: &App) -> Value {
    let fleet = &app.fleet;
    if !fleet.enabled() {
        return Value::Null;
    }
    let seen = fleet.seen();
    let replicas: Vec<Value> = seen.as_ref().map_or_else(Vec::new, |seen| {
        seen.members
            .iter()
            .map(|m| {
                let age = m.last_seen.elapsed().as_millis() as u64;
                let d = &m.description;
                json!({
                    "id": m.id,
                    "this": m.id == fleet.id,
                    "version": d.version,
                    "config_hash": d.config_hash,
                    // Its uptime at that beat, and the time since.
                    "uptime_ms": d.uptime_ms + age,
                    "listen": d.listen,
                    "last_seen_ms_ago": age,
                })
            })
            .collect()
    });
    let setting = app
        .latest
        .load()
        .redis
        .as_ref()
        .map(|r| match r.fallback_replicas {
            FallbackReplicas::Auto => json!("auto"),
            FallbackReplicas::Fixed(n) => json!(n),
        });
    json!({
        "id": fleet.id,
        "registry_up": fleet.registry_up(),
        "seen_ms_ago": seen.as_ref().map(|s| s.at.elapsed().as_millis() as u64),
        "live": fleet.live.get(),
        "fallback_replicas": setting,
        "fallback_divisor": app.limiter.fallback_divisor(),
        "replicas": replicas,
    })
}

/// `{"rule": {"allowed": n, "limited": n, …}}` for every loaded rule.
fn decisions(app: &App) -> Map<String, Value> {
    app.rules
        .load()
        .iter()
        .map(|rule| {
            let counts: Map<String, Value> = Outcome::ALL
                .iter()
                .map(|&outcome| {
                    let n = app
                        .metrics
                        .decisions
                        .get_or_create(&DecisionLabels {
                            rule: rule.name.clone(),
                            outcome,
                        })
                        .get();
                    (format!("{outcome:?}"), json!(n))
                })
                .collect();
            (rule.name.clone(), Value::Object(counts))
        })
        .collect()
}

fn rule_json(rule: &Rule) -> Value {
    let m = &rule.matcher;
    json!({
        "name": rule.name,
        "match": {
            "path": m.path,
            "path_prefix": m.path_prefix,
            "path_starts_with": m.path_starts_with,
            "methods": m.methods,
            "host": m.host,
        },
        "descriptor": rule.descriptor.as_ref().map(|d| d.to_string()),
        "key": rule.key.to_string(),
        "limits": rule.limit_specs,
        "algorithm": rule.algorithm.to_string(),
        "burst": rule.burst,
        // `"auto"`, a slice size, or null: no lease (`limiter/lease.rs`).
        "lease": rule.lease.map(|l| l.to_string()),
        "allowlist": rule.allowlist.to_string(),
        "on_redis_error": rule.on_redis_error.to_string(),
        "shadow": rule.shadow,
        // `null`, or the ban as `config check` prints it (`rule::Ban`).
        // As the config writes it (durations in humantime's words).
        "ban": rule.ban.map(|b| {
            let h = |d| humantime::format_duration(d).to_string();
            json!({
                "after": b.after,
                "within": h(b.within),
                "for": h(b.duration),
                "factor": b.factor,
                "max": h(b.max),
                "remember": h(b.remember),
            })
        }),
    })
}
