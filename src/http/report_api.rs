//! `POST /v1/report` on the decision listener: an application charges a rule
//! with `count = "reported"` after the fact.
//!
//! `{"rule": "login", "client": "203.0.113.9"}` or `{"rule": "login", "key":
//! "user:42", "cost": 1}` → 200 `{"counted", "remaining", "retry_after_ms"}`
//! (`counted: false`: the counter was full already). Only from a peer in
//! `client_ip.trusted_proxies` (403 otherwise); bad input is a 400 naming the
//! field and charges nothing. The guards are `App::report`'s (`src/report.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::{json_body, read_limited};
use super::response::ApiError;
use crate::app::App;
use crate::report::{ReportError, Reported, Who};

/// A report is a rule name, a client or key, and a cost.
pub const MAX_REPORT_BYTES: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body_ {
    rule: String,
    client: Option<String>,
    key: Option<String>,
    cost: Option<u64>,
}

/// What a report did to one rule (`POST /report` lists one per rule).
#[derive(Serialize)]
pub(super) struct Answer {
    counted: bool,
    remaining: u64,
    retry_after_ms: u64,
}

impl From<&Reported> for Answer {
    fn from(reported: &Reported) -> Self {
        Answer {
            counted: reported.counted,
            remaining: reported.outcome.tightest().map_or(0, |t| t.remaining),
            retry_after_ms: reported.outcome.retry_after_ms,
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Forbidden(message) => ApiError {
                status: StatusCode::FORBIDDEN,
                error: message,
                field: None,
            },
            ReportError::Bad { field, message } => ApiError::bad(field, message),
        }
    }
}

pub async fn report(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    match answer(&app, peer, body).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(app: &App, peer: SocketAddr, body: Body) -> Result<Answer, ApiError> {
    let bytes = read_limited(body, MAX_REPORT_BYTES).await?;
    let body: Body_ = json_body(&bytes)?;
    let who = match (&body.client, &body.key) {
        (Some(client), None) => Who::Client(client),
        (None, Some(key)) => Who::Key(key),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("key", "give either client or key, not both"))
        }
        (None, None) => {
            return Err(ApiError::bad(
                "client",
                "missing: give the client's address, or the rule's key",
            ))
        }
    };
    let reported = app
        .report(peer.ip(), &body.rule, who, body.cost.unwrap_or(1))
        .await?;
    Ok(Answer::from(&reported))
}
