//! The benchmark's anchors: the least a server must do to answer what a
//! `/check` answers, measured with the same load generator in the same run.
//!
//!   anchor floor PORT
//!       a hyper 1 server answering every request `200` with an empty body:
//!       the HTTP floor of this machine and this load generator.
//!   anchor evalsha PORT REDIS_URL
//!       the same, plus one EVALSHA of tollgate's fixed_window script per
//!       request (`lua/fixed_window.lua` run by `lua/one_rule.lua`, as
//!       tollgate composes it) over one multiplexed redis-rs connection, keyed by
//!       `X-Forwarded-For`: `200` when the script allows, `429` when it denies,
//!       `400` without the header, `500` when Redis fails.
//!
//! Both use tokio's default multi-threaded runtime and TCP_NODELAY, as
//! tollgate does; neither has routing, metrics or logging.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

// The script tollgate runs for one fixed_window rule: the algorithm module,
// then `one_rule.lua` (as src/limiter/redis_store.rs composes it). The module
// alone returns nothing, which this anchor read as a denial (429).
const SCRIPT: &str = concat!(
    include_str!("../../../lua/fixed_window.lua"),
    "\nlocal M = fixed_window\n",
    include_str!("../../../lua/one_rule.lua")
);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: anchor floor PORT | anchor evalsha PORT REDIS_URL";
    let port: u16 = args.get(2).and_then(|p| p.parse().ok()).expect(usage);
    let redis = match args.get(1).map(String::as_str) {
        Some("floor") => None,
        Some("evalsha") => {
            let url = args.get(3).expect(usage);
            let client = redis::Client::open(url.as_str()).expect("REDIS_URL");
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect to Redis");
            Some(conn)
        }
        _ => panic!("{usage}"),
    };
    let script = redis::Script::new(SCRIPT);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let redis = redis.clone();
        let script = script.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let redis = redis.clone();
                let script = script.clone();
                async move {
                    let status = match redis {
                        None => StatusCode::OK,
                        Some(mut conn) => decide(&mut conn, &script, &req).await,
                    };
                    let mut resp = Response::new(Empty::<Bytes>::new());
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// One fixed-window check for the client named by `X-Forwarded-For`.
async fn decide(
    conn: &mut redis::aio::MultiplexedConnection,
    script: &redis::Script,
    req: &Request<hyper::body::Incoming>,
) -> StatusCode {
    let Some(ip) = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    else {
        return StatusCode::BAD_REQUEST;
    };
    let key = format!("anchor:rl:{{bench|{ip}}}:fw:3600000");
    let reply: redis::RedisResult<Vec<i64>> = script
        .key(key)
        .arg(1)
        .arg(1_000_000_000u64)
        .arg(3_600_000u64)
        .invoke_async(conn)
        .await;
    match reply {
        Ok(r) if r.first() == Some(&1) => StatusCode::OK,
        Ok(_) => StatusCode::TOO_MANY_REQUESTS,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
