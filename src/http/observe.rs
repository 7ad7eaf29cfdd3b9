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
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .map_or_else(new_id, str::to_string);
    let span = tracing::info_span!("request", id = %id);
    let resp = next.run(req).instrument(span).await;
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            endpoint,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// A process-unique id: a random start plus a counter.
fn new_id() -> String {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| rand::random::<u32>() as u64);
    format!("{:08x}{:08x}", start, NEXT.fetch_add(1, Ordering::Relaxed))
}
