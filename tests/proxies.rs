//! Real reverse proxies (nginx, Caddy, HAProxy) started from the configs
//! shipped in deploy/, rewritten only for ports and paths, in front of two
//! tollgate replicas sharing one Redis and a small upstream app.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::nginx as nginx_conf;
use crate::support::process::terminate;
use crate::support::{eventually, free_port, shared_redis, temp_dir, unique_prefix, TestServer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
    Haproxy,
}

/// A proxy process, killed on drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
    _dir: PathBuf,
}

impl Drop for Proxy {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILL would
    /// orphan them); SIGKILL only if it has not exited after two seconds.
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

impl Proxy {
    /// Start `kind` from its shipped config, pointed at two tollgate replicas and the upstream.
    pub async fn start(kind: Kind, tollgate: [SocketAddr; 2], upstream: SocketAddr) -> Proxy {
        let port = free_port();
        let dir = temp_dir(&format!("{kind:?}"));
        let common = |text: &str| {
            text.replace("127.0.0.1:8080", &tollgate[0].to_string())
                .replace("127.0.0.1:9080", &tollgate[1].to_string())
                .replace("127.0.0.1:3000", &upstream.to_string())
        };
        let quiet = |cmd: &mut Command| {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        };
        let mut cmd;
        match kind {
            Kind::Nginx => {
                let conf = common(include_str!("../deploy/nginx/nginx.conf"))
                    .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"))
                    .replace("worker_processes auto;", "worker_processes 1;");
                cmd = nginx_conf::command(&dir, &conf);
            }
            Kind::Caddy => {
                let conf = common(include_str!("../deploy/caddy/Caddyfile")).replace(
                    "http://:8000 {",
                    &format!("http://127.0.0.1:{port} {{\n\tbind 127.0.0.1"),
                );
                std::fs::write(dir.join("Caddyfile"), conf).unwrap();
                cmd = Command::new("caddy");
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(dir.join("Caddyfile"))
                    .env("HOME", &dir)
                    .env("XDG_DATA_HOME", &dir)
                    .env("XDG_CONFIG_HOME", &dir);
            }
            Kind::Haproxy => {
                let internal = free_port();
                let conf = common(include_str!("../deploy/haproxy/haproxy.cfg"))
                    .replace("bind :8000", &format!("bind 127.0.0.1:{port}"))
                    .replace("127.0.0.1:8079", &format!("127.0.0.1:{internal}"))
                    .replace(
                        "/etc/haproxy/tollgate.lua",
                        &dir.join("tollgate.lua").display().to_string(),
                    );
                let lua = include_str!("../deploy/haproxy/tollgate.lua")
                    .replace("127.0.0.1:8079", &format!("127.0.0.1:{internal}"));
                std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
                std::fs::write(dir.join("tollgate.lua"), lua).unwrap();
                cmd = Command::new("haproxy");
                cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
            }
        }
        quiet(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{kind:?} must be installed (scripts/test.sh installs it): {e}")
        });
        let proxy = Proxy {
            child,
            port,
            _dir: dir,
        };
        eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        proxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// A client whose connections come from `source` (any 127.x.y.z works on Linux).
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The app behind the proxy: answers "upstream ok" to everything.
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "upstream ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub const CONFIG: &str = r#"
# A loaded test machine can take longer than the default 25 ms: these tests
# are about the proxies, not about on_redis_error.
[redis]
timeout = "2s"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "page"
match = { path_prefix = "/limited" }
key = "ip"
limits = ["3/h"]

[[rule]]
name = "admin"
match = { path_prefix = "/admin" }
allowlist = "require"

[[rule]]
name = "login"
match = { host = "127.0.0.1", path_prefix = "/login", methods = ["POST"] }
key = "ip"
limits = ["2/h"]

[[rule]]
name = "exact"
match = { path = "/exact" }
key = "ip+path"
limits = ["2/h"]

[[rule]]
name = "burst"
match = { path_prefix = "/burst" }
key = "ip"
limits = ["20/h"]
algorithm = "gcra"
"#;

/// Redis, two tollgate replicas, the upstream, and the proxy in front.
pub struct Stack {
    pub replicas: Vec<TestServer>,
    pub proxy: Proxy,
}

impl Stack {
    pub async fn start(kind: Kind, config: &str) -> Stack {
        let prefix = unique_prefix("proxy");
        let redis = shared_redis().url();
        let a = TestServer::start(config, Some(&redis), &prefix).await;
        let b = TestServer::start(config, Some(&redis), &prefix).await;
        let proxy = Proxy::start(kind, [a.addr, b.addr], upstream().await).await;
        Stack {
            replicas: vec![a, b],
            proxy,
        }
    }
}

/// What a client gets when tollgate is down, as each shipped config documents.
fn down_status(kind: Kind) -> u16 {
    match kind {
        Kind::Nginx | Kind::Haproxy => 503,
        Kind::Caddy => 502,
    }
}

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

macro_rules! proxy_tests {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn allowed_requests_reach_the_upstream() {
                super::allowed_requests_reach_the_upstream($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ratelimit_headers_reach_the_client_on_allowed_and_limited_answers() {
                super::ratelimit_headers_reach_the_client_on_allowed_and_limited_answers($kind)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_the_limit_the_client_gets_429_with_retry_after() {
                super::over_the_limit_the_client_gets_429_with_retry_after($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_client_ip_is_the_connection_not_a_spoofed_header() {
                super::the_client_ip_is_the_connection_not_a_spoofed_header($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_limit_holds_through_the_proxy_with_32_concurrent_clients() {
                super::the_limit_holds_through_the_proxy_with_32_concurrent_clients($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_allowlist_add_on_one_replica_lets_the_client_through_within_a_second() {
                super::an_allowlist_add_on_one_replica_lets_the_client_through_within_a_second(
                    $kind,
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_spoofed_original_request_header_changes_nothing() {
                super::a_spoofed_original_request_header_changes_nothing($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_spelling_of_a_path_is_limited_and_refused_like_the_path() {
                super::every_spelling_of_a_path_is_limited_and_refused_like_the_path($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn with_tollgate_stopped_the_client_gets_the_documented_status() {
                super::with_tollgate_stopped_the_client_gets_the_documented_status($kind).await;
            }
        }
    };
}

proxy_tests!(nginx, Kind::Nginx);
proxy_tests!(caddy, Kind::Caddy);
proxy_tests!(haproxy, Kind::Haproxy);

/// The README's local trial, as a newcomer runs it: tollgate with the example
/// config, `examples/try-nginx.sh` (the shipped nginx.conf from a scratch
/// directory, with a stand-in app), then the three requests the README shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_trial_allows_limits_and_refuses_through_nginx() {
    let config = std::fs::read_to_string("examples/tollgate.toml").unwrap();
    let tollgate = TestServer::start(&config, None, &unique_prefix("trial")).await;
    let (listen, app) = (free_port(), free_port());
    let dir = crate::support::temp_dir("trial");
    let nginx = Command::new("examples/try-nginx.sh")
        .env("LISTEN", format!("127.0.0.1:{listen}"))
        .env("TOLLGATE", tollgate.addr.to_string())
        .env("APP", format!("127.0.0.1:{app}"))
        .env("DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The script execs nginx: the child is nginx's master, stopped on drop.
    let _nginx = Proxy {
        child: nginx,
        port: listen,
        _dir: dir.clone(),
    };
    eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .is_ok()
    })
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{listen}{path}");
    let c = reqwest::Client::new();
    // curl -i http://127.0.0.1:8000/
    let r = c.get(url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "app ok\n");
    // for i in 1 2 3 4 5 6; do curl … -X POST http://127.0.0.1:8000/login; done
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = c.post(url("/login")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // curl -i http://127.0.0.1:8000/admin/
    let r = c.get(url("/admin/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
}
