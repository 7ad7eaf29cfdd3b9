//! What a client sees through a proxy, one function per scenario; `mod.rs`
//! runs each against nginx, Caddy and HAProxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::stack::*;
use crate::support::eventually;

pub async fn allowed_requests_reach_the_upstream(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let r = client_from("127.0.0.2")
        .get(s.proxy.url("/limited"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{kind:?}");
    // Every shipped config copies tollgate's RateLimit header onto the app's response.
    assert_eq!(r.headers()["ratelimit"], r#""page";r=2;t=3600"#, "{kind:?}");
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    // No rule applies: straight through.
    let r = client_from("127.0.0.2")
        .get(s.proxy.url("/free"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
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
        assert_eq!(r.status(), status, "{kind:?} request {n}");
        let h = r.headers();
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
    assert_eq!(r.status(), 200);
    for name in RATELIMIT_HEADERS {
        assert!(
            !r.headers().contains_key(name),
            "{kind:?}: {name} on /free: {:?}",
            r.headers()
        );
    }
}

pub async fn over_the_limit_the_client_gets_429_with_retry_after(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(
            c.get(s.proxy.url("/limited"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{kind:?}"
        );
    }
    let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
    assert_eq!(r.status(), 429, "{kind:?}");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{kind:?}: Retry-After {retry}");
    assert!(
        r.headers()["ratelimit"].to_str().unwrap().contains("r=0"),
        "{kind:?}"
    );
}

pub async fn the_client_ip_is_the_connection_not_a_spoofed_header(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let victim = client_from("127.0.0.4");
    for _ in 0..3 {
        victim.get(s.proxy.url("/limited")).send().await.unwrap();
    }
    assert_eq!(
        victim
            .get(s.proxy.url("/limited"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    // Another client claiming to be 127.0.0.4 (or anyone) keeps its own counter...
    let other = client_from("127.0.0.5");
    for spoof in ["127.0.0.4", "203.0.113.1", "127.0.0.4, 127.0.0.1"] {
        let r = other
            .get(s.proxy.url("/limited"))
            .header("x-forwarded-for", spoof)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{kind:?}: spoofed {spoof:?} changed who the client is"
        );
    }
    // ...and it is counted as itself: its 4th request is denied whatever it claims.
    let r = other
        .get(s.proxy.url("/limited"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "{kind:?}");
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
                    match c.get(&url).send().await.unwrap().status().as_u16() {
                        200 => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        429 => {}
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
    assert_eq!(
        r.status(),
        403,
        "{kind:?}: not on the allowlist of a require rule"
    );
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
    // Another client is still refused.
    let r = client_from("127.0.0.9")
        .get(s.proxy.url("/admin/panel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{kind:?}");
}

pub async fn with_tollgate_stopped_the_client_gets_the_documented_status(kind: Kind) {
    let s = Stack::start(kind, CONFIG).await;
    let c = client_from("127.0.0.7");
    assert_eq!(
        c.get(s.proxy.url("/limited"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let Stack { replicas, proxy } = s;
    for r in replicas {
        r.stop().await;
    }
    for path in ["/limited", "/free"] {
        let r = c.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(
            r.status(),
            down_status(kind),
            "{kind:?} {path}: fail-closed"
        );
    }
}

/// One request sent byte for byte (no client-side URL cleaning, which would
/// remove the very dot segments under test) from `source`; the status.
pub async fn raw_status(
    source: &str,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> u16 {
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
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
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
        for n in 0..2 {
            let st = raw_status(&source, s.proxy.port, "POST", "/login", &spoof).await;
            assert_eq!(st, 200, "{kind:?} {name}: login {n} is within the limit");
        }
        let st = raw_status(&source, s.proxy.port, "POST", "/login", &spoof).await;
        assert_eq!(st, 429, "{kind:?}: {name}: {value} escaped the login limit");
        let st = raw_status(&source, s.proxy.port, "GET", "/admin/panel", &spoof).await;
        assert_eq!(st, 403, "{kind:?}: {name}: {value} passed the require gate");
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
        let st = raw_status("127.0.1.30", port, "GET", target, &[]).await;
        assert_eq!(
            st, 403,
            "{kind:?}: GET {target} reached the allowlisted admin area"
        );
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
        let st = raw_status("127.0.1.31", port, "POST", target, &[]).await;
        let want = if n < 2 { 200 } else { 429 };
        assert_eq!(st, want, "{kind:?}: POST {target} (request {n})");
    }
    // An exact `path` rule keyed by path: the spellings share one key.
    for (n, target) in ["/exact/./", "/exact;x", "/%65xact", "//exact"]
        .iter()
        .enumerate()
    {
        let st = raw_status("127.0.1.32", port, "GET", target, &[]).await;
        let want = if n < 2 { 200 } else { 429 };
        assert_eq!(st, want, "{kind:?}: GET {target} (request {n})");
    }
}
