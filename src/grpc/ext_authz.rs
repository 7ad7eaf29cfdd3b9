//! ext_authz `Check`: the `/check` decision from Envoy's `AttributeContext`.
//!
//! | decision        | answer                                                    |
//! |-----------------|-----------------------------------------------------------|
//! | allowed         | `OkResponse`, RateLimit headers in `response_headers_to_add` |
//! | limited         | `DeniedResponse` 429 + `Retry-After` (+ RateLimit headers) |
//! | not allowlisted | `DeniedResponse` 403 + `x-tollgate-reason: not_allowlisted` |
//! | denylisted      | `PERMISSION_DENIED`, 403 + `x-tollgate-reason: denied` (+ `Retry-After` for a timed entry) |
//! | malformed path  | `DeniedResponse` 400 + JSON naming the field (as `/check`) |
//!
//! The client is `source.address` (the downstream peer as Envoy saw it), put
//! through the same trusted-proxy logic as `/check`'s peer: only when it is a
//! trusted proxy are `X-Forwarded-For` / `X-Real-IP` believed. Method, path,
//! host and headers are Envoy's own view of the request; no `X-Original-*` /
//! `X-Forwarded-Uri` header is read. The path is normalised by `path`, as
//! `/check` does, before any rule sees it. The caller of this service is trusted to report them, like
//! a proxy calling `/check` is: keep `server.grpc_listen` on a private network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::decide::Verdict;
use crate::http::response::{decision_parts, Flavor};
use crate::metrics::ReasonLabels;
use crate::request::forwarded::RefusalReason;
use crate::request::RequestView;

pub struct ExtAuthz {
    app: Arc<App>,
}

impl ExtAuthz {
    pub fn new(app: Arc<App>) -> Self {
        ExtAuthz { app }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let peer = request.remote_addr();
        let result = check(&self.app, request.get_ref(), peer).await;
        super::count(&self.app, "Check", &result);
        result.map(Response::new)
    }
}

/// gRPC codes in `CheckResponse.status` (Envoy only tells OK from the rest).
const OK: i32 = 0;
const INVALID_ARGUMENT: i32 = 3;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;

pub async fn check(
    app: &App,
    req: &CheckRequest,
    grpc_peer: Option<SocketAddr>,
) -> Result<CheckResponse, Status> {
    let attributes = req
        .attributes
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("attributes: missing"))?;
    let http = attributes
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or_else(|| Status::invalid_argument("attributes.request.http: missing"))?;
    let source = attributes
        .source
        .as_ref()
        .and_then(|p| p.address.as_ref())
        .and_then(|a| match a.address.as_ref()? {
            Address::SocketAddress(s) => s.address.parse::<IpAddr>().ok(),
            _ => None,
        })
        // A pipe or internal address: the caller is the nearest peer we know.
        .or(grpc_peer.map(|p| p.ip()))
        .ok_or_else(|| {
            Status::invalid_argument("attributes.source.address: missing or not an IP address")
        })?;
    let headers = header_map(http)?;
    let (raw_path, query) = RequestView::split_uri(if http.path.is_empty() {
        "/"
    } else {
        &http.path
    });
    // The path is normalised exactly as /check normalises it (`path`);
    // a malformed escape is refused as /check refuses it: 400, counted.
    let path = match crate::path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => return Ok(bad_path(app, e.to_string())),
    };
    let upper;
    let method = if http.method.bytes().any(|b| b.is_ascii_lowercase()) {
        upper = http.method.to_ascii_uppercase();
        upper.as_str()
    } else {
        http.method.as_str()
    };
    // `Example.com.:443` is `Example.com`, as `request::forwarded` reads a host.
    let host = (!http.host.is_empty()).then(|| {
        let h = RequestView::strip_port(&http.host);
        h.strip_suffix('.').filter(|h| !h.is_empty()).unwrap_or(h)
    });
    let client = app.resolver.resolve(source, &headers);
    let view = RequestView {
        method,
        path: &path.canonical,
        path_others: &path.others,
        query,
        host,
        headers: &headers,
        client_ip: Some(client),
        client_key_ip: Some(app.resolver.key_ip(client)),
    };
    let decision = app
        .decide(&view)
        .await
        .map_err(|r| Status::invalid_argument(format!("cost: {r}")))?;
    let (status, mut out) = decision_parts(&decision, Flavor::Standard);
    if !app.config.server.grpc_ratelimit_headers {
        for name in [
            "ratelimit-policy",
            "ratelimit",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            out.remove(name);
        }
    }
    let headers: Vec<HeaderValueOption> = super::pb_headers(&out)
        .map(|h| HeaderValueOption {
            header: Some(h),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect();
    let (code, http_response) = match decision.verdict {
        Verdict::Allowed => (
            OK,
            HttpResponse::OkResponse(OkHttpResponse {
                response_headers_to_add: headers,
                ..Default::default()
            }),
        ),
        Verdict::Limited { .. } | Verdict::NotAllowlisted | Verdict::Denied { .. } => (
            if status == StatusCode::TOO_MANY_REQUESTS {
                RESOURCE_EXHAUSTED
            } else {
                PERMISSION_DENIED
            },
            HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(status.as_u16()),
                }),
                headers,
                body: String::new(),
            }),
        ),
    };
    Ok(CheckResponse {
        status: Some(rpc::Status {
            code,
            ..Default::default()
        }),
        http_response: Some(http_response),
        ..Default::default()
    })
}

/// A path no reading can be given: denied with 400 and the field named, as
/// `/check` answers it, and counted in `tollgate_refused_requests_total`.
fn bad_path(app: &App, message: String) -> CheckResponse {
    app.metrics
        .refused_requests
        .get_or_create(&ReasonLabels {
            reason: RefusalReason::BadPath.label(),
        })
        .inc();
    tracing::debug!("ext_authz request refused: {message}");
    let field = "attributes.request.http.path";
    let body = serde_json::json!({ "error": message, "field": field }).to_string();
    let header = |key: &str, value: &str| HeaderValueOption {
        header: Some(envoy_types::pb::envoy::config::core::v3::HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: INVALID_ARGUMENT,
            message: format!("{field}: {message}"),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 400 }),
            headers: vec![
                header("content-type", "application/json"),
                header("x-tollgate-reason", "bad_request"),
            ],
            body,
        })),
        ..Default::default()
    }
}

/// The request's headers: Envoy sends `headers` (a map), or `header_map`
/// when told to encode raw headers. A name or value HTTP refuses is bad input.
fn header_map(http: &HttpRequest) -> Result<HeaderMap, Status> {
    let mut map = HeaderMap::with_capacity(http.headers.len());
    let mut add = |key: &str, value: &[u8]| -> Result<(), Status> {
        // Pseudo-headers (`:path`, `:authority`) are in the other fields.
        if key.starts_with(':') {
            return Ok(());
        }
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
            Status::invalid_argument(format!("attributes.request.http.headers: bad name {key:?}"))
        })?;
        let value = HeaderValue::from_bytes(value).map_err(|_| {
            Status::invalid_argument(format!(
                "attributes.request.http.headers[{key:?}]: bad value"
            ))
        })?;
        map.append(name, value);
        Ok(())
    };
    for (k, v) in &http.headers {
        add(k, v.as_bytes())?;
    }
    if let Some(raw) = &http.header_map {
        for h in &raw.headers {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            add(&h.key, value)?;
        }
    }
    Ok(map)
}
