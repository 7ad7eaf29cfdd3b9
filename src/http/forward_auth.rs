//! `/check` and `/check/nginx`: forward-auth for nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `forwardAuth`, Envoy `ext_authz` (HTTP).
//!
//! The original request comes from the proxy's headers, believed only from a
//! trusted proxy and only in the configured family (`request::forwarded`);
//! its path is normalised (`path`) before any rule sees it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use super::observe::observed;
use super::original::Original;
use super::response::{decision_response, refusal_response, Flavor};
use crate::app::App;
use crate::metrics::ReasonLabels;
use crate::request::forwarded::{Refusal, RefusalReason};

// The handlers take the request whole: the `HeaderMap`, `Uri` and `Method`
// extractors would each clone their part of it.

pub async fn standard(State(app): State<Arc<App>>, req: Request) -> Response {
    routed(&app, req, Route::Standard).await
}

pub async fn nginx(State(app): State<Arc<App>>, req: Request) -> Response {
    routed(&app, req, Route::Nginx).await
}

pub async fn standard_with_path(State(app): State<Arc<App>>, req: Request) -> Response {
    routed(&app, req, Route::WithPath).await
}

/// The three forward-auth routes. `http::decision_handler` sends their
/// requests here directly, without the router: on the hottest path the
/// router's boxed service clone, body boxing and extension inserts cost more
/// than the decision (bench/README). The router keeps the same routes, so
/// both ways in answer alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/check`: the proxy names the URI in a header, else the path is `/check`.
    Standard,
    /// `/check/nginx`: the same, with nginx's answers.
    Nginx,
    /// `/check/{*path}`: Envoy's ext_authz appends the original path.
    WithPath,
}

impl Route {
    /// The route a raw request path takes, as the router would match it
    /// (`/check/` alone is left to the router).
    pub fn of(path: &str) -> Option<Route> {
        match path {
            "/check" => Some(Route::Standard),
            "/check/nginx" => Some(Route::Nginx),
            p if p.len() > "/check/".len() && p.starts_with("/check/") => Some(Route::WithPath),
            _ => None,
        }
    }

    /// The route's template: its `endpoint` label.
    fn endpoint(self) -> &'static str {
        match self {
            Route::Standard => "/check",
            Route::Nginx => "/check/nginx",
            Route::WithPath => "/check/{*path}",
        }
    }

    fn flavor(self) -> Flavor {
        match self {
            Route::Nginx => Flavor::Nginx,
            _ => Flavor::Standard,
        }
    }

    /// The URI asked about when the proxy names none.
    fn fallback_uri(self, parts: &Parts) -> &str {
        match self {
            Route::Standard => parts.uri.path(),
            Route::Nginx => "/",
            // `/check/login?x=1` asks about `/login?x=1` unless a header names the URI.
            // The raw target, not axum's decoded `Path`: normalising is `path`'s job,
            // and decoding `%2F` first would hide an ambiguity from it.
            Route::WithPath => {
                let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                target.strip_prefix("/check").unwrap_or(target)
            }
        }
    }
}

/// A forward-auth request straight from the connection (no router): the
/// body, if any, is not read.
pub async fn answer<B>(
    app: Arc<App>,
    route: Route,
    req: axum::http::Request<B>,
    peer: SocketAddr,
) -> Response {
    let (parts, _body) = req.into_parts();
    handle(&app, &parts, peer, route).await
}

/// A forward-auth request through the router (and its tests).
async fn routed(app: &App, req: Request, route: Route) -> Response {
    let (mut parts, _body) = req.into_parts();
    // The peer as the `ConnectInfo` extractor finds it, a test's
    // `MockConnectInfo` included; without one, its 500.
    let peer = match ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, &()).await {
        Ok(ConnectInfo(peer)) => peer,
        Err(rejection) => return rejection.into_response(),
    };
    handle(app, &parts, peer, route).await
}

/// One forward-auth request: the decision, and its own metrics under the
/// route's `endpoint`.
async fn handle(app: &App, parts: &Parts, peer: SocketAddr, route: Route) -> Response {
    let answer = decide(
        app,
        peer,
        &parts.method,
        route.fallback_uri(parts),
        &parts.headers,
        route.flavor(),
    );
    observed(app, route.endpoint(), &parts.headers, answer).await
}

/// Read the original request from the proxy's headers and decide it.
/// `fallback_uri` is used when the proxy names no URI.
async fn decide(
    app: &App,
    peer: SocketAddr,
    method: &Method,
    fallback_uri: &str,
    headers: &HeaderMap,
    flavor: Flavor,
) -> Response {
    let original = match Original::read(app, peer, method, fallback_uri, headers) {
        Ok(o) => o,
        Err(refusal) => return refuse(app, peer, refusal, flavor),
    };
    let view = original.view(app);
    match app.decide(&view).await {
        Ok(decision) => decision_response(&decision, flavor),
        // A charge past the caps (not reachable with validated rules of cost 1).
        Err(refused) => refusal_response("cost", refused.message, flavor),
    }
}

/// Set once the first misconfiguration-shaped refusal has been logged: one
/// warning says what to fix; the metric counts every one after it.
static WARNED: AtomicBool = AtomicBool::new(false);

pub(super) fn refuse(app: &App, peer: SocketAddr, refusal: Refusal, flavor: Flavor) -> Response {
    app.metrics
        .refused_requests
        .get_or_create(&ReasonLabels {
            reason: refusal.reason.label(),
        })
        .inc();
    let config_smell = matches!(
        refusal.reason,
        RefusalReason::UntrustedPeer | RefusalReason::WrongFamily
    );
    if config_smell && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(peer = %peer.ip(), field = refusal.field, "forward-auth request refused: {} (further refusals are counted in tollgate_refused_requests_total, not logged)", refusal.message);
    } else {
        tracing::debug!(peer = %peer.ip(), field = refusal.field, "forward-auth request refused: {}", refusal.message);
    }
    refusal_response(refusal.field, refusal.message, flavor)
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn the_direct_routes_match_what_the_router_matches_and_nothing_more() {
        for (path, route) in [
            ("/check", Some(Route::Standard)),
            ("/check/nginx", Some(Route::Nginx)),
            ("/check/login", Some(Route::WithPath)),
            ("/check/nginx/", Some(Route::WithPath)),
            ("/check//x", Some(Route::WithPath)),
            ("/check/%2e%2e/admin", Some(Route::WithPath)),
            // Left to the router: `/check/{*path}` needs a segment, and the rest are other paths.
            ("/check/", None),
            ("/checkx", None),
            ("/check%2Fnginx", None),
            ("/CHECK", None),
            ("/v1/check", None),
            ("/", None),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
    }
}
