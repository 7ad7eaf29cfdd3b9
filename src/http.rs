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
mod original;
mod overrides_api;
mod params;
mod proxy_report;
mod report_api;
pub mod response;
mod status_api;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;

use crate::app::App;

/// What a listener does with each request and the peer it came from
/// (`server::accept` calls it for every request of a connection).
pub type Handler = Arc<
    dyn Fn(hyper::Request<hyper::body::Incoming>, SocketAddr) -> Answer + Send + Sync + 'static,
>;
/// The answer to come.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// `server.listen`: the forward-auth routes straight to their handler (the
/// hottest path skips the router's per-request boxing; same answers), every
/// other request through `decision_router`.
pub fn decision_handler(app: Arc<App>) -> Handler {
    let router = decision_router(app.clone());
    Arc::new(move |req, peer| {
        if let Some(route) = forward_auth::Route::of(req.uri().path()) {
            return Box::pin(forward_auth::answer(app.clone(), route, req, peer));
        }
        if req.method() == Method::POST && req.uri().path() == "/v1/check" {
            return Box::pin(api_check::direct(app.clone(), req));
        }
        routed(&router, req, peer)
    })
}

/// `server.admin_listen`: everything through `admin_router`.
pub fn admin_handler(app: Arc<App>) -> Handler {
    let router = admin_router(app);
    Arc::new(move |req, peer| routed(&router, req, peer))
}

/// A request through a router, the peer given as `ConnectInfo`.
fn routed(
    router: &Router,
    mut req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Answer {
    use tower_service::Service;
    req.extensions_mut().insert(ConnectInfo(peer));
    // A Router is always ready (axum's `Service::poll_ready` is `Ready(Ok)`).
    let call = router.clone().call(req);
    Box::pin(async move {
        let answer: Result<Response, Infallible> = call.await;
        match answer {
            Ok(r) => r,
            Err(never) => match never {},
        }
    })
}

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
            // `api_check` reads its body up to its own bound.
            post(api_check::check).route_layer(from_fn_with_state(app.clone(), observe::observe)),
        )
        // A proxy's report of the upstream's answer (HAProxy's response hook).
        .route(
            "/report",
            post(proxy_report::report)
                .route_layer(from_fn_with_state(app.clone(), observe::observe)),
        )
        .route(
            "/v1/report",
            post(report_api::report).route_layer(from_fn_with_state(app.clone(), observe::observe)),
        )
        .route(
            "/v1/heartbeat",
            // `heartbeat` reads its body up to its own bound.
            post(activity_api::heartbeat)
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
        .merge(overrides_api::routes())
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
