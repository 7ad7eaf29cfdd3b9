//! Activity over HTTP (`src/activity/`).
//!
//! - `POST /v1/heartbeat` on the decision listener, for applications: the
//!   client is its address (by the trusted-proxy rules of `/check`), or the
//!   `id` of a JSON body `{"id": "..."}`.
//! - `GET /v1/activity/{online,active,summary,paths/...}` on the admin
//!   listener. The two bare counts (`online`, `active`) are open like
//!   `/metrics`; who is online (`list=true`), the summary and a path's counts
//!   name clients or paths, so they need the admin token.
//!
//! Bad input is a 400 naming the field, and writes nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::require_token;
use super::body::read_limited;
use super::params::Params;
use super::response::ApiError;
use crate::activity::query::{self, BadInput};
use crate::activity::{now_ms, MAX_ID_BYTES, NEEDS_REDIS};
use crate::app::App;

/// A heartbeat body is one short id.
pub const MAX_HEARTBEAT_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    id: String,
}

impl From<BadInput> for ApiError {
    fn from(b: BadInput) -> Self {
        ApiError::bad(b.field, b.message)
    }
}

/// `POST /v1/heartbeat`: 204 once recorded (in Redis within a second).
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !app.activity.enabled() {
        return ApiError::unavailable(NEEDS_REDIS).into_response();
    }
    // Over the bound: a JSON 413 naming the body, as soon as it passes it.
    let body = match read_limited(body, MAX_HEARTBEAT_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let member = if body.iter().all(u8::is_ascii_whitespace) {
        let client = app.resolver.resolve(peer.ip(), &headers);
        format!("ip:{}", app.resolver.key_ip(client))
    } else {
        match parse_id(&body) {
            Ok(id) => format!("id:{id}"),
            Err(e) => return e.into_response(),
        }
    };
    app.activity.heartbeat(&member);
    StatusCode::NO_CONTENT.into_response()
}

fn parse_id(body: &[u8]) -> Result<String, ApiError> {
    let parsed: HeartbeatBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "id",
            format!("expected an empty body or {{\"id\": \"...\"}}: {e}"),
        )
    })?;
    let id = parsed.id;
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::bad(
            "id",
            format!("must be 1 to {MAX_ID_BYTES} bytes"),
        ));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::bad(
            "id",
            "must hold no white space or control characters",
        ));
    }
    Ok(id)
}

/// The admin listener's activity routes.
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let guarded = Router::new()
        .route("/v1/activity/summary", get(summary))
        .route("/v1/activity/paths/{*path}", get(path))
        .route("/v1/rules/{rule}/top", get(top))
        .route_layer(from_fn_with_state(app, require_token));
    Router::new()
        .route("/v1/activity/online", get(online))
        .route("/v1/activity/active", get(active))
        .merge(guarded)
}

fn has_token(app: &App, headers: &HeaderMap) -> bool {
    match &app.config.server.admin_token {
        None => true,
        Some(token) => token.matches(
            headers
                .get("authorization")
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .unwrap_or(b""),
        ),
    }
}

fn failed(app: &App, e: crate::redis_conn::StoreError) -> Response {
    app.activity.forget_connection();
    ApiError::from(e).into_response()
}

async fn online(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let run = async {
        let p = Params::parse(raw.as_deref(), &["within", "list"])?;
        let within = query::parse_within(
            p.get("within").unwrap_or("10m"),
            &app.activity.config.load(),
        )?;
        let list = match p.get("list") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(ApiError::bad("list", "must be true or false")),
        };
        if list && !has_token(&app, &headers) {
            return Err(ApiError::unauthorized());
        }
        ready(&app)?;
        Ok((within, list))
    };
    let (within, list) = match run.await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let mut conn = app.activity.conn().await?;
        query::online(&mut conn, &app.activity.keys, within, now_ms(), list).await
    };
    match answer.await {
        Ok(o) => Json(o).into_response(),
        Err(e) => failed(&app, e),
    }
}

