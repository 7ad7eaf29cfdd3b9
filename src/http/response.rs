//! The one place where decisions and errors become HTTP responses.
//!
//! | decision            | /check                  | /check/nginx                                  |
//! |---------------------|-------------------------|-----------------------------------------------|
//! | allowed             | 200                     | 200                                           |
//! | limited             | 429 + Retry-After       | 403 + Retry-After + X-Tollgate-Reason: rate_limited |
//! | not allowlisted     | 403 + X-Tollgate-Reason: not_allowlisted | the same                     |
//! | denied (denylist)   | 403 + X-Tollgate-Reason: denied (+ Retry-After for a timed entry) | the same |
//! | bad input (JSON API)| 400 {"error", "field"}  |                                               |
//! | unbelievable headers, bad path | 400 {"error", "field"} | 403 + X-Tollgate-Reason: bad_request (nginx would turn a 400 into a 500) |
//! | Redis away (admin)  | 503 {"error"}           |                                               |
//! | Redis error, bad script reply (admin) | 500 {"error"} |                                 |
//!
//! Denials have an empty body: with a body nginx cannot keep its upstream
//! connection to us alive.

use axum::body::{Body, Bytes};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::decide::{Decision, Verdict};
use crate::limiter::tightest;
use crate::redis_conn::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Standard,
    /// nginx turns any auth-subrequest status but 2xx/401/403 into a 500.
    Nginx,
}

/// Seconds, rounded up.
fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

pub fn decision_response(decision: &Decision, flavor: Flavor) -> Response {
    let (status, headers) = decision_parts(decision, flavor);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The status and headers of a decision, as `/check` answers it; the gRPC
/// services (`grpc/`) send the same headers through Envoy.
pub fn decision_parts(decision: &Decision, flavor: Flavor) -> (StatusCode, HeaderMap) {
    let (status, retry_after_ms, reason) = match decision.verdict {
        Verdict::Allowed => (StatusCode::OK, None, None),
        Verdict::Limited { retry_after_ms } => match flavor {
            Flavor::Standard => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(retry_after_ms),
                Some("rate_limited"),
            ),
            Flavor::Nginx => (
                StatusCode::FORBIDDEN,
                Some(retry_after_ms),
                Some("rate_limited"),
            ),
        },
        Verdict::NotAllowlisted => (StatusCode::FORBIDDEN, None, Some("not_allowlisted")),
        Verdict::Denied { retry_after_ms } => {
            (StatusCode::FORBIDDEN, retry_after_ms, Some("denied"))
        }
    };
    // Room for all six at once: growing the map rehashes it.
    let mut headers = HeaderMap::with_capacity(8);
    let h = &mut headers;
    // Header names as constants: an `&str` name is parsed on every insert.
    if let Some(ms) = retry_after_ms {
        h.insert(RETRY_AFTER, num(secs(ms).max(1)));
    }
    if let Some(reason) = reason {
        h.insert(X_TOLLGATE_REASON, HeaderValue::from_static(reason));
    }
    if !decision.items.is_empty() {
        // IETF httpapi RateLimit headers (draft-ietf-httpapi-ratelimit-headers):
        // RateLimit-Policy: "login";q=5;w=60   RateLimit: "login";r=3;t=42
        let room: usize = decision.items.iter().map(|i| i.name.len() + 34).sum();
        let mut policy = String::with_capacity(room);
        let mut limit = String::with_capacity(room);
        for (i, item) in decision.items.iter().enumerate() {
            let s = &item.state;
            if i > 0 {
                policy.push_str(", ");
                limit.push_str(", ");
            }
            for (out, a, b, x, y) in [
                (&mut policy, ";q=", ";w=", s.limit, secs(s.period_ms)),
                (&mut limit, ";r=", ";t=", s.remaining, secs(s.reset_ms)),
            ] {
                out.push('"');
                out.push_str(&item.name);
                out.push('"');
                out.push_str(a);
                push_u64(out, x);
                out.push_str(b);
                push_u64(out, y);
            }
        }
        // The strings become the values' bytes (checked, not copied).
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(policy)) {
            h.insert(RATELIMIT_POLICY, v);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(limit)) {
            h.insert(RATELIMIT, v);
        }
        if let Some(t) = tightest(decision.items.iter().map(|i| &i.state)) {
            h.insert(X_RATELIMIT_LIMIT, num(t.limit));
            h.insert(X_RATELIMIT_REMAINING, num(t.remaining));
            h.insert(X_RATELIMIT_RESET, num(secs(t.reset_ms)));
        }
    }
    (status, headers)
}

/// A forward-auth request refused before any rule (`request::forwarded`, `path`).
pub fn refusal_response(field: &str, message: String, flavor: Flavor) -> Response {
    match flavor {
        Flavor::Standard => ApiError::bad(field, message).into_response(),
        Flavor::Nginx => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::FORBIDDEN;
            resp.headers_mut()
                .insert("x-tollgate-reason", HeaderValue::from_static("bad_request"));
            resp
        }
    }
}

const X_TOLLGATE_REASON: HeaderName = HeaderName::from_static("x-tollgate-reason");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Decimal digits of `n`, without the formatting machinery (hot path).
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

fn num(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// A client error on a JSON endpoint: `{"error": "...", "field": "..."}`.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn bad(field: impl Into<String>, error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field: Some(field.into()),
        }
    }
}

impl ApiError {
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "missing or wrong bearer token (Authorization: Bearer <token>)".into(),
            field: None,
        }
    }

    /// This server cannot answer the call at all (it needs Redis and runs
    /// the embedded store).
    pub fn unavailable(error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: error.into(),
            field: None,
        }
    }

    /// A bug on our side (a metric that cannot be written out).
    pub fn internal(error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: error.into(),
            field: None,
        }
    }

    pub fn not_found(field: impl Into<String>, error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: error.into(),
            field: Some(field.into()),
        }
    }
}

/// A store call of the admin API that failed: Redis slow or away (or the
/// data moving under a read), or refusing every call until an operator acts
/// (OOM, NOPERM: the message says which), is 503, try again later; Redis
/// answering with an error about this call or a reply we cannot read (a
/// script bug) is 500. After a timeout a write may still have happened; its
/// event tells every node either way.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = if e.is_transient() || e.refusal().is_some() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError {
            status,
            error: e.to_string(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(&self)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::push_u64;

    #[test]
    fn numbers_in_headers_are_plain_decimals() {
        for n in [0, 7, 10, 3600, 1_000_000_000, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
