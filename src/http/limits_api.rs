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
use crate::rule::Rule;

pub fn routes() -> Router<Arc<App>> {
    // `{*key}`: keys are opaque and may contain '/'.
    Router::new().route("/v1/limits/{rule}/{*key}", get(show).delete(reset))
}

fn find_rule(app: &App, name: &str) -> Result<Arc<Rule>, ApiError> {
    let rules = app.rules.load();
    let rule = rules
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found("rule", format!("unknown rule {name:?}")))?;
    if rule.limits.is_empty() {
        return Err(ApiError::not_found(
            "rule",
            format!("rule {name:?} has no limits (it is an allowlist gate)"),
        ));
    }
    Ok(Arc::new(rule.clone()))
}

async fn show(State(app): State<Arc<App>>, Path((rule, key)): Path<(String, String)>) -> Response {
    let rule = match find_rule(&app, &rule) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match counters::show(&app.store, &app.keys, &rule, &key).await {
        Ok(view) => Json(view).into_response(),
        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
    }
}

async fn reset(State(app): State<Arc<App>>, Path((rule, key)): Path<(String, String)>) -> Response {
    let rule = match find_rule(&app, &rule) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = counters::reset(&app.store, &app.keys, &rule, &key).await {
        return ApiError::unavailable(e.to_string()).into_response();
    }
    // This replica at once; the others through the reset channel.
    let base = counters::base(&app.keys, &rule, &key);
    app.deny_cache.remove(&base);
    app.fallback.reset(&base);
    Json(json!({"rule": rule.name, "key": key, "reset": true})).into_response()
}