async fn active(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let days = Params::parse(raw.as_deref(), &["days"]).and_then(|p| {
        Ok(query::parse_days(
            p.get("days").unwrap_or("7"),
            &app.activity.config.load(),
        )?)
    });
    let days = match days.and_then(|d| ready(&app).map(|_| d)) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let mut conn = app.activity.conn().await?;
        query::active(&mut conn, &app.activity.keys, days, now_ms()).await
    };
    match answer.await {
        Ok(a) => Json(a).into_response(),
        Err(e) => failed(&app, e),
    }
}

/// The tracked rule a query names (`rule=`), or the only tracked rule.
fn tracked_rule(app: &App, p: &Params) -> Result<String, ApiError> {
    let rules = app.rules.load();
    let tracked: Vec<&str> = rules
        .iter()
        .filter(|r| r.track.is_some())
        .map(|r| r.name.as_str())
        .collect();
    match p.get("rule") {
        Some(name) if tracked.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(ApiError::bad(
            "rule",
            format!(
                "{name:?} is not a tracked rule (tracked: {})",
                tracked.join(", ")
            ),
        )),
        None if tracked.len() == 1 => Ok(tracked[0].to_string()),
        None => Err(ApiError::bad(
            "rule",
            format!(
                "name the tracked rule (tracked: {})",
                if tracked.is_empty() {
                    "none: set track = true on a rule".to_string()
                } else {
                    tracked.join(", ")
                }
            ),
        )),
    }
}

fn ready(app: &App) -> Result<(), ApiError> {
    if app.activity.enabled() {
        Ok(())
    } else {
        Err(ApiError::unavailable(NEEDS_REDIS))
    }
}

fn rule_and_hours(app: &App, raw: Option<&str>) -> Result<(String, u64), ApiError> {
    let p = Params::parse(raw, &["rule", "hours"])?;
    ready(app)?;
    let rule = tracked_rule(app, &p)?;
    let hours = query::parse_hours(p.get("hours").unwrap_or("24"), &app.activity.config.load())?;
    Ok((rule, hours))
}

async fn summary(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let (rule, hours) = match rule_and_hours(&app, raw.as_deref()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let mut conn = app.activity.conn().await?;
        query::summary(&mut conn, &app.activity.keys, &rule, hours, now_ms()).await
    };
    match answer.await {
        Ok(s) => Json(s).into_response(),
        Err(e) => failed(&app, e),
    }
}

async fn path(
    State(app): State<Arc<App>>,
    Path(raw): Path<String>,
    RawQuery(params): RawQuery,
) -> Response {
    let parsed = rule_and_hours(&app, params.as_deref())
        .and_then(|(rule, hours)| Ok((rule, hours, query::parse_path(&raw)?)));
    let (rule, hours, path) = match parsed {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let mut conn = app.activity.conn().await?;
        query::path(&mut conn, &app.activity.keys, &rule, &path, hours, now_ms()).await
    };
    match answer.await {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(&app, e),
    }
}

/// `GET /v1/rules/{rule}/top?minutes=5&count=10` (token): who is hurting,
/// the keys `rule` limited most often over the last minutes, across every
/// replica (see `query::top`).
async fn top(
    State(app): State<Arc<App>>,
    Path(rule): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let parsed = (|| {
        let p = Params::parse(raw.as_deref(), &["minutes", "count"])?;
        let minutes = query::parse_minutes(p.get("minutes").unwrap_or("5"))?;
        let count = query::parse_count(p.get("count").unwrap_or("10"))?;
        if !app
            .rules
            .load()
            .iter()
            .any(|r| r.name == rule && !r.limits.is_empty())
        {
            return Err(ApiError::not_found(
                "rule",
                format!("no rule with limits is named {rule:?}"),
            ));
        }
        ready(&app)?;
        Ok((minutes, count))
    })();
    let (minutes, count) = match parsed {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let mut conn = app.activity.conn().await?;
        query::top(
            &mut conn,
            &app.activity.keys,
            &rule,
            minutes,
            count,
            now_ms(),
        )
        .await
    };
    match answer.await {
        Ok(t) => Json(t).into_response(),
        Err(e) => failed(&app, e),
    }
}
