//! Who the client is, seen through HTTP (and ext_authz over gRPC): each test
//! uses a rule keyed by IP, so "same counter" shows as a 429.

use crate::support::{shared_redis, unique_prefix, TestServer};

fn config(trusted: &str) -> String {
    format!(
        r#"
# Generous: on a loaded machine the default 25 ms would send a request to
# on_redis_error, and these tests are about who the client is.
[redis]
timeout = "2s"

[client_ip]
trusted_proxies = [{trusted}]
ipv6_prefix = 64

[[rule]]
name = "one"
key = "ip"
limits = ["1/m"]
"#
    )
}

async fn status(s: &TestServer, xff: &str) -> u16 {
    s.check_with("x-forwarded-for", xff).await
}

async fn start(trusted: &str) -> TestServer {
    TestServer::start(
        &config(trusted),
        Some(&shared_redis().url()),
        &unique_prefix("ip"),
    )
    .await
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address_with_x_forwarded_for() {
    let s = start(r#""10.0.0.0/8""#).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    // A different spoofed address changes nothing: the peer (127.0.0.1) is the client.
    assert_eq!(status(&s, "203.0.113.2").await, 429);
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_the_rightmost_untrusted_hop_wins() {
    let s = start(r#""127.0.0.1/32", "10.0.0.0/8""#).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(
        status(&s, "203.0.113.2").await,
        200,
        "another client has its own counter"
    );
    // The client wrote 6.6.6.6 itself; our proxy appended the real 203.0.113.1
    // and a trusted inner proxy appended 10.1.1.1.
    assert_eq!(status(&s, "6.6.6.6, 203.0.113.1, 10.1.1.1").await, 429);
    assert_eq!(status(&s, "6.6.6.7, 203.0.113.1").await, 429);
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_the_ipv4_client() {
    let s = start(r#""127.0.0.1/32""#).await;
    assert_eq!(status(&s, "198.51.100.20").await, 200);
    assert_eq!(status(&s, "::ffff:198.51.100.20").await, 429);
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let s = start(r#""127.0.0.1/32""#).await;
    assert_eq!(status(&s, "2001:db8:1:2::1").await, 200);
    assert_eq!(
        status(&s, "2001:db8:1:2:ffff:ffff:ffff:ffff").await,
        429,
        "same /64"
    );
    assert_eq!(status(&s, "2001:db8:1:3::1").await, 200, "another /64");
}

#[tokio::test]
async fn a_mapped_trusted_proxy_network_trusts_the_ipv4_peer() {
    // One parser for trusted proxies and the allowlist: `::ffff:127.0.0.1/128` is 127.0.0.1/32.
    let s = start(r#""::ffff:127.0.0.1/128""#).await;
    assert_eq!(status(&s, "203.0.113.1").await, 200);
    assert_eq!(
        status(&s, "203.0.113.2").await,
        200,
        "the peer is trusted: each forwarded client has its own counter"
    );
}

/// A login rule and a pure gate, for asking who may describe the original request.
fn forwarded_config(trusted: &str, family: &str) -> String {
    format!(
        r#"
[server]
forwarded_request = "{family}"

[redis]
timeout = "2s"

[client_ip]
trusted_proxies = [{trusted}]

[[rule]]
name = "login"
match = {{ path_prefix = "/login", methods = ["POST"] }}
limits = ["1/h"]

[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"
"#
    )
}

async fn ask(s: &TestServer, check: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(s.url(check));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn only_the_configured_header_family_names_the_original_request() {
    for (family, mine, other) in [
        (
            "x-forwarded",
            ["x-forwarded-uri", "x-forwarded-method"],
            ["x-original-uri", "x-original-method"],
        ),
        (
            "x-original",
            ["x-original-uri", "x-original-method"],
            ["x-forwarded-uri", "x-forwarded-method"],
        ),
    ] {
        let s = TestServer::start(
            &forwarded_config(r#""127.0.0.1/32""#, family),
            Some(&shared_redis().url()),
            &unique_prefix("fwd"),
        )
        .await;
        let login = [(mine[0], "/login"), (mine[1], "POST")];
        assert_eq!(ask(&s, "/check", &login).await.status(), 200, "{family}");
        assert_eq!(ask(&s, "/check", &login).await.status(), 429, "{family}");
        // The client's own copies of the other family are not read.
        let spoof = [login[0], login[1], (other[0], "/free"), (other[1], "GET")];
        assert_eq!(ask(&s, "/check", &spoof).await.status(), 429, "{family}");
        let gate = [(mine[0], "/admin/x"), (other[0], "/free")];
        assert_eq!(ask(&s, "/check", &gate).await.status(), 403, "{family}");
        // A proxy speaking only the other family is refused, not guessed.
        let r = ask(&s, "/check", &[(other[0], "/admin/x")]).await;
        assert_eq!(r.status(), 400, "{family}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["field"], mine[0], "{family}: {body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("server.forwarded_request"));
    }
}

#[tokio::test]
async fn an_untrusted_peer_may_not_describe_the_original_request() {
    let s = TestServer::start(
        &forwarded_config(r#""10.0.0.0/8""#, "x-forwarded"),
        Some(&shared_redis().url()),
        &unique_prefix("fwd"),
    )
    .await;
    for header in ["x-forwarded-uri", "x-forwarded-method", "x-forwarded-host"] {
        let r = ask(&s, "/check", &[(header, "/free")]).await;
        assert_eq!(r.status(), 400, "{header}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["field"], header);
        assert!(body["error"].as_str().unwrap().contains("trusted_proxies"));
        // nginx turns a 400 into a 500: its endpoint answers 403 + a reason.
        let r = ask(&s, "/check/nginx", &[(header, "/free")]).await;
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-tollgate-reason"], "bad_request");
    }
    // The path in the URL (Envoy-style) is the peer's own request: it may ask that.
    assert_eq!(ask(&s, "/check/admin/x", &[]).await.status(), 403);
    assert_eq!(ask(&s, "/check/%61dmin/x", &[]).await.status(), 403);
    let text = crate::support::scrape(&s).await;
    assert_eq!(
        crate::support::metric(
            &text,
            "tollgate_refused_requests_total",
            &[("reason", "untrusted_peer")]
        ),
        6.0,
        "{text}"
    );
}

#[tokio::test]
async fn appended_copies_and_malformed_paths_are_refused() {
    let s = TestServer::start(
        &forwarded_config(r#""127.0.0.1/32""#, "x-forwarded"),
        Some(&shared_redis().url()),
        &unique_prefix("fwd"),
    )
    .await;
    let twice = [
        ("x-forwarded-uri", "/free"),
        ("x-forwarded-uri", "/admin/x"),
    ];
    assert_eq!(ask(&s, "/check", &twice).await.status(), 400);
    let r = ask(&s, "/check", &[("x-forwarded-uri", "/adm%zzin")]).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["field"], "x-forwarded-uri");
}

/// The issue's setup: `login` at 2/m, keyed by the client address, from
/// a trusted proxy (the test's own 127.0.0.1); gRPC for ext_authz.
const LOGIN_2_PER_MINUTE: &str = r#"
[server]
grpc_listen = "127.0.0.1:0"

[redis]
timeout = "2s"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
key = "ip"
limits = ["2/m"]
"#;

/// `GET <path>` from 127.0.0.1 with header lines given as bytes, in order.
async fn raw_check(s: &TestServer, path: &str, lines: &[(&str, &[u8])]) -> reqwest::Response {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    reqwest::Client::new()
        .get(s.url(path))
        .headers(headers)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_byte_the_client_wrote_in_x_forwarded_for_does_not_move_it_to_another_bucket() {
    let s = TestServer::start(
        LOGIN_2_PER_MINUTE,
        Some(&shared_redis().url()),
        &unique_prefix("xff"),
    )
    .await;
    let xff: &[u8] = b"203.0.113.9";
    for n in 0..2 {
        let r = raw_check(&s, "/check", &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status(), 200, "login {n}");
    }
    // nginx appended the real address to the client's own line, whose bytes
    // are not UTF-8; X-Real-IP is the client's too (auth_request copies it).
    for n in 1..=5 {
        let real_ip = format!("198.51.100.{n}");
        let line: &[u8] = b"\xff, 203.0.113.9";
        let r = raw_check(
            &s,
            "/check",
            &[("x-forwarded-for", line), ("x-real-ip", real_ip.as_bytes())],
        )
        .await;
        assert_eq!(r.status(), 429, "X-Real-IP {real_ip} chose the bucket");
    }
    // The same without X-Real-IP, as two lines (HAProxy adds its own), and
    // on /check/nginx: still 203.0.113.9's bucket.
    let lines: [&[(&str, &[u8])]; 3] = [
        &[("x-forwarded-for", b"\xc3(, 203.0.113.9")],
        &[
            ("x-forwarded-for", b"\xff"),
            ("x-forwarded-for", b"203.0.113.9"),
        ],
        &[("x-forwarded-for", b"6.6.6.6, \xfe\xff, 203.0.113.9")],
    ];
    for l in lines {
        let r = raw_check(&s, "/check", l).await;
        assert_eq!(r.status(), 429, "{l:?}");
        let r = raw_check(&s, "/check/nginx", l).await;
        assert_eq!(r.status(), 403, "{l:?}");
        assert_eq!(r.headers()["x-tollgate-reason"], "rate_limited");
    }
    // None of it was charged to the proxy's own address: its bucket is full.
    for n in 0..2 {
        let r = raw_check(&s, "/check", &[]).await;
        assert_eq!(r.status(), 200, "the proxy's own request {n}");
    }
}

#[tokio::test]
async fn ext_authz_walks_raw_forwarded_for_bytes_as_check_does() {
    use envoy_types::pb::envoy::config::core::v3::{
        address::Address, socket_address::PortSpecifier, HeaderMap as PbHeaders,
        HeaderValue as PbHeader, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

    let s = TestServer::start(
        LOGIN_2_PER_MINUTE,
        Some(&shared_redis().url()),
        &unique_prefix("xff"),
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        s.grpc_addr.expect("grpc_listen set")
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut c = AuthorizationClient::new(channel);
    // Envoy with `encode_raw_headers`: values as bytes in `header_map`.
    let request = |lines: &[(&str, &[u8])]| CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(40000)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/login".into(),
                    header_map: Some(PbHeaders {
                        headers: lines
                            .iter()
                            .map(|(k, v)| PbHeader {
                                key: k.to_string(),
                                raw_value: v.to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut status = async |lines: &[(&str, &[u8])]| {
        let r = c.check(request(lines)).await.unwrap().into_inner();
        match r.http_response.unwrap() {
            HttpResponse::OkResponse(_) => 200,
            HttpResponse::DeniedResponse(d) => d.status.unwrap().code,
            HttpResponse::ErrorResponse(e) => panic!("error response {e:?}"),
        }
    };
    for n in 0..2 {
        assert_eq!(
            status(&[("x-forwarded-for", b"203.0.113.9")]).await,
            200,
            "{n}"
        );
    }
    for n in 1..=3 {
        let real_ip = format!("198.51.100.{n}");
        let lines: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"\xff, 203.0.113.9"),
            ("x-real-ip", real_ip.as_bytes()),
        ];
        assert_eq!(
            status(lines).await,
            429,
            "X-Real-IP {real_ip} chose the bucket"
        );
    }
    assert_eq!(
        status(&[("x-forwarded-for", b"\xff, 203.0.113.9")]).await,
        429
    );
    // The source's own bucket was not charged.
    assert_eq!(status(&[]).await, 200);
}
