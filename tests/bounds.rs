//! No client can hurt Redis or the process: `POST /v1/check` caps every number
//! (a 400 names the field), shadow rules never deny there and its decisions are
//! counted; keys are bounded; connections are limited and timed out.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    eventually, metric, scrape, shared_redis, unique_prefix, TestServer, BOTH_STORES,
};

const CONFIG: &str = r#"
[[rule]]
name = "by-user"
match = { path_prefix = "/user" }
key = "ip+header:x-user"
limits = ["2/h"]

[[rule]]
name = "watch"
match = { path_prefix = "/api-only" }
limits = ["1/h"]
shadow = true

[[rule]]
name = "enforce"
match = { path_prefix = "/api-only" }
limits = ["1/h"]
"#;

async fn post(s: &TestServer, body: &Value) -> (u16, Value) {
    s.post_check(body).await
}

#[tokio::test]
async fn v1_check_refuses_costs_limits_periods_and_keys_beyond_the_caps() {
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &unique_prefix("caps")).await;
    let long_key = "k".repeat(513);
    let cases = [
        // The reported attack: a 10^8-step Lua loop and an 800 MB allocation
        // (the ad-hoc limits are read first, then the core caps the cost).
        (
            json!({"key": "k", "limits": ["100000000/d"], "algorithm": "sliding_log", "cost": 100000000}),
            "limits[0]",
        ),
        (
            json!({"key": "k", "limits": ["25/d"], "algorithm": "sliding_log", "cost": 100000000}),
            "cost",
        ),
        (
            json!({"key": "k", "limits": ["100000000/d"], "algorithm": "sliding_log"}),
            "limits[0]",
        ),
        (
            json!({"key": "k", "limits": ["25/m", "26/h"], "algorithm": "sliding_log"}),
            "limits[1]",
        ),
        (json!({"key": "k", "limits": ["1000000001/s"]}), "limits[0]"),
        (json!({"key": "k", "limits": ["5/8d"]}), "limits[0]"),
        // Past 2^53 µs of bucket, gcra's exact arithmetic would round.
        (
            json!({"key": "k", "limits": ["1000000000/7d"], "algorithm": "gcra"}),
            "limits[0]",
        ),
        (
            json!({"key": "k", "limits": ["10/7d"], "algorithm": "gcra", "burst": 14893}),
            "burst",
        ),
        (
            json!({"key": "k", "limits": ["1/s", "2/m", "3/h", "4/d", "5/2d"]}),
            "limits",
        ),
        (
            json!({"key": "k", "limits": ["5000/m"], "cost": 1001}),
            "cost",
        ),
        (json!({"key": long_key, "limits": ["5/m"]}), "key"),
        (json!({"key": "", "limits": ["5/m"]}), "key"),
        (json!({"key": "k", "rule": "enforce", "cost": 1.5}), "cost"),
        (json!({"key": "k", "limits": ["5/m", 5]}), "limits[1]"),
    ];
    for (body, field) in &cases {
        let (status, answer) = post(&s, body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], *field, "{body} -> {answer}");
    }
    // At the caps, calls are answered.
    for body in [
        json!({"key": "k", "limits": ["25/s", "25/m", "25/h", "25/d"], "algorithm": "sliding_log", "cost": 25}),
        // gcra's arithmetic is exact up to burst × period_µs < 2^53: 14 892 a week.
        json!({"key": "k", "limits": ["14892/7d"], "algorithm": "gcra", "cost": 1000}),
        json!({"key": "k".repeat(512), "limits": ["5/m"]}),
    ] {
        let (status, answer) = post(&s, &body).await;
        assert_eq!(status, 200, "{body} -> {answer}");
        assert_eq!(answer["allowed"], true, "{body} -> {answer}");
    }
    // An oversized body is refused before it is parsed.
    let huge = format!(
        r#"{{"key": "k", "limits": ["5/m"], "pad": "{}"}}"#,
        "x".repeat(64 * 1024)
    );
    let r = reqwest::Client::new()
        .post(s.url("/v1/check"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["field"], "(body)", "{answer}");
    // A chunked body with no length that never ends is refused once it
    // passes the bound, without waiting for its end.
    let status = endless_chunked_post(&s, "/v1/check").await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
}

