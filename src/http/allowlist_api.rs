//! The allowlist's and the denylist's admin API (behind the bearer token):
//! the same routes and shapes under `/v1/allowlist` and `/v1/denylist`, one
//! set of handlers taking the list's `ListKind`. Every input is checked
//! before any script runs: a 400 names the field and writes nothing.
//!
//! - `POST /v1/allowlist` `{"cidr", "ttl"?, "note"?, "exempt"?}` → 201 with
//!   the stored entry and its `seq`; re-adding refreshes expiry and note.
//!   `"exempt": true` (allowlist only): never banned by a rule.
//! - `DELETE /v1/allowlist/{cidr}` (`203.0.113.0%2F24`, or the path form
//!   `/v1/allowlist/203.0.113.0/24`) → 200, or 404 when there is no such entry.
//! - `GET /v1/allowlist?cursor=…&count=…` → one page of live entries with
//!   their remaining TTL, and the `cursor` of the next page (`null`: the
//!   last). `count` is a hint (1–1000, default `PAGE_DEFAULT`); each page is
//!   one bounded HSCAN, so listing a million entries never stalls Redis.
//! - `GET /v1/allowlist/check?ip=…` → the longest live entry holding it, or
//!   404: one HMGET of the networks that could hold it, not the list.
//! - `POST /v1/allowlist/clear` → the intended wipe: a new, empty epoch with
//!   a `restore` event every node follows (never taken for a lost list).
//! - `GET /v1/allowlist/export` → this node's own table, from its memory,
//!   as an `allow export` document (what `allow restore` reads).
//!
//! While Redis lost the list and the fleet has not put it back, a write that
//! would start a new epoch is a 409 saying so and what to do (`recovery`),
//! unless `POST` says `"new_epoch": true`.
//!
//! An unknown query parameter, or one given twice, is a 400 naming it (`params`).
//! Who made a change comes from `X-Tollgate-Actor` (default `admin-api`).
//! Answers read Redis (or the embedded store), not this node's table.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{json_body, read_limited};
use super::params::Params;
use super::response::ApiError;
use crate::allowlist::export::Document;
use crate::allowlist::kind::ListKind;
use crate::allowlist::recovery::WriteError;
use crate::allowlist::{cidr, input, Entry};
use crate::app::App;

/// Both lists' routes.
pub fn routes() -> Router<Arc<App>> {
    ListKind::ALL
        .into_iter()
        .fold(Router::new(), |r, kind| r.merge(list_routes(kind)))
}

/// `/v1/<noun>…` for one list.
fn list_routes(kind: ListKind) -> Router<Arc<App>> {
    let base = format!("/v1/{}", kind.noun());
    Router::new()
        .route(
            &base,
            post(move |app, headers, body| add(kind, app, headers, body))
                .get(move |app, query| list(kind, app, query)),
        )
        .route(
            &format!("{base}/check"),
            get(move |app, query| check(kind, app, query)),
        )
        .route(
            &format!("{base}/clear"),
            post(move |app, headers| clear(kind, app, headers)),
        )
        .route(&format!("{base}/export"), get(move |app| export(kind, app)))
        .route(
            &format!("{base}/{{*cidr}}"),
            delete(move |app, path, headers| remove(kind, app, path, headers)),
        )
}

/// An entry as the API shows it; `expires_at` is null for a permanent entry.
fn entry_json(e: &Entry, now_ms: Option<u64>) -> Value {
    let expires_at = (e.expires_at != 0).then_some(e.expires_at);
    let mut v = json!({
        "cidr": e.cidr.to_string(),
        "expires_at": expires_at,
        "note": e.note,
        "created_at": e.created_at,
        "actor": e.actor,
    });
    if e.exempt {
        v["exempt"] = json!(true);
    }
    if let Some(now) = now_ms {
        v["remaining_ms"] = json!(expires_at.map(|x| x.saturating_sub(now)));
    }
    v
}

/// Who made a change: `X-Tollgate-Actor`, or `admin-api`.
pub(super) fn actor(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("x-tollgate-actor") {
        None => Ok("admin-api".into()),
        Some(v) => {
            let bad = |e: String| ApiError::bad("X-Tollgate-Actor", e);
            let text = v.to_str().map_err(|_| bad("not visible ASCII".into()))?;
            input::actor(text).map_err(|e| bad(e.to_string()))
        }
    }
}

/// A `POST /v1/allowlist` body is a CIDR, a TTL and a note of at most 256
/// bytes: 4 KiB leaves room for any spelling of them.
const MAX_ADD_BYTES: usize = 4096;

