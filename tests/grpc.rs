//! Envoy's gRPC services on a real socket, with a tonic client: the rate
//! limit service (RLS v3), ext_authz v3 and gRPC health, over real Redis.

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

#[tokio::test]
async fn rls_counts_a_descriptor_until_over_limit_with_remaining_reset_and_headers() {
    let s = server(EDGE).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for left in [2, 1, 0] {
        let r = ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.0.1")])],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        let st = &r.statuses[0];
        assert_eq!(st.code, Code::Ok as i32);
        assert_eq!(st.limit_remaining, left);
        let limit = st.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (3, Unit::Minute as i32)
        );
        assert_eq!(limit.name, "per-ip");
        let reset = st.duration_until_reset.unwrap();
        assert!(reset.seconds > 0 && reset.seconds <= 60, "{reset:?}");
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        assert_eq!(header(&r, "ratelimit-policy"), Some("\"per-ip\";q=3;w=60"));
        assert_eq!(header(&r, "retry-after"), None);
    }
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "per-ip"), ("outcome", "allowed")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "per-ip"), ("outcome", "limited")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_grpc_requests_total",
            &[("method", "ShouldRateLimit"), ("code", "OK")]
        ),
        4.0
    );
}

#[tokio::test]
async fn rls_hits_addend_is_the_cost_and_a_descriptors_own_count_wins() {
    let s = server(&EDGE.replace("3/m", "10/m")).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let ip = [("remote_address", "10.0.0.2")];
    let r = ask(&mut c, "edge", vec![desc(&ip)], 4).await;
    assert_eq!(r.statuses[0].limit_remaining, 6, "hits_addend 4");
    let mut own = desc(&ip);
    own.hits_addend = Some(UInt64Value { value: 5 });
    let r = ask(&mut c, "edge", vec![own], 4).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 1,
        "the descriptor's 5 beats the request's 4"
    );
    let r = ask(&mut c, "edge", vec![desc(&ip)], 2).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32, "2 > 1 left");
    assert_eq!(
        r.statuses[0].limit_remaining, 1,
        "the denial charged nothing"
    );
    let r = ask(&mut c, "edge", vec![desc(&ip)], 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32, "0 means 1");
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

const TWO: &str = r#"
[[rule]]
name = "tight"
domain = "edge"
descriptor = [{ key = "remote_address" }]
limits = ["1/m"]

[[rule]]
name = "loose"
domain = "edge"
descriptor = [{ key = "user" }]
limits = ["10/h"]
"#;

