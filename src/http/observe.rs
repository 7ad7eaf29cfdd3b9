//! Around every request: a request id on every log line it causes, and
//! `tollgate_http_requests_total{endpoint, status}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
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
        .map(|p| endpoint_label(p.as_str()));
    // The id only matters when request spans are logged; don't build it otherwise.
    let resp = if tracing::enabled!(tracing::Level::INFO) {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map_or_else(new_id, str::to_string);
        next.run(req)
            .instrument(tracing::info_span!("request", id = %id))
            .await
    } else {
        next.run(req).await
    };
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            endpoint: endpoint.unwrap_or("unmatched"),
            status: resp.status().as_u16(),
        })
        .inc();
    resp
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