async fn add(
    kind: ListKind,
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_limited(body, MAX_ADD_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match try_add(kind, &app, &headers, &body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /v1/allowlist`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    cidr: String,
    ttl: Option<String>,
    note: Option<String>,
    /// Start an empty allowlist if Redis lost the fleet's (see the module doc).
    #[serde(default)]
    new_epoch: bool,
    /// Allowlist only: never banned by a rule (`src/ban.rs`).
    #[serde(default)]
    exempt: bool,
}

/// A refused write: Redis lost the list (409, what to do), or the store failed.
pub(super) fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Lost(lost) => ApiError {
            status: StatusCode::CONFLICT,
            error: lost.to_string(),
            field: None,
        },
        WriteError::Store(e) => e.into(),
    }
}

async fn try_add(
    kind: ListKind,
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let body: AddBody = json_body(body)?;
    let new = input::new_entry(
        &body.cidr,
        body.ttl.as_deref(),
        body.note.as_deref(),
        actor(headers)?,
        app.latest.load().list(kind),
    )
    .map_err(|e| ApiError::bad(e.field, e.message))?;
    let exempt = input::exempt(body.exempt, app.latest.load().list(kind))
        .map_err(|e| ApiError::bad(e.field, e.message))?;
    let new = input::NewEntry {
        new_epoch: body.new_epoch,
        exempt,
        payload: (),
        ..new
    };
    let stored = app.list(kind).upsert(&new).await.map_err(write_error)?;
    let mut v = entry_json(&stored.entry, None);
    v["seq"] = json!(stored.seq);
    Ok(v)
}

async fn remove(
    kind: ListKind,
    State(app): State<Arc<App>>,
    Path(text): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let net = cidr::parse_net(&text).map_err(|e| ApiError::bad("cidr", e.to_string()))?;
        let actor = actor(&headers)?;
        match app
            .list(kind)
            .remove(&net, &actor)
            .await
            .map_err(write_error)?
        {
            Some(seq) => Ok(json!({"cidr": net.to_string(), "removed": true, "seq": seq})),
            None => Err(ApiError::not_found(
                "cidr",
                format!("{net} is not on the {kind}"),
            )),
        }
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn clear(kind: ListKind, State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let result: Result<Value, ApiError> = async {
        let actor = actor(&headers)?;
        let (restored, held) = app.list(kind).clear(&actor).await?;
        Ok(json!({"cleared": held, "epoch": restored.epoch, "seq": 1}))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// This node's table, not Redis's: what the node serves now.
async fn export(kind: ListKind, State(app): State<Arc<App>>) -> Response {
    let doc = Document::from_listing(&app.list(kind).node_listing(), kind);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.to_json(),
    )
        .into_response()
}

/// Entries per `GET /v1/allowlist` page unless `count` says otherwise.
pub const PAGE_DEFAULT: usize = 200;
const PAGE_MAX: usize = 1000;

/// A listing's `cursor` (0: the first page) and `count` (1–`PAGE_MAX`,
/// default `PAGE_DEFAULT`), each refused by name.
pub(super) fn page_params(p: &Params) -> Result<(u64, usize), ApiError> {
    let cursor: u64 = match p.get("cursor") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad("cursor", "must be the cursor of a previous page"))?,
    };
    let count = match p.get("count") {
        None => PAGE_DEFAULT,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| ApiError::bad("count", format!("must be between 1 and {PAGE_MAX}")))?,
    };
    Ok((cursor, count))
}

async fn list(kind: ListKind, State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let result: Result<Value, ApiError> = async {
        let p = Params::parse(query.as_deref(), &["cursor", "count"])?;
        let (cursor, count) = page_params(&p)?;
        let page = app
            .list(kind)
            .list_page(cursor, count)
            .await
            ?;
        Ok(json!({
            "epoch": page.epoch,
            "seq": page.seq,
            "now": page.now_ms,
            "entries": page.entries.iter().map(|e| entry_json(e, Some(page.now_ms))).collect::<Vec<_>>(),
            "cursor": (page.cursor != 0).then(|| page.cursor.to_string()),
        }))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn check(kind: ListKind, State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let result = async {
        let p = Params::parse(query.as_deref(), &["ip"])?;
        let ip = p
            .get("ip")
            .ok_or_else(|| ApiError::bad("ip", format!("missing: /v1/{kind}/check?ip=ADDRESS")))?;
        let ip = cidr::parse_ip(ip).map_err(|e| ApiError::bad("ip", e.to_string()))?;
        let (found, now_ms) = app.list(kind).check(ip).await?;
        match found {
            Some(e) => {
                let mut v = entry_json(&e, Some(now_ms));
                v["ip"] = json!(ip.to_string());
                Ok(v)
            }
            None => Err(ApiError::not_found(
                "ip",
                format!("{ip} is not on the {kind}"),
            )),
        }
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
