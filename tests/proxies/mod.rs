//! Real reverse proxies (nginx, Caddy, HAProxy) started from the configs
//! shipped in deploy/, rewritten only for ports and paths, in front of two
//! tollgate replicas sharing one Redis and a small upstream app. Every
//! scenario runs against each proxy: `proxies::<proxy>::<scenario>`.

/// nginx appending to the client's own X-Forwarded-For (issue #25): a byte
/// >= 0x80 there, or any X-Real-IP, does not move the client to another bucket.
mod appended_xff;
/// What a client sees through a proxy: one function per scenario, for any proxy.
mod scenarios;
/// The proxies, the replicas and the upstream: starting the stack.
mod stack;

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{eventually, free_port, unique_prefix, TestServer};
pub use stack::*;

/// One test per scenario for each proxy: `mod nginx { fn scenario() }`, ...
macro_rules! proxy_tests {
    ($($module:ident => $kind:expr),*) => {
        $(proxy_tests!(@one $module, $kind, allowed_requests_reach_the_upstream, ratelimit_headers_reach_the_client_on_allowed_and_limited_answers, over_the_limit_the_client_gets_429_with_retry_after, the_client_ip_is_the_connection_not_a_spoofed_header, the_limit_holds_through_the_proxy_with_32_concurrent_clients, an_allowlist_add_on_one_replica_lets_the_client_through_within_a_second, a_spoofed_original_request_header_changes_nothing, every_spelling_of_a_path_is_limited_and_refused_like_the_path, with_tollgate_stopped_the_client_gets_the_documented_status);)*
    };
    (@one $module:ident, $kind:expr, $($scenario:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    scenarios::$scenario($kind).await;
                }
            )*
        }
    };
}

proxy_tests!(nginx => Kind::Nginx, caddy => Kind::Caddy, haproxy => Kind::Haproxy);

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
    let _nginx = Proxy::adopt(nginx, listen);
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
