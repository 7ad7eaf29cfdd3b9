//! The HTTP surfaces: the decision API (for proxies and applications) and the
//! admin API (health, metrics, the allowlist and counters behind a token).
//! Routing only; handlers live in the submodules, JSON bodies are read in
//! `body`, and every answer is shaped in `response`.

mod activity_api;
mod admin;
pub mod admin_page;
mod allowlist_api;
mod api_check;
mod auth;
mod body;
mod forward_auth;
mod limits_api;
mod observe;
pub mod response;
mod status_api;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post};
use axum::Router;

use crate::app::App;

/// Routes on `server.listen`.
pub fn decision_router(app: Arc<App>) -> Router {
    Router::new()
        // The forward-auth handlers observe themselves (`observe::observed`).
        .route("/check", any(forward_auth::standard))
        .route("/check/nginx", any(forward_auth::nginx))
        // Envoy's ext_authz appends the original path to its path_prefix.
        .route("/check/{*path}", any(forward_auth::standard_with_path))
        .route(
            "/v1/check",
            post(api_check::check)
                .layer(DefaultBodyLimit::max(api_check::MAX_BODY_BYTES))
                .route_layer(from_fn_with_state(app.clone(), observe::observe)),
        )
        .route(
            "/v1/heartbeat",
            post(activity_api::heartbeat)
                .layer(DefaultBodyLimit::max(activity_api::MAX_HEARTBEAT_BYTES))
                .route_layer(from_fn_with_state(app.clone(), observe::observe)),
        )
        .with_state(app)
}

/// Routes on `server.admin_listen`: health and metrics open, `/v1/*` behind the bearer token.
pub fn admin_router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        // Each admin area adds its routes here.
        .merge(limits_api::routes())
        .merge(allowlist_api::routes())
        .merge(status_api::routes())
        .route_layer(from_fn_with_state(app.clone(), auth::require_token));
    Router::new()
        .route("/livez", get(admin::livez))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        // The admin page (`/`, `/ui/*`): open, like /metrics; it holds no
        // data and asks the `/v1/*` API with the token the operator types.
        .merge(admin_page::routes())
        .merge(v1)
        // Bare counts open, listings behind the token: see activity_api.
        .merge(activity_api::routes(app.clone()))
        .route_layer(from_fn_with_state(app.clone(), observe::observe))
        .with_state(app)
}
