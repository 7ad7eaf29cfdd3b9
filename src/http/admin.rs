//! The admin listener's open routes: liveness, readiness and `/metrics`
//! (the token-protected `/v1/*` routes are `limits_api` and `allowlist_api`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::response::ApiError;
use crate::app::App;

/// The process runs and serves HTTP; says nothing about Redis.
pub async fn livez() -> &'static str {
    "ok\n"
}

/// Ready to decide with its real store: Redis answered, the scripts are
/// loaded and the allowlist's first snapshot is in (or its state file). The
/// body's last words say how fresh the allowlist is: `in sync`, `stale` (Redis
/// unreachable, with the age) or `source_lost` (Redis holds no allowlist),
/// then the same for the denylist and the overrides.
pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, String) {
    let (status, body) = readiness(&app);
    let allowlist = crate::allowlist::status::describe(&app.allowlist);
    let denylist = crate::allowlist::status::describe(&app.denylist);
    let overrides = crate::allowlist::status::describe(&app.overrides);
    (
        status,
        format!(
            "{}; {allowlist}; {denylist}; {overrides}\n",
            body.trim_end()
        ),
    )
}

fn readiness(app: &App) -> (StatusCode, String) {
    let synced = [
        (app.allowlist.kind(), app.allowlist.is_synced()),
        (app.denylist.kind(), app.denylist.is_synced()),
        (app.overrides.kind(), app.overrides.is_synced()),
    ];
    for (kind, synced) in synced {
        if !synced {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the {kind} snapshot is not loaded yet\n"),
            );
        }
    }
    if app.is_ready() {
        let store = match &app.config.redis {
            Some(r) if !app.limiter.store.is_local() => {
                // Still ready while Redis is away: the node decides by each
                // rule's on_redis_error. The words say which it is now.
                let now = match app.limiter.breaker.refusing() {
                    Some(class) => format!(
                        "; Redis refuses calls ({}): rules apply their on_redis_error",
                        class.label()
                    ),
                    None if app.limiter.breaker.is_open() => {
                        "; Redis unreachable: rules apply their on_redis_error".into()
                    }
                    None => String::new(),
                };
                format!("redis, {}{now}", r.endpoint.transport())
            }
            _ => "in-process store".into(),
        };
        (StatusCode::OK, format!("ready ({store})\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Redis has not answered yet or scripts are not loaded\n".into(),
        )
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    match app.metrics.render() {
        Ok(body) => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("rendering the metrics: {e}")).into_response(),
    }
}
