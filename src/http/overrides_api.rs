//! The overrides' admin API (behind the bearer token). Every input is
//! checked against the running config before any script runs
//! (`overrides::input`): a 400 names the field and writes nothing.
//!
//! - `PUT /v1/overrides/{rule}/{key}` `{"limits": ["100/m"] | "unlimited" |
//!   "deny", "ttl"?, "note"?}` → 200 with the stored override and its `seq`;
//!   no `ttl`: permanent. The key is one path segment, percent-decoded
//!   (`/` in a key is `%2F`).
//! - `DELETE /v1/overrides/{rule}/{key}` → 200, or 404 when there is none.
//! - `GET /v1/overrides/{rule}/{key}` → the override, or 404.
//! - `GET /v1/overrides?rule=…&cursor=…&count=…` → one page of live
//!   overrides (one bounded HSCAN, like `GET /v1/allowlist`), only `rule`'s
//!   when given (a filtered page may hold fewer than `count`; follow
//!   `cursor` until it is null).
//!
//! Who made a change comes from `X-Tollgate-Actor` (default `admin-api`),
//! as for the IP lists. Answers read Redis (or the embedded store).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::allowlist_api::{actor, page_params, write_error};
use super::body::{json_body, read_limited};
use super::params::Params;
use super::response::ApiError;
use crate::allowlist::Entry;
use crate::app::App;
use crate::overrides::{input, OverrideKey};

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/overrides", get(list)).route(
        "/v1/overrides/{rule}/{key}",
        get(show).put(set).delete(remove),
    )
}

/// An override as the API (and `tollgate override …`) shows it.
pub fn override_json(e: &Entry<OverrideKey>, now_ms: u64) -> Value {
    let expires_at = (e.expires_at != 0).then_some(e.expires_at);
    json!({
        "rule": e.cidr.rule,
        "key": e.cidr.key,
        "limits": e.payload.to_json(),
        "expires_at": expires_at,
        "remaining_ms": expires_at.map(|x| x.saturating_sub(now_ms)),
        "note": e.note,
        "created_at": e.created_at,
        "actor": e.actor,
    })
}

/// A `PUT` body: up to `api.max_limits` rates, a TTL and a 256-byte note.
const MAX_SET_BYTES: usize = 8192;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    limits: Option<Value>,
    ttl: Option<String>,
    note: Option<String>,
}

fn reply(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn bad((field, message): (String, String)) -> ApiError {
    ApiError::bad(field, message)
}

async fn set(
    State(app): State<Arc<App>>,
    Path((rule, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    reply(
        async {
            let body = read_limited(body, MAX_SET_BYTES).await?;
            let body: SetBody = json_body(&body)?;
            let limits = body.limits.ok_or_else(|| {
                ApiError::bad(
                    "limits",
                    "missing: rates like [\"100/m\"], \"unlimited\" or \"deny\"",
                )
            })?;
            let config = app.latest.load();
            let new = input::new_override(
                &config,
                &input::Wanted {
                    rule: &rule,
                    key: &key,
                    limits: &limits,
                    ttl: body.ttl.as_deref(),
                    note: body.note.as_deref(),
                    actor: actor(&headers)?,
                },
            )
            .map_err(bad)?;
            let stored = app.overrides.upsert(&new).await.map_err(write_error)?;
            let mut v = override_json(&stored.entry, stored.entry.created_at);
            v["seq"] = json!(stored.seq);
            Ok(v)
        }
        .await,
    )
}

/// The member a path names: a configured rule and a key within the bound.
fn member(app: &App, rule: String, key: String) -> Result<OverrideKey, ApiError> {
    let config = app.latest.load();
    let r = input::rule(&config, &rule).map_err(bad)?;
    input::key(&config, r, &key).map_err(bad)?;
    Ok(OverrideKey { rule, key })
}

async fn remove(
    State(app): State<Arc<App>>,
    Path((rule, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let m = member(&app, rule, key)?;
            let actor = actor(&headers)?;
            match app
                .overrides
                .remove(&m, &actor)
                .await
                .map_err(write_error)?
            {
                Some(seq) => Ok(json!({"rule": m.rule, "key": m.key, "removed": true, "seq": seq})),
                None => Err(ApiError::not_found(
                    "key",
                    format!("rule {:?} has no override for this key", m.rule),
                )),
            }
        }
        .await,
    )
}

async fn show(State(app): State<Arc<App>>, Path((rule, key)): Path<(String, String)>) -> Response {
    reply(
        async {
            let m = member(&app, rule, key)?;
            match app.overrides.get(&m).await? {
                (Some(e), now_ms) => Ok(override_json(&e, now_ms)),
                (None, _) => Err(ApiError::not_found(
                    "key",
                    format!("rule {:?} has no override for this key", m.rule),
                )),
            }
        }
        .await,
    )
}

async fn list(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    reply(
        async {
            let p = Params::parse(query.as_deref(), &["rule", "cursor", "count"])?;
            let rule = p.get("rule");
            if let Some(r) = rule {
                input::rule(&app.latest.load(), r).map_err(bad)?;
            }
            let (cursor, count) = page_params(&p)?;
            let page = app.overrides.list_page(cursor, count).await?;
            let entries: Vec<Value> = page
                .entries
                .iter()
                .filter(|e| rule.is_none_or(|r| e.cidr.rule == r))
                .map(|e| override_json(e, page.now_ms))
                .collect();
            Ok(json!({
                "epoch": page.epoch,
                "seq": page.seq,
                "now": page.now_ms,
                "overrides": entries,
                "cursor": (page.cursor != 0).then(|| page.cursor.to_string()),
            }))
        }
        .await,
    )
}
