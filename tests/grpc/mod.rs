//! Envoy's gRPC services on a real socket, with a tonic client: the rate
//! limit service (RLS v3), ext_authz v3 and gRPC health, over real Redis.
//! The helpers here (a server with `grpc_listen`, a channel, RLS descriptors
//! and calls) serve every file below.

/// ext_authz v3: 429 with headers, the allowlist's 403, trusted sources, paths.
mod ext_authz;
/// The gRPC listener itself: health, shutdown within grace, max_connections.
mod listener;
/// RLS v3: counts, hits_addend, descriptors, overrides, shadow, the deny
/// cache, exactness, Redis down, bad input, headers.
mod rls;

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{socket_address, SocketAddress};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use tonic::transport::Channel;

use crate::support::{
    eventually, metric, scrape, shared_redis, unique_prefix, RedisServer, TestServer,
};

const GRPC: &str = "[server]\ngrpc_listen = \"127.0.0.1:0\"\n";

async fn server(rules: &str) -> TestServer {
    let redis = shared_redis().url();
    TestServer::start(
        &format!("{GRPC}{rules}"),
        Some(&redis),
        &unique_prefix("grpc"),
    )
    .await
}

async fn channel(s: &TestServer) -> Channel {
    let addr = s.grpc_addr.expect("grpc_listen set");
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

async fn ask(
    c: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> RateLimitResponse {
    c.should_rate_limit(RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend,
    })
    .await
    .unwrap()
    .into_inner()
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

const EDGE: &str = r#"
[[rule]]
name = "per-ip"
domain = "edge"
descriptor = [{ key = "remote_address" }]
limits = ["3/m"]
"#;
