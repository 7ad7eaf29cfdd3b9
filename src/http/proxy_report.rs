//! `POST /report` on the decision listener: a proxy tells tollgate what the
//! upstream answered to a request it asked `/check` about, so rules with
//! `count = "reported"` count failed logins without the application
//! (HAProxy's `http-response` hook in `deploy/haproxy/tollgate.lua`).
//!
//! The original request is described exactly as to `/check`
//! (`X-Forwarded-For`, `X-Forwarded-Uri`/`-Method`/`-Host` in the family of
//! `server.forwarded_request`), plus `X-Upstream-Status: 401`. → 200
//! `{"charged": [{"rule", "counted", "remaining", "retry_after_ms"}]}` (empty:
//! no rule counts that status for that request). A peer outside
//! `client_ip.trusted_proxies` gets 403 before anything is read; a bad header
//! a 400 naming it. The guards and the charges are `App::report_answer`'s
//! (`src/report.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::forward_auth::refuse;
use super::original::Original;
use super::report_api::Answer;
use super::response::{ApiError, Flavor};
use crate::app::App;
use crate::report::UPSTREAM_STATUS;

#[derive(Serialize)]
struct Charged {
    rule: String,
    #[serde(flatten)]
    answer: Answer,
}

#[derive(Serialize)]
struct Answers {
    charged: Vec<Charged>,
}

pub async fn report(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    // The body, if any, is not read: everything is in the headers.
    let (parts, _body) = req.into_parts();
    if let Err(e) = app.may_report(peer.ip()) {
        return ApiError::from(e).into_response();
    }
    let status = match upstream_status(&parts.headers) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let original = match Original::read(&app, peer, &parts.method, parts.uri.path(), &parts.headers)
    {
        Ok(o) => o,
        Err(refusal) => return refuse(&app, peer, refusal, Flavor::Standard),
    };
    match app
        .report_answer(peer.ip(), &original.view(&app), status)
        .await
    {
        Ok(charged) => Json(Answers {
            charged: charged
                .iter()
                .map(|c| Charged {
                    rule: c.rule.clone(),
                    answer: Answer::from(&c.reported),
                })
                .collect(),
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `X-Upstream-Status`: one header, three digits (the range is the core's).
fn upstream_status(headers: &axum::http::HeaderMap) -> Result<u16, ApiError> {
    let mut values = headers.get_all(UPSTREAM_STATUS).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::bad(
            UPSTREAM_STATUS,
            "give the upstream's status exactly once, e.g. X-Upstream-Status: 401",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u16>().ok())
        .ok_or_else(|| {
            ApiError::bad(
                UPSTREAM_STATUS,
                format!("{value:?} is not an HTTP status (100..599)"),
            )
        })
}
