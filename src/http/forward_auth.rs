//! `/check` and `/check/nginx`: forward-auth for nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `forwardAuth`, Envoy `ext_authz` (HTTP).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::response::{decision_response, Flavor};
use crate::app::App;
use crate::request::RequestView;

pub async fn standard(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    decide(&app, peer, &method, uri.path(), &headers, Flavor::Standard).await
}

pub async fn nginx(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    decide(&app, peer, &method, "/", &headers, Flavor::Nginx).await
}

pub async fn standard_with_path(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // `/check/login?x=1` asks about `/login?x=1` unless a header names the URI.
    let mut original = String::with_capacity(path.len() + 1);
    original.push('/');
    original.push_str(&path);
    if let Some(q) = uri.query() {
        original.push('?');
        original.push_str(q);
    }
    decide(&app, peer, &method, &original, &headers, Flavor::Standard).await
}

/// Read the original request from the proxy's headers and decide it.
/// `fallback_uri` is used when no `X-Original-URI` / `X-Forwarded-Uri` is sent.
async fn decide(
    app: &App,
    peer: SocketAddr,
    method: &Method,
    fallback_uri: &str,
    headers: &HeaderMap,
    flavor: Flavor,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let uri = header("x-original-uri")
        .or_else(|| header("x-forwarded-uri"))
        .unwrap_or(fallback_uri);
    let (path, query) = RequestView::split_uri(uri);
    let method = header("x-original-method")
        .or_else(|| header("x-forwarded-method"))
        .unwrap_or(method.as_str());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .map(RequestView::strip_port);
    let client = app.resolver.resolve(peer.ip(), headers);
    let view = RequestView {
        method,
        path,
        query,
        host,
        headers,
        client_ip: Some(client),
        client_key_ip: Some(app.resolver.key_ip(client)),
    };
    let decision = app.decide(&view).await;
    decision_response(&decision, flavor)
}