/// POST `path` with a chunked body that streams past 16 KiB and never sends
/// its last chunk; the status line of the answer (bounded in time).
async fn endless_chunked_post(s: &TestServer, path: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    for _ in 0..20 {
        // The server may answer (and stop reading) before all 20 KiB are sent.
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut status = String::new();
    let mut reader = BufReader::new(tcp);
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut status))
        .await
        .expect("an answer before the body ends")
        .unwrap();
    status.trim_end().to_string()
}

#[tokio::test]
async fn v1_check_honours_shadow_and_counts_its_decisions() {
    for store in BOTH_STORES {
        // Counted outcomes must not turn into fallback_* on a busy machine.
        let config = match store.redis_url() {
            Some(_) => format!("[redis]\ntimeout = \"5s\"\n{CONFIG}"),
            None => CONFIG.to_string(),
        };
        let s = TestServer::start(
            &config,
            store.redis_url().as_deref(),
            &unique_prefix("shadow-api"),
        )
        .await;
        for i in 0..3 {
            let (status, a) = post(&s, &json!({"rule": "watch", "key": "u"})).await;
            assert_eq!(status, 200);
            assert_eq!(
                a["allowed"], true,
                "{store:?} call {i}: a shadow rule never denies: {a}"
            );
            assert_eq!(a["remaining"], 0, "{store:?}: but it tells the truth");
            assert_eq!(a["retry_after_ms"], 0);
        }
        for _ in 0..2 {
            post(&s, &json!({"rule": "enforce", "key": "u"})).await;
        }
        let (_, a) = post(&s, &json!({"rule": "enforce", "key": "u"})).await;
        assert_eq!(a["allowed"], false, "{store:?}: {a}");
        for _ in 0..2 {
            post(&s, &json!({"key": "u", "limits": ["1/h"]})).await;
        }
        let text = scrape(&s).await;
        let count = |rule: &str, outcome: &str| {
            metric(
                &text,
                "tollgate_decisions_total",
                &[("rule", rule), ("outcome", outcome)],
            )
        };
        assert_eq!(count("watch", "allowed"), 1.0, "{store:?}\n{text}");
        assert_eq!(count("watch", "shadow_limited"), 2.0, "{store:?}");
        assert_eq!(count("enforce", "allowed"), 1.0, "{store:?}");
        assert_eq!(count("enforce", "limited"), 2.0, "{store:?}");
        assert_eq!(
            count("~", "allowed"),
            1.0,
            "{store:?}: ad-hoc limits count as rule \"~\""
        );
        assert_eq!(count("~", "limited"), 1.0, "{store:?}");
        for series in [
            "tollgate_deny_cache_evictions_total",
            "tollgate_local_store_refusals_total",
            "tollgate_open_connections{listener=\"decision\"}",
        ] {
            assert!(text.contains(series), "{series} is exported");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_huge_header_makes_a_bounded_redis_key_and_keeps_its_own_counter() {
    let prefix = unique_prefix("keylen");
    // Every call must reach Redis (no fallback on a busy machine): its keys are what we look at.
    let config = format!("[redis]\ntimeout = \"5s\"\n{CONFIG}");
    let s = TestServer::start(&config, Some(&shared_redis().url()), &prefix).await;
    let http = reqwest::Client::new();
    let ask = |user: String| {
        http.get(s.url("/check/user/x"))
            .header("x-user", user)
            .send()
    };
    let seven_kb = "u".repeat(7 * 1024);
    for _ in 0..2 {
        assert_eq!(ask(format!("{seven_kb}a")).await.unwrap().status(), 200);
    }
    assert_eq!(ask(format!("{seven_kb}a")).await.unwrap().status(), 429);
    // Same first 7 KB, another last byte: another client, another counter.
    assert_eq!(ask(format!("{seven_kb}b")).await.unwrap().status(), 200);
    let mut redis = shared_redis().conn();
    // The limiter's keys (the prefix also holds the fleet registry's).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:rl:*"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        // prefix, ":rl:{by-user|", the IP, '+', the bounded header (105), "}:fw:3600000".
        assert!(k.len() <= prefix.len() + 160, "{} bytes: {k}", k.len());
        assert!(k.contains(&format!("+{}#", &seven_kb[..64])), "{k}");
    }
}

/// Let this process hold a few thousand sockets (both ends of every test connection).
fn raise_open_files(want: u64) {
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert!(
            lim.rlim_cur >= want,
            "RLIMIT_NOFILE hard limit {} is below {want}",
            lim.rlim_max
        );
    }
}

const SLOW_CONFIG: &str = r#"
[server]
request_timeout = "10s"
idle_timeout = "15s"

[[rule]]
name = "per-ip"
key = "ip"
limits = ["1000/m"]
"#;

async fn open_connections(s: &TestServer) -> f64 {
    metric(
        &scrape(s).await,
        "tollgate_open_connections",
        &[("listener", "decision")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_do_not_starve_decisions_and_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_open_files(8_192);
    let s = TestServer::start(SLOW_CONFIG, None, &unique_prefix("slowloris")).await;
    // In batches the listen backlog (1024) can hold, each accepted before the next.
    let mut idle = Vec::new();
    let mut slow = Vec::new();
    for batch in 0..10 {
        let conns =
            futures::future::join_all((0..200).map(|_| tokio::net::TcpStream::connect(s.addr)))
                .await;
        for c in conns {
            let mut c = c.unwrap();
            if batch % 2 == 1 {
                // A slowloris: a request head that never ends.
                c.write_all(b"GET /check HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .unwrap();
                slow.push(c);
            } else {
                idle.push(c);
            }
        }
        let opened = (200 * (batch + 1)) as f64;
        eventually(Duration::from_secs(10), || async {
            open_connections(&s).await >= opened
        })
        .await;
    }
    // Keep the slow ones sending a byte a second, until the server hangs up.
    let dripping = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut open: Vec<_> = slow.into_iter().map(Some).collect();
        while open.iter().any(Option::is_some) && tokio::time::Instant::now() < deadline {
            for c in open.iter_mut() {
                if let Some(stream) = c {
                    if stream.write_all(b"X").await.is_err() {
                        *c = None;
                    }
                }
            }
            // The behaviour under test: a slow client's pace (a byte a second).
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        open.iter().filter(|c| c.is_some()).count()
    });

    // Meanwhile other clients get their decisions.
    let http = reqwest::Client::new();
    for i in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(5), http.get(s.url("/check")).send())
            .await
            .unwrap_or_else(|_| panic!("decision {i} hung behind 2000 idle connections"))
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // The idle ones are closed (EOF) after idle_timeout, the slow ones after request_timeout.
    let closed = futures::future::join_all(idle.iter_mut().map(|c| async move {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(60), c.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }))
    .await;
    assert_eq!(
        closed.iter().filter(|c| **c).count(),
        1_000,
        "idle connections closed"
    );
    assert_eq!(dripping.await.unwrap(), 0, "every slow sender was cut off");
    eventually(Duration::from_secs(10), || async {
        open_connections(&s).await <= 1.0
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn at_max_connections_new_clients_wait_for_a_free_slot() {
    use tokio::io::AsyncReadExt;
    let config = r#"
[server]
max_connections = 50
request_timeout = "1s"
idle_timeout = "1s"
"#;
    let s = TestServer::start(config, None, &unique_prefix("maxconn")).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    eventually(Duration::from_secs(5), || async {
        open_connections(&s).await == 50.0
    })
    .await;
    // The 51st is not accepted (it waits in the backlog) until an idle one times out;
    // the admin listener has its own connections and still answers.
    let waiting = tokio::spawn({
        let url = s.url("/check");
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    assert!(open_connections(&s).await <= 50.0);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting client is served once a slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    for mut c in idle {
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    }
    s.stop().await;
}
