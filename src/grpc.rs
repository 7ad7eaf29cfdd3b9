//! Envoy's gRPC services on `server.grpc_listen` (off unless set):
//!
//! - `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (`grpc/rls.rs`),
//!   answered by the rules with a `descriptor` (`grpc/descriptors.rs`);
//! - `envoy.service.auth.v3.Authorization/Check` (`grpc/ext_authz.rs`), the
//!   same decision as `/check` from Envoy's `AttributeContext`;
//! - `grpc.health.v1.Health`, `SERVING` while `/readyz` would say ready.
//!
//! Both decision services go through `Limiter::check` (deny cache, breaker,
//! `on_redis_error`, metrics by rule) exactly as `/check` does; their
//! headers come from `http::response::decision_parts`, the one place a
//! decision becomes HTTP.

mod accept;
mod descriptors;
mod ext_authz;
mod rls;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::app::App;
use crate::metrics::GrpcLabels;

pub use ext_authz::ExtAuthz;
pub use rls::Rls;

/// Bounds, as the HTTP listeners have theirs (`server.max_connections`, and
/// `server.request_timeout` per call). A proxy multiplexes many calls on few
/// long-lived connections, so instead of an idle timeout there are caps on
/// streams per connection and keepalive pings.
pub struct Limits {
    /// Open connections (`server.max_connections`); beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Concurrent calls on one connection (HTTP/2 streams).
    pub max_streams: u32,
    /// A call running longer is answered `CANCELLED` (`server.request_timeout`;
    /// Envoy's own timeout is far shorter).
    pub call_timeout: Duration,
    /// HTTP/2 PINGs at this interval find dead peers and dead networks.
    pub keepalive: Duration,
    /// Request header block (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_bytes: u32,
    /// A `CheckRequest` carries the request's headers (and a body when Envoy
    /// is told to send one); a `RateLimitRequest` a few descriptors.
    pub max_check_bytes: usize,
    pub max_rls_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_streams: 1024,
            call_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            max_check_bytes: 1 << 20,
            max_rls_bytes: 64 << 10,
        }
    }
}

/// Serve until `stop`; in-flight calls finish (the caller bounds the wait).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    limits: Limits,
    open: prometheus_client::metrics::gauge::Gauge,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    let incoming = accept::incoming(listener, limits.max_connections, open);
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams)
        .concurrency_limit_per_connection(limits.max_streams as usize)
        .timeout(limits.call_timeout)
        .http2_keepalive_interval(Some(limits.keepalive))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .http2_max_header_list_size(limits.max_header_bytes)
        .add_service(health)
        .add_service(
            RateLimitServiceServer::new(Rls::new(app.clone()))
                .max_decoding_message_size(limits.max_rls_bytes),
        )
        .add_service(
            AuthorizationServer::new(ExtAuthz::new(app.clone()))
                .max_decoding_message_size(limits.max_check_bytes),
        )
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    tracing::info!(grpc_listen = %addr, "gRPC: Envoy rate limit service, ext_authz and health");
    let result = tokio::select! {
        r = server => r,
        never = report_health(&app, &reporter) => match never {},
    };
    tracing::info!(grpc_listen = %addr, "gRPC listener stopped");
    result.map_err(std::io::Error::other)
}

/// Keep `grpc.health.v1` equal to `/readyz`: the whole server ("") and each
/// service are `SERVING` once the node is ready (Redis answered, scripts loaded).
async fn report_health(
    app: &App,
    reporter: &tonic_health::server::HealthReporter,
) -> std::convert::Infallible {
    let names = [
        "",
        <RateLimitServiceServer<Rls> as NamedService>::NAME,
        <AuthorizationServer<ExtAuthz> as NamedService>::NAME,
    ];
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let ready = app.is_ready();
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in names {
                reporter.set_service_status(name, status).await;
            }
            last = Some(ready);
        }
    }
}

/// Count one call in `tollgate_grpc_requests_total`.
fn count(app: &App, method: &'static str, result: &Result<impl Sized, tonic::Status>) {
    let code = match result {
        Ok(_) => "OK",
        Err(s) => match s.code() {
            tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
            _ => "OTHER",
        },
    };
    app.metrics
        .grpc_requests
        .get_or_create(&GrpcLabels { method, code })
        .inc();
}

/// Header pairs as Envoy's `HeaderValue`s.
fn pb_headers(
    headers: &axum::http::HeaderMap,
) -> impl Iterator<Item = envoy_types::pb::envoy::config::core::v3::HeaderValue> + '_ {
    headers.iter().map(
        |(k, v)| envoy_types::pb::envoy::config::core::v3::HeaderValue {
            key: k.as_str().to_string(),
            value: v.to_str().unwrap_or_default().to_string(),
            ..Default::default()
        },
    )
}
