//! Around every request: a request id on every log line it causes, and
//! `tollgate_http_requests_total{endpoint, status}`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::app::App;

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
    app.metrics.http_request(endpoint, resp.status().as_u16());
}

/// A route template as a `'static` label: each template is interned the
/// first time it is seen, so every route the router has (and any added later)
/// is labelled by itself, with no list to keep, and no allocation per
/// request after the first. Templates are the router's, never client data:
/// the set is bounded by the routes.
fn endpoint_label(template: &str) -> &'static str {
    static SEEN: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(label) = seen.read().unwrap_or_else(|e| e.into_inner()).get(template) {
        return label;
    }
    let mut seen = seen.write().unwrap_or_else(|e| e.into_inner());
    if let Some(label) = seen.get(template) {
        return label;
    }
    let label: &'static str = Box::leak(template.to_owned().into_boxed_str());
    seen.insert(label);
    label
}

/// A process-unique id: a random start plus a counter.
fn new_id() -> String {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| rand::random::<u32>() as u64);
    format!("{:08x}{:08x}", start, NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::endpoint_label;

    #[test]
    fn a_route_template_is_its_own_label_interned_once() {
        let a = endpoint_label("/v1/some/{new}/route");
        let b = endpoint_label(&String::from("/v1/some/{new}/route"));
        assert_eq!(a, "/v1/some/{new}/route");
        assert!(std::ptr::eq(a, b), "one allocation per template");
    }
}