#[tokio::test]
async fn rls_descriptors_in_one_call_are_independent_and_a_denied_one_charges_nothing() {
    let s = server(TWO).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let call = || {
        vec![
            desc(&[("remote_address", "10.0.0.3")]),
            desc(&[("user", "ann")]),
            desc(&[("nobody", "asks")]),
        ]
    };
    let r = ask(&mut c, "edge", call(), 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 3);
    let r = ask(&mut c, "edge", call(), 0).await;
    assert_eq!(
        r.overall_code,
        Code::OverLimit as i32,
        "any descriptor over: over"
    );
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[1].code, Code::Ok as i32);
    assert_eq!(
        r.statuses[1].limit_remaining, 8,
        "the other descriptor is still charged"
    );
    let l = r.statuses[1].current_limit.as_ref().unwrap();
    assert_eq!((l.requests_per_unit, l.unit), (10, Unit::Hour as i32));
    // An unmatched descriptor: OK, no limit, as Envoy's ratelimit service answers.
    assert_eq!(r.statuses[2].code, Code::Ok as i32);
    assert!(r.statuses[2].current_limit.is_none());
    assert!(r.statuses[2].duration_until_reset.is_none());
    assert_eq!(r.statuses[2].limit_remaining, 0);
    // The denied descriptor was not charged: Redis holds 1 for it, not 2.
    let shown = s
        .admin_client()
        .get(s.admin_url("/v1/limits/tight/10.0.0.3"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("\"remaining\":0"), "{shown}");
    // A call with only an unmatched descriptor is OK and carries no headers.
    let r = ask(
        &mut c,
        "other-domain",
        vec![desc(&[("remote_address", "10.0.0.3")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert!(r.response_headers_to_add.is_empty());
}

#[tokio::test]
async fn rls_a_key_without_value_counts_each_value_apart_and_a_value_matches_only_itself() {
    let s = server(
        r#"
[[rule]]
name = "login"
domain = "edge"
descriptor = [{ key = "remote_address" }, { key = "path", value = "/login" }]
limits = ["1/m"]

[[rule]]
name = "paths"
domain = "edge"
descriptor = [{ key = "remote_address" }, { key = "path" }]
limits = ["100/m"]
"#,
    )
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let login = |ip: &str| vec![desc(&[("remote_address", ip), ("path", "/login")])];
    assert_eq!(
        ask(&mut c, "edge", login("10.0.0.4"), 0).await.overall_code,
        Code::Ok as i32
    );
    assert_eq!(
        ask(&mut c, "edge", login("10.0.0.4"), 0).await.overall_code,
        Code::OverLimit as i32
    );
    // Another address has its own counter.
    assert_eq!(
        ask(&mut c, "edge", login("10.0.0.5"), 0).await.overall_code,
        Code::Ok as i32
    );
    // Another path is not "/login": the rule without a value answers it.
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.4"), ("path", "/home")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "paths");
    assert_eq!(r.statuses[0].limit_remaining, 99);
}

#[tokio::test]
async fn rls_an_override_counts_only_where_the_rule_allows_it_and_never_above_its_cap() {
    let s = server(
        r#"
[[rule]]
name = "tenant"
domain = "edge"
descriptor = [{ key = "tenant" }]
limits = ["2/m"]
allow_override = true
override_max = "5/m"

[[rule]]
name = "fixed"
domain = "edge"
descriptor = [{ key = "user" }]
limits = ["2/m"]
"#,
    )
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let with = |k: &str, v: &str, rpu: u32, unit: RateLimitUnit| {
        let mut d = desc(&[(k, v)]);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: rpu,
            unit: unit as i32,
        });
        vec![d]
    };
    let r = ask(
        &mut c,
        "edge",
        with("tenant", "a", 4, RateLimitUnit::Minute),
        0,
    )
    .await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_unit, l.unit),
        (4, Unit::Minute as i32),
        "honoured"
    );
    let r = ask(
        &mut c,
        "edge",
        with("tenant", "b", 1000, RateLimitUnit::Second),
        0,
    )
    .await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_unit, l.unit),
        (5, Unit::Minute as i32),
        "capped at override_max"
    );
    let r = ask(
        &mut c,
        "edge",
        with("user", "c", 1000, RateLimitUnit::Second),
        0,
    )
    .await;
    let l = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_unit, l.unit),
        (2, Unit::Minute as i32),
        "ignored without allow_override"
    );
    let err = c
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: with("tenant", "d", 3, RateLimitUnit::Unknown),
            hits_addend: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("descriptors[0].limit"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn rls_a_shadow_rule_answers_ok_and_counts_shadow_limited() {
    let s = server(&format!("{}shadow = true\n", EDGE.replace("3/m", "1/m"))).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for _ in 0..2 {
        let r = ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.0.6")])],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
    }
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "per-ip"), ("outcome", "shadow_limited")]
        ),
        1.0
    );
}

#[tokio::test]
async fn rls_repeated_denials_come_from_the_deny_cache() {
    let s = server(&EDGE.replace("3/m", "1/m")).await;
    // The deny cache is used only while this replica hears resets.
    eventually(Duration::from_secs(5), || async {
        metric(&scrape(&s).await, "tollgate_reset_channel_up", &[]) == 1.0
    })
    .await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for _ in 0..4 {
        ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.0.7")])],
            0,
        )
        .await;
    }
    let text = scrape(&s).await;
    assert!(
        metric(&text, "tollgate_deny_cache_hits_total", &[]) >= 2.0,
        "{text}"
    );
}

