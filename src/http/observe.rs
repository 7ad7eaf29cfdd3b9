//! Around every request: a request id on every log line it causes, and
//! `tollgate_http_requests_total{endpoint, status}`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::app::App;
use crate::metrics::HttpLabels;

pub async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    // The route template, never the raw path: labels must not carry client data.
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| endpoint_label(p.as_str()));
    let id = span_id(req.headers());
    let resp = match id {
        Some(id) => {
            next.run(req)
                .instrument(tracing::info_span!("request", id = %id))
                .await
        }
        None => next.run(req).await,
    };
    count(&app, endpoint, &resp);
    resp
}

/// `observe` for the forward-auth handlers, which call it themselves: as a
/// layer it costs a boxed service clone and two wrapped futures per request
/// on the hottest route. Same span, same counter.
pub async fn observed(
    app: &App,
    endpoint: &'static str,
    headers: &HeaderMap,
    answer: impl Future<Output = Response>,
) -> Response {
    let resp = match span_id(headers) {
        Some(id) => {
            answer
                .instrument(tracing::info_span!("request", id = %id))
                .await
        }
        None => answer.await,
    };
    count(app, endpoint, &resp);
    resp
}

/// The request id, when request spans are logged (else none is built).
fn span_id(headers: &HeaderMap) -> Option<String> {
    if !tracing::enabled!(tracing::Level::INFO) {
        return None;
    }
    Some(
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map_or_else(new_id, str::to_string),
    )
}

fn count(app: &App, endpoint: &'static str, resp: &Response) {
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            endpoint,
            status: resp.status().as_u16(),
        })
        .inc();
}

/// Route templates as `'static` labels (no allocation per request).
fn endpoint_label(template: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/check",
        "/check/nginx",
        "/check/{*path}",
        "/v1/check",
        "/livez",
        "/readyz",
        "/metrics",
        "/v1/limits/{rule}/{*key}",
        "/v1/allowlist",
        "/v1/allowlist/check",
        "/v1/allowlist/{*cidr}",
        "/v1/heartbeat",
        "/v1/activity/online",
        "/v1/activity/active",
        "/v1/activity/summary",
        "/v1/activity/paths/{*path}",
        "/v1/status",
        "/v1/rules",
        "/",
        "/ui/app.js",
        "/ui/app.css",
    ];
    ROUTES
        .iter()
        .find(|r| **r == template)
        .copied()
        .unwrap_or("other")
}

/// A process-unique id: a random start plus a counter.
fn new_id() -> String {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| rand::random::<u32>() as u64);
    format!("{:08x}{:08x}", start, NEXT.fetch_add(1, Ordering::Relaxed))
}
