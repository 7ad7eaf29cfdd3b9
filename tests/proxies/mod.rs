//! Real reverse proxies (nginx, Caddy, HAProxy) started from the configs
//! shipped in deploy/, rewritten only for ports and paths, in front of two
//! tollgate replicas sharing one Redis and a small upstream app. Every
//! scenario runs against each proxy: `proxies::<proxy>::<scenario>`.

/// nginx appending to the client's own X-Forwarded-For (issue #25): a byte
/// >= 0x80 there, or any X-Real-IP, does not move the client to another bucket.
mod appended_xff;
/// Caddy with one replica dead: marked down by its first failed call, never tried again.
mod caddy_replica_down;
/// Only failed logins counted (`count = "reported"`): nginx with the app
/// reporting, HAProxy reporting the upstream's 401s itself (`POST /report`).
mod failed_logins;
/// HAProxy's Lua action: its address set in the cfg alone (refused if unset);
/// failing calls logged once with the address and the answer, once when they work again.
mod haproxy_lua;
/// The README's quick start, `examples/try.sh nginx|caddy|haproxy`, as a newcomer runs it.
mod readme_trial;
/// What a client sees through a proxy: one function per scenario, for any proxy.
mod scenarios;
/// The proxies, the replicas and the upstream: starting the stack.
mod stack;

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