#[tokio::test]
async fn rls_two_replicas_under_concurrency_admit_exactly_the_limit() {
    let redis = shared_redis().url();
    let prefix = unique_prefix("grpc-exact");
    // A generous timeout and on_redis_error = "deny": this measures exactness,
    // and a loaded machine must not turn it into the fallback path.
    let rules = format!(
        "{GRPC}[redis]\ntimeout = \"5s\"\n{}on_redis_error = \"deny\"\n",
        EDGE.replace("3/m", "50/m")
    );
    let a = TestServer::start(&rules, Some(&redis), &prefix).await;
    let b = TestServer::start(&rules, Some(&redis), &prefix).await;
    let channels = [channel(&a).await, channel(&b).await];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = RateLimitServiceClient::new(channels[i % 2].clone());
        tasks.push(tokio::spawn(async move {
            ask(
                &mut c,
                "edge",
                vec![desc(&[("remote_address", "10.9.9.9")])],
                0,
            )
            .await
            .overall_code
                == Code::Ok as i32
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap() as u32;
    }
    assert_eq!(admitted, 50);
}

#[tokio::test]
async fn rls_with_redis_down_answers_as_on_redis_error_says() {
    let mut redis = RedisServer::start();
    let rules = format!(
        "{GRPC}[redis]\ntimeout = \"50ms\"\n{}on_redis_error = \"deny\"\n{}on_redis_error = \"allow\"\n",
        r#"
[[rule]]
name = "closed"
domain = "edge"
descriptor = [{ key = "a" }]
limits = ["100/m"]
"#,
        r#"
[[rule]]
name = "open"
domain = "edge"
descriptor = [{ key = "b" }]
limits = ["100/m"]
"#
    );
    let s = TestServer::start(&rules, Some(&redis.url()), &unique_prefix("grpc-down")).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("a", "1")]), desc(&[("b", "1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32, "Redis up");
    redis.kill();
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("a", "1")]), desc(&[("b", "1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32, "deny");
    assert_eq!(r.statuses[1].code, Code::Ok as i32, "allow");
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "closed"), ("outcome", "fallback_limited")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "open"), ("outcome", "fallback_allowed")]
        ),
        1.0
    );
}

