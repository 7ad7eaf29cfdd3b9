//! What a client sees through a proxy, one function per scenario; `mod.rs`
//! runs each against nginx, Caddy and HAProxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::stack::*;
use crate::support::eventually;

/// An answer through the proxy with `status`: the app's body when 200, not
/// the app's body otherwise. Its headers.
pub async fn answer(
    kind: Kind,
    r: reqwest::Response,
    status: u16,
    what: &str,
) -> reqwest::header::HeaderMap {
    assert_answer(r, status, APP_BODY, &format!("{kind:?} {what}")).await
}

/// A 200 through the proxy that must be the app's answer.
pub async fn app_answer(
    kind: Kind,
    r: reqwest::Response,
    what: &str,
) -> reqwest::header::HeaderMap {
    answer(kind, r, 200, what).await
}

pub async fn allowed_requests_reach_the_upstream(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.2");
    let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
    // Every shipped config copies tollgate's RateLimit header onto the app's response.
    let h = app_answer(kind, r, "/limited").await;
    assert_eq!(h["ratelimit"], r#""page";r=2;t=3600"#, "{kind:?}");
    // No rule applies (tollgate answers an empty 200): on to the app all the same.
    for path in ["/", "/free"] {
        let r = c.get(s.proxy.url(path)).send().await.unwrap();
        app_answer(kind, r, path).await;
    }
}

/// The RateLimit headers tollgate computes, as the client must see them.
const RATELIMIT_HEADERS: [&str; 5] = [
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

pub async fn ratelimit_headers_reach_the_client_on_allowed_and_limited_answers(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.9");
    for n in 0..4 {
        let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
        let (status, remaining) = if n < 3 { (200, 2 - n) } else { (429, 0) };
        let h = &answer(kind, r, status, &format!("request {n}")).await;
        for name in RATELIMIT_HEADERS {
            assert!(
                h.contains_key(name),
                "{kind:?} request {n}: no {name} in {h:?}"
            );
        }
        assert_eq!(h["ratelimit-policy"], r#""page";q=3;w=3600"#, "{kind:?}");
        assert!(
            h["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"page\";r={remaining};t=")),
            "{kind:?} request {n}: {h:?}"
        );
        assert_eq!(h["x-ratelimit-limit"], "3", "{kind:?}");
        assert_eq!(
            h["x-ratelimit-remaining"],
            &remaining.to_string(),
            "{kind:?}"
        );
        if status == 429 {
            assert_eq!(h["x-ratelimit-reset"], h["retry-after"], "{kind:?}: {h:?}");
        }
    }
    // No rule applies: no RateLimit headers at all (not even empty ones).
    let r = c.get(s.proxy.url("/free")).send().await.unwrap();
    let h = app_answer(kind, r, "/free").await;
    for name in RATELIMIT_HEADERS {
        assert!(!h.contains_key(name), "{kind:?}: {name} on /free: {h:?}");
    }
}

pub async fn over_the_limit_the_client_gets_429_with_retry_after(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.3");
    for n in 0..3 {
        let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
        app_answer(kind, r, &format!("request {n}")).await;
    }
    let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
    let h = answer(kind, r, 429, "request 3").await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{kind:?}: Retry-After {retry}");
    assert!(h["ratelimit"].to_str().unwrap().contains("r=0"), "{kind:?}");
}

pub async fn the_client_ip_is_the_connection_not_a_spoofed_header(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let victim = client_from("127.0.0.4");
    for n in 0..3 {
        let r = victim.get(s.proxy.url("/limited")).send().await.unwrap();
        app_answer(kind, r, &format!("victim {n}")).await;
    }
    let r = victim.get(s.proxy.url("/limited")).send().await.unwrap();
    answer(kind, r, 429, "victim 3").await;
    // Another client claiming to be 127.0.0.4 (or anyone) keeps its own counter...
    let other = client_from("127.0.0.5");
    for spoof in ["127.0.0.4", "203.0.113.1", "127.0.0.4, 127.0.0.1"] {
        let r = other
            .get(s.proxy.url("/limited"))
            .header("x-forwarded-for", spoof)
            .send()
            .await
            .unwrap();
        app_answer(
            kind,
            r,
            &format!("spoofed {spoof:?} changed who the client is"),
        )
        .await;
    }
    // ...and it is counted as itself: its 4th request is denied whatever it claims.
    let r = other
        .get(s.proxy.url("/limited"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    answer(kind, r, 429, "the other client's 4th").await;
}

pub async fn the_limit_holds_through_the_proxy_with_32_concurrent_clients(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let admitted = Arc::new(AtomicU64::new(0));
    let url = s.proxy.url("/burst");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (url, admitted) = (url.clone(), admitted.clone());
            tokio::spawn(async move {
                let c = client_from("127.0.0.6");
                for _ in 0..3 {
                    let r = c.get(&url).send().await.unwrap();
                    match r.status().as_u16() {
                        200 => {
                            app_answer(kind, r, "an admitted burst request").await;
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {
                            answer(kind, r, 429, "a limited burst request").await;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        20,
        "{kind:?}: limit 20 over 96 requests"
    );
}

pub async fn an_allowlist_add_on_one_replica_lets_the_client_through_within_a_second(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.8");
    let r = c.get(s.proxy.url("/admin/panel")).send().await.unwrap();
    answer(kind, r, 403, "not on the allowlist of a require rule").await;
    let admin = &s.replicas[0];
    let r = admin
        .admin_client()
        .post(admin.admin_url("/v1/allowlist"))
        .json(&serde_json::json!({"cidr": "127.0.0.8", "ttl": "1h", "note": "e2e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let url = s.proxy.url("/admin/panel");
    eventually(Duration::from_secs(1), || {
        let (c, url) = (c.clone(), url.clone());
        async move { c.get(&url).send().await.unwrap().status() == 200 }
    })
    .await;
    let r = c.get(&url).send().await.unwrap();
    app_answer(kind, r, "allowlisted").await;
    // Another client is still refused.
    let r = client_from("127.0.0.9")
        .get(s.proxy.url("/admin/panel"))
        .send()
        .await
        .unwrap();
    answer(kind, r, 403, "another client").await;
}

pub async fn with_tollgate_stopped_the_client_gets_the_documented_status(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.7");
    let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
    app_answer(kind, r, "before the stop").await;
    let Stack { replicas, proxy } = s;
    for r in replicas {
        r.stop().await;
    }
    for (n, path) in ["/limited", "/free", "/limited"].into_iter().enumerate() {
        let r = c.get(proxy.url(path)).send().await.unwrap();
        let status = down_status(kind, n);
        answer(
            kind,
            r,
            status,
            &format!("{path} (request {n}): fail-closed"),
        )
        .await;
    }
}

/// One request sent byte for byte (no client-side URL cleaning, which would
/// remove the very dot segments under test) from `source`; the status and body.
pub async fn raw_request(
    source: &str,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut conn = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the proxy answers within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// A chunked body's data (`size\r\ndata\r\n`... up to the `0` chunk).
fn dechunk(mut rest: &str) -> String {
    let mut data = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        data.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    data
}

/// One raw request's answer: `status`, with the app's body exactly when 200.
async fn raw_answer(
    kind: Kind,
    port: u16,
    source: &str,
    req: (&str, &str),
    headers: &[(&str, &str)],
    status: u16,
    what: &str,
) {
    let (method, target) = req;
    let (got, body) = raw_request(source, port, method, target, headers).await;
    assert_body(
        got,
        &body,
        status,
        APP_BODY,
        &format!("{kind:?} {method} {target}: {what}"),
    );
}

/// Every original-request header a client might forge, with a value that
/// would take its request out of the `login` rule and the `admin` gate if believed.
const SPOOFS: [(&str, &str); 5] = [
    ("X-Original-URI", "/free"),
    ("X-Original-Method", "GET"),
    ("X-Forwarded-Uri", "/free"),
    ("X-Forwarded-Method", "GET"),
    ("X-Forwarded-Host", "elsewhere.example"),
];

pub async fn a_spoofed_original_request_header_changes_nothing(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    for (i, (name, value)) in SPOOFS.into_iter().enumerate() {
        let source = format!("127.0.1.{}", 10 + i);
        let spoof = [(name, value)];
        let port = s.proxy.port;
        for n in 0..2 {
            let what = format!("{name}: login {n} is within the limit");
            raw_answer(kind, port, &source, ("POST", "/login"), &spoof, 200, &what).await;
        }
        let what = format!("{name}: {value} escaped the login limit");
        raw_answer(kind, port, &source, ("POST", "/login"), &spoof, 429, &what).await;
        let what = format!("{name}: {value} passed the require gate");
        raw_answer(
            kind,
            port,
            &source,
            ("GET", "/admin/panel"),
            &spoof,
            403,
            &what,
        )
        .await;
    }
}

pub async fn every_spelling_of_a_path_is_limited_and_refused_like_the_path(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let port = s.proxy.port;
    for target in [
        "/admin/",
        "//admin/",
        "/./admin/",
        "/%61dmin/",
        "/x/../admin/",
        "/admin;x/",
        "/;x/admin/",
        "/x%2F..%2Fadmin/",
        "/x/..;/admin/",
    ] {
        let what = "reached the allowlisted admin area";
        raw_answer(kind, port, "127.0.1.30", ("GET", target), &[], 403, what).await;
    }
    // One login counter for every spelling of /login: 2 pass, then all are limited.
    let logins = [
        "//login",
        "/./login",
        "/%6Cogin",
        "/x/../login",
        "/login;jsessionid=1",
        "/login/",
        "/login",
    ];
    for (n, target) in logins.iter().enumerate() {
        let want = if n < 2 { 200 } else { 429 };
        let what = format!("request {n}");
        raw_answer(kind, port, "127.0.1.31", ("POST", target), &[], want, &what).await;
    }
    // An exact `path` rule keyed by path: the spellings share one key.
    for (n, target) in ["/exact/./", "/exact;x", "/%65xact", "//exact"]
        .iter()
        .enumerate()
    {
        let want = if n < 2 { 200 } else { 429 };
        let what = format!("request {n}");
        raw_answer(kind, port, "127.0.1.32", ("GET", target), &[], want, &what).await;
    }
}
