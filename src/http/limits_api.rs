//! `GET` / `DELETE /v1/limits/{rule}/{key}`: see or clear one client's counters.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::response::ApiError;
use crate::app::App;
use crate::counters;
use crate::rule::{find_limited, Rule};

pub fn routes() -> Router<Arc<App>> {
    // `{*key}`: keys are opaque and may contain '/'.
    Router::new().route("/v1/limits/{rule}/{*key}", get(show).delete(reset))
}

fn find_rule(app: &App, name: &str) -> Result<Arc<Rule>, ApiError> {
    let rules = app.rules.load();
    let rule =
        find_limited(&rules, name).map_err(|e| ApiError::not_found("rule", e.to_string()))?;
    Ok(Arc::new(rule.clone()))
}

async fn show(State(app): State<Arc<App>>, Path((rule, key)): Path<(String, String)>) -> Response {
    let rule = match find_rule(&app, &rule) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // The override this node enforces for the key, if any: its rates are
    // what the counters are read against.
    let table = app.overrides.table();
    let overridden = table.lookup(&rule.name, &key);
    let applied = overridden.and_then(|(limits, _)| limits.applied_to(&rule));
    let shown = applied.as_ref().unwrap_or(&rule);
    match counters::show(&app.limiter.store, &app.keys, shown, &key).await {
        Ok(view) => {
            let mut v = json!(view);
            if let Some((limits, expires_at)) = overridden {
                v["override"] = json!({
                    "limits": limits.to_json(),
                    "expires_at": (expires_at != 0).then_some(expires_at),
                });
            }
            Json(v).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn reset(State(app): State<Arc<App>>, Path((rule, key)): Path<(String, String)>) -> Response {
    let rule = match find_rule(&app, &rule) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = counters::reset(&app.limiter.store, &app.keys, &rule, &key).await {
        return ApiError::from(e).into_response();
    }
    // An override's periods have counters of their own: cleared too.
    let table = app.overrides.table();
    if let Some(applied) = table
        .lookup(&rule.name, &key)
        .and_then(|(limits, _)| limits.applied_to(&rule))
    {
        if let Err(e) = counters::reset(&app.limiter.store, &app.keys, &applied, &key).await {
            return ApiError::from(e).into_response();
        }
    }
    // This replica at once; the others through the reset channel.
    let base = counters::base(&app.keys, &rule, &key);
    app.limiter.deny_cache.remove(&base);
    app.limiter.leases.forget(&base);
    app.limiter.fallback.reset(&base);
    Json(json!({"rule": rule.name, "key": key, "reset": true})).into_response()
}
