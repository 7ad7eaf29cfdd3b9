//! Who the client is, seen through HTTP: each test uses a 1/m rule keyed by IP,
//! so "same counter" shows as a 429 on the second request.

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