#[tokio::test]
async fn rls_bad_input_is_invalid_argument_naming_the_field() {
    let s = server(EDGE).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    for (domain, descriptors, field) in [
        ("", vec![desc(&[("a", "b")])], "domain"),
        ("edge", vec![], "descriptors"),
        (
            "edge",
            vec![RateLimitDescriptor {
                is_negative_hits: true,
                ..desc(&[("a", "b")])
            }],
            "descriptors[0].is_negative_hits",
        ),
    ] {
        let err = c
            .should_rate_limit(RateLimitRequest {
                domain: domain.into(),
                descriptors,
                hits_addend: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
}

#[tokio::test]
async fn rls_headers_are_left_out_when_grpc_ratelimit_headers_is_off() {
    let redis = shared_redis().url();
    let text = format!("{GRPC}grpc_ratelimit_headers = false\n{EDGE}");
    let s = TestServer::start(&text, Some(&redis), &unique_prefix("grpc")).await;
    let mut c = RateLimitServiceClient::new(channel(&s).await);
    let r = ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.8")])],
        0,
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 2);
    assert!(r.response_headers_to_add.is_empty());
}

#[tokio::test]
async fn grpc_health_reports_serving_for_the_server_and_both_services() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let s = server(EDGE).await;
    let h = HealthClient::new(channel(&s).await);
    for service in [
        "",
        "envoy.service.ratelimit.v3.RateLimitService",
        "envoy.service.auth.v3.Authorization",
    ] {
        // `eventually` fails the test unless the service says SERVING in time.
        eventually(Duration::from_secs(5), || {
            let mut h = h.clone();
            async move {
                let r = h
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await;
                matches!(r, Ok(r) if r.get_ref().status == 1)
            }
        })
        .await;
    }
}

// === ext_authz ===

const AUTHZ: &str = r#"
[client_ip]
trusted_proxies = ["10.0.0.0/8"]

[[rule]]
name = "admin"
match = { path_prefix = "/admin" }
allowlist = "require"

[[rule]]
name = "login"
match = { path = "/login", methods = ["POST"] }
limits = ["2/m"]
"#;

fn check_request(source: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: source.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(40000)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "app.example:443".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn authz(c: &mut AuthorizationClient<Channel>, req: CheckRequest) -> CheckResponse {
    c.check(req).await.unwrap().into_inner()
}

/// (gRPC code, HTTP status (200 for OK), header pairs).
fn parts(r: &CheckResponse) -> (i32, u16, Vec<(String, String)>) {
    let code = r.status.as_ref().unwrap().code;
    let pairs = |hs: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        hs.iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<Vec<_>>()
    };
    match r.http_response.as_ref().unwrap() {
        HttpResponse::OkResponse(ok) => (code, 200, pairs(&ok.response_headers_to_add)),
        HttpResponse::DeniedResponse(d) => (code, d.status.unwrap().code as u16, pairs(&d.headers)),
        HttpResponse::ErrorResponse(_) => panic!("error response"),
    }
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn ext_authz_allows_then_limits_with_429_retry_after_and_ratelimit_headers() {
    let s = server(AUTHZ).await;
    let mut c = AuthorizationClient::new(channel(&s).await);
    let login = || check_request("203.0.113.1", "POST", "/login?next=/", &[]);
    for left in ["1", "0"] {
        let (code, status, h) = parts(&authz(&mut c, login()).await);
        assert_eq!((code, status), (0, 200));
        assert_eq!(get(&h, "x-ratelimit-remaining"), Some(left));
        assert_eq!(get(&h, "ratelimit-policy"), Some("\"login\";q=2;w=60"));
    }
    let (code, status, h) = parts(&authz(&mut c, login()).await);
    assert_ne!(code, 0);
    assert_eq!(status, 429);
    let retry: u64 = get(&h, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(get(&h, "x-tollgate-reason"), Some("rate_limited"));
    // Another method is not the rule's: allowed, and no headers to add.
    let (code, _, h) =
        parts(&authz(&mut c, check_request("203.0.113.1", "GET", "/login", &[])).await);
    assert_eq!(code, 0);
    assert!(h.is_empty());
}

#[tokio::test]
async fn ext_authz_refuses_a_client_off_the_allowlist_with_403_and_admits_a_member() {
    let s = server(AUTHZ).await;
    let mut c = AuthorizationClient::new(channel(&s).await);
    let (code, status, h) =
        parts(&authz(&mut c, check_request("203.0.113.2", "GET", "/admin/x", &[])).await);
    assert_eq!((code, status), (7, 403));
    assert_eq!(get(&h, "x-tollgate-reason"), Some("not_allowlisted"));
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .json(&serde_json::json!({ "cidr": "203.0.113.2/32", "ttl": "1h" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            parts(&authz(&mut c, check_request("203.0.113.2", "GET", "/admin/x", &[])).await).0 == 0
        }
    })
    .await;
}

#[tokio::test]
async fn ext_authz_ignores_forwarded_for_from_an_untrusted_source_and_believes_a_trusted_one() {
    let s = server(AUTHZ).await;
    let mut c = AuthorizationClient::new(channel(&s).await);
    // An untrusted client rotating X-Forwarded-For: all its requests are its own.
    for (i, expect) in [(1, 200), (2, 200), (3, 429)] {
        let xff = format!("198.51.100.{i}");
        let req = check_request(
            "203.0.113.3",
            "POST",
            "/login",
            &[("x-forwarded-for", &xff)],
        );
        assert_eq!(parts(&authz(&mut c, req).await).1, expect, "request {i}");
    }
    // Original-request headers a client adds describe nothing: Envoy's own
    // path and method decide (these would name the gate and the limited rule).
    for spoof in ["x-original-uri", "x-forwarded-uri"] {
        let req = check_request(
            "203.0.113.3",
            "GET",
            "/public",
            &[(spoof, "/admin"), ("x-forwarded-method", "POST")],
        );
        assert_eq!(parts(&authz(&mut c, req).await).1, 200, "{spoof}");
    }
    // From a trusted proxy, the forwarded client is the client.
    for i in 1..=2 {
        let xff = format!("198.51.100.{i}");
        let req = check_request("10.1.1.1", "POST", "/login", &[("x-forwarded-for", &xff)]);
        assert_eq!(
            parts(&authz(&mut c, req).await).1,
            200,
            "proxied client {i}"
        );
    }
}

#[tokio::test]
async fn descriptor_rules_never_apply_to_check() {
    let s = server(&EDGE.replace("3/m", "1/m")).await;
    for _ in 0..3 {
        let r = reqwest::get(s.url("/check")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("ratelimit-policy").is_none());
    }
}

#[tokio::test]
async fn the_server_stops_well_within_its_grace_while_a_proxy_holds_a_grpc_connection() {
    let s = server(EDGE).await;
    let ch = channel(&s).await;
    let mut c = RateLimitServiceClient::new(ch.clone());
    ask(
        &mut c,
        "edge",
        vec![desc(&[("remote_address", "10.0.0.9")])],
        0,
    )
    .await;
    // The channel stays open, as Envoy's pooled connection would: shutdown
    // sends it GOAWAY instead of waiting for it to go (grace is 10 s).
    tokio::time::timeout(Duration::from_secs(5), s.stop())
        .await
        .expect("stopped within 5 s");
    drop(ch);
}

#[tokio::test]
async fn ext_authz_normalises_the_path_as_check_does_and_refuses_a_malformed_one() {
    let s = server(AUTHZ).await;
    let mut c = AuthorizationClient::new(channel(&s).await);
    // Every spelling of /admin meets the allowlist gate.
    for path in [
        "/%61dmin/x",
        "//admin",
        "/x/../admin",
        "/admin;jsessionid=1",
        "/ADMIN/../admin/",
    ] {
        let r = authz(&mut c, check_request("203.0.113.4", "GET", path, &[])).await;
        assert_eq!(parts(&r).1, 403, "{path}");
    }
    // Spellings of /login share one counter (limit 2/m); a lower-case method is POST.
    for (path, expect) in [("/login", 200), ("/./login/", 200), ("/%6cogin", 429)] {
        let r = authz(&mut c, check_request("203.0.113.5", "post", path, &[])).await;
        assert_eq!(parts(&r).1, expect, "{path}");
    }
    let r = authz(&mut c, check_request("203.0.113.5", "GET", "/a%zz", &[])).await;
    let (code, status, h) = parts(&r);
    assert_eq!((code, status), (3, 400));
    assert_eq!(get(&h, "x-tollgate-reason"), Some("bad_request"));
    let HttpResponse::DeniedResponse(d) = r.http_response.unwrap() else {
        panic!("denied")
    };
    assert!(
        d.body.contains("attributes.request.http.path"),
        "{}",
        d.body
    );
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_refused_requests_total",
            &[("reason", "bad_path")]
        ),
        1.0
    );
}

#[tokio::test]
async fn at_max_connections_a_new_grpc_connection_waits_for_a_free_slot() {
    let redis = shared_redis().url();
    let config = format!("{GRPC}max_connections = 3\n{EDGE}");
    let s = TestServer::start(&config, Some(&redis), &unique_prefix("grpc-max")).await;
    let open = || async {
        metric(
            &scrape(&s).await,
            "tollgate_open_connections",
            &[("listener", "grpc")],
        )
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = RateLimitServiceClient::new(channel(&s).await);
        ask(
            &mut c,
            "edge",
            vec![desc(&[("remote_address", "10.0.1.1")])],
            0,
        )
        .await;
        held.push(c);
    }
    assert_eq!(open().await, 3.0);
    // A fourth connection is not accepted while the three are open...
    let waiting = tokio::spawn({
        let ch = channel(&s).await; // TCP completes in the kernel's backlog
        async move {
            let mut c = RateLimitServiceClient::new(ch);
            ask(
                &mut c,
                "edge",
                vec![desc(&[("remote_address", "10.0.1.2")])],
                0,
            )
            .await
        }
    });
    assert_eq!(open().await, 3.0);
    assert!(!waiting.is_finished());
    // ...and is served once one of them closes.
    held.pop();
    let r = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
}
