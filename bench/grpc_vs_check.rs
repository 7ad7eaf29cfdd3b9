//! RLS decisions per second over gRPC, as a ratio to `/check` in the same run.
//!
//! `cargo bench --bench grpc_vs_check` (needs `redis-server`; `BENCH_SECONDS`
//! per phase and round, default 5; `BENCH_ROUNDS`, default 3;
//! `BENCH_CONCURRENCY`, default 64). Starts its own Redis and a release
//! `tollgate serve` on loopback ports, then drives it in rounds of three
//! phases (so a busy moment of the machine hits all three alike; the median
//! round of each is reported), with the same number of concurrent callers:
//!
//! 1. `/check` (HTTP/1.1 keep-alive, one connection per caller, 10 000
//!    client IPs in `X-Forwarded-For` and the path in `X-Forwarded-Uri`,
//!    from the trusted loopback peer);
//! 2. `ShouldRateLimit` (tonic; one descriptor `remote_address` from the same
//!    10 000 IPs; 8 HTTP/2 connections shared by the callers, as Envoy pools);
//! 3. ext_authz `Check` for the same requests as 1.
//!
//! Every decision is an allowed one charged in Redis (limits far above the
//! load). The load generator shares the machine with tollgate and Redis, so
//! compare the ratios of one run, not absolute figures across runs.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::SocketAddress;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tonic::transport::Channel;

const IPS: u64 = 10_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ip(n: u64) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// Kills the child on drop, so an early panic leaves no server behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `callers` loops of `call` for `secs`; decisions per second.
async fn drive<F, Fut>(callers: u64, secs: u64, call: F) -> f64
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..callers {
        let (call, stop, done) = (call.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                assert!(call(worker, i).await, "a decision was not 'allowed'");
                done.fetch_add(1, Ordering::Relaxed);
                i += callers;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let secs = env_or("BENCH_SECONDS", 5);
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let callers = env_or("BENCH_CONCURRENCY", 64);
    if let Ok(target) = std::env::var("RLS_TARGET") {
        return external_rls(&target, callers, secs).await;
    }
    let (redis_port, http, admin, grpc) = (free_port(), free_port(), free_port(), free_port());
    let _redis = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed"),
    );
    let dir = std::env::temp_dir().join(format!("tollgate-grpc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{http}"
admin_listen = "127.0.0.1:{admin}"
grpc_listen = "127.0.0.1:{grpc}"

[redis]
url = "redis://127.0.0.1:{redis_port}"
timeout = "250ms"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "http"
limits = ["1000000000/h"]

[[rule]]
name = "rls"
domain = "bench"
descriptor = [{{ key = "remote_address" }}]
limits = ["1000000000/h"]
"#
        ),
    )
    .unwrap();
    let _tollgate = Proc(
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http_client = reqwest::Client::builder()
        .pool_max_idle_per_host(callers as usize)
        .build()
        .unwrap();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(http_client.get(&ready).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "tollgate did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }

    let check_url = format!("http://127.0.0.1:{http}/check");
    let (mut checks, mut rlss, mut authzs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        checks.push(check_phase(&http_client, &check_url, callers, secs).await);
        rlss.push(rls_phase(&channels, callers, secs).await);
        authzs.push(authz_phase(&channels, callers, secs).await);
    }
    let (check, rls, authz) = (median(checks), median(rlss), median(authzs));
    println!(
        "grpc_vs_check: {callers} concurrent callers, {rounds} rounds of {secs} s per phase (median round), Redis store, all allowed"
    );
    println!("| what | decisions/s | ÷ /check |");
    println!("|---|---|---|");
    println!("| /check (HTTP/1.1) | {check:.0} | 1.00 |");
    println!(
        "| RLS ShouldRateLimit (gRPC) | {rls:.0} | {:.2} |",
        rls / check
    );
    println!(
        "| ext_authz Check (gRPC) | {authz:.0} | {:.2} |",
        authz / check
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "grpc_vs_check", "callers": callers, "rounds": rounds, "seconds": secs,
            "check_per_s": check.round(), "rls_per_s": rls.round(), "ext_authz_per_s": authz.round(),
            "rls_ratio": (rls / check * 100.0).round() / 100.0,
            "ext_authz_ratio": (authz / check * 100.0).round() / 100.0,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `RLS_TARGET=127.0.0.1:PORT` (with `RLS_DOMAIN`, default `bench`, and
/// `RLS_KEY`, the descriptor entry's key, default `remote_address`): only the
/// RLS phase, against a server someone else started (tollgate or another RLS,
/// such as Limitador), so that scripts/bench_hot.py drives both with this same
/// load generator and reads their CPU from /proc. Prints one JSON line with
/// the decisions made; every one must be `OK` (the run panics otherwise).
async fn external_rls(target: &str, callers: u64, secs: u64) {
    let domain = std::env::var("RLS_DOMAIN").unwrap_or_else(|_| "bench".into());
    let key = std::env::var("RLS_KEY").unwrap_or_else(|_| "remote_address".into());
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(
            Channel::from_shared(format!("http://{target}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let counted = done.clone();
    let rate = drive(callers, secs, move |worker, i| {
        let mut c = RateLimitServiceClient::new(channels[worker as usize % channels.len()].clone());
        let req = RateLimitRequest {
            domain: domain.clone(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: key.clone(),
                    value: ip(i % IPS),
                }],
                ..Default::default()
            }],
            hits_addend: 0,
        };
        let counted = counted.clone();
        async move {
            let ok =
                matches!(c.should_rate_limit(req).await, Ok(r) if r.get_ref().overall_code == 1);
            counted.fetch_add(1, Ordering::Relaxed);
            ok
        }
    })
    .await;
    println!(
        "{}",
        serde_json::json!({
            "bench": "rls_external", "target": target, "callers": callers,
            "decisions": done.load(Ordering::Relaxed), "seconds": started.elapsed().as_secs_f64(),
            "per_s": rate.round(), "all_ok": true,
        })
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `/check` as a trusted proxy asks it (the x-forwarded family).
async fn check_phase(client: &reqwest::Client, url: &str, callers: u64, secs: u64) -> f64 {
    let (client, url) = (client.clone(), url.to_string());
    drive(callers, secs, move |_, i| {
        let req = client
            .get(&url)
            .header("x-forwarded-for", ip(i % IPS))
            .header("x-forwarded-uri", "/login")
            .header("x-forwarded-method", "GET");
        async move { req.send().await.map(|r| r.status() == 200).unwrap_or(false) }
    })
    .await
}

async fn rls_phase(channels: &[Channel], callers: u64, secs: u64) -> f64 {
    let channels = channels.to_vec();
    drive(callers, secs, move |worker, i| {
        let mut c = RateLimitServiceClient::new(channels[worker as usize % channels.len()].clone());
        let req = RateLimitRequest {
            domain: "bench".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "remote_address".into(),
                    value: ip(i % IPS),
                }],
                ..Default::default()
            }],
            hits_addend: 0,
        };
        async move { matches!(c.should_rate_limit(req).await, Ok(r) if r.get_ref().overall_code == 1) }
    })
    .await
}

async fn authz_phase(channels: &[Channel], callers: u64, secs: u64) -> f64 {
    let channels = channels.to_vec();
    drive(callers, secs, move |worker, i| {
        let mut c = AuthorizationClient::new(channels[worker as usize % channels.len()].clone());
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: ip(i % IPS),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/login".into(),
                        host: "app.example".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        async move {
            matches!(c.check(req).await, Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.code == 0))
        }
    })
    .await
}
