//! ext_authz v3 over a real socket: allowed, limited (429 and its headers),
//! refused by the allowlist (403), sources trusted or not, paths normalised.

use super::*;

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
async fn ext_authz_refuses_a_denylisted_peer_with_permission_denied_403_and_retry_after_before_any_rule(
) {
    let s = server(AUTHZ).await;
    let mut c = AuthorizationClient::new(channel(&s).await);
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/denylist"))
        .json(&serde_json::json!({"cidr": "203.0.113.0/24", "ttl": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The embedded-table follower applies it; then every path is refused.
    eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            let req = check_request("203.0.113.9", "GET", "/anything", &[]);
            parts(&authz(&mut c, req).await).1 == 403
        }
    })
    .await;
    for _ in 0..3 {
        let req = check_request("203.0.113.9", "POST", "/login", &[]);
        let (code, status, h) = parts(&authz(&mut c, req).await);
        assert_eq!((code, status), (7, 403), "PERMISSION_DENIED");
        assert_eq!(get(&h, "x-tollgate-reason"), Some("denied"));
        let retry: u64 = get(&h, "retry-after").unwrap().parse().unwrap();
        // Rounded up, on the node's estimate of Redis time (off by
        // up to half a round trip): 3601 is possible.
        assert!((3500..=3601).contains(&retry), "{retry}");
    }
    // No rule was charged: the login limit (2/m) still admits twice
    // from the same network once the entry is gone.
    let r = s
        .admin_client()
        .delete(s.admin_url("/v1/denylist/203.0.113.0%2F24"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(5), || {
        let mut c = c.clone();
        async move {
            let req = check_request("203.0.113.9", "GET", "/anything", &[]);
            parts(&authz(&mut c, req).await).1 == 200
        }
    })
    .await;
    for left in ["1", "0"] {
        let req = check_request("203.0.113.9", "POST", "/login", &[]);
        let (code, _, h) = parts(&authz(&mut c, req).await);
        assert_eq!(code, 0);
        assert_eq!(get(&h, "x-ratelimit-remaining"), Some(left));
    }
}

/// Overrides reach ext_authz through the same decision core: a raised key
/// passes past the rule's limit, a denied one gets 429 without a limiter call.
#[tokio::test]
async fn ext_authz_applies_a_stored_override_raise_and_deny() {
    let s = server(AUTHZ).await;
    for (key, limits) in [
        ("203.0.113.5", serde_json::json!(["5/m"])),
        ("203.0.113.6", serde_json::json!("deny")),
    ] {
        let r = s
            .admin_client()
            .put(s.admin_url(&format!("/v1/overrides/login/{key}")))
            .json(&serde_json::json!({ "limits": limits }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    eventually(Duration::from_secs(5), || async {
        s.app.overrides.table().len() == 2
    })
    .await;
    let mut c = AuthorizationClient::new(channel(&s).await);
    let login = |ip: &str| check_request(ip, "POST", "/login", &[]);
    for left in ["4", "3", "2"] {
        let (code, status, h) = parts(&authz(&mut c, login("203.0.113.5")).await);
        assert_eq!((code, status), (0, 200));
        assert_eq!(
            get(&h, "x-ratelimit-remaining"),
            Some(left),
            "past the rule's 2/m"
        );
    }
    let (code, status, h) = parts(&authz(&mut c, login("203.0.113.6")).await);
    assert_ne!(code, 0);
    assert_eq!(status, 429);
    assert!(get(&h, "retry-after").is_some());
}
