//! Redis answering with an error, made for real: OOM under `noeviction`, a
//! password rotated under a reconnect, an ACL user losing EVALSHA, a node
//! demoted to replica, a script elsewhere past `busy-reply-threshold`, and a
//! plain script error. Each through `tollgate serve`, whose log is counted.

use std::time::Duration;

use serde_json::Value;

use crate::support::binary::Serve;
use crate::support::{eventually, metric, temp_dir, unique_prefix, RedisServer, ADMIN_TOKEN};

const CONFIG: &str = r#"
[redis]
timeout = "200ms"

[[rule]]
name = "open"
match = { path_prefix = "/open" }
limits = ["1000/h"]
on_redis_error = "allow"

[[rule]]
name = "closed"
match = { path_prefix = "/closed" }
limits = ["1000/h"]
on_redis_error = "deny"
"#;

/// Decisions made while Redis answers with an error.
const REQUESTS: usize = 40;

fn cmd(redis: &RedisServer, args: &[&str]) -> redis::Value {
    let mut c = redis.conn();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Every command Redis was asked since the last `CONFIG RESETSTAT` (answered,
/// failed or rejected), the test's own INFO/CONFIG/ACL/CLIENT aside.
fn redis_calls(redis: &RedisServer) -> u64 {
    let mut c = redis.conn();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| {
            !["info", "config", "acl", "client", "ping"]
                .iter()
                .any(|own| l.starts_with(&format!("{own}:")) || l.starts_with(&format!("{own}|")))
        })
        .map(|l| {
            l.split(|c| c == ':' || c == ',')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| ["calls", "rejected_calls", "failed_calls"].contains(k))
                .map(|(_, v)| v.parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum()
}

fn errors_total(text: &str) -> f64 {
    ["timeout", "unreachable", "refused", "server"]
        .iter()
        .map(|k| metric(text, "tollgate_redis_errors_total", &[("kind", k)]))
        .sum()
}

async fn redis_status(s: &Serve) -> Value {
    let v: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/status", s.admin_addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["redis"].clone()
}

fn lines_with(s: &Serve, text: &str) -> usize {
    s.log().lines().filter(|l| l.contains(text)).count()
}

/// How a state shows: the log line on entering and leaving, and the
/// `tollgate_redis_refusing` class (None: the breaker's outage state).
struct Expect {
    entering: &'static str,
    leaving: &'static str,
    class: Option<&'static str>,
}

const OUTAGE: Expect = Expect {
    entering: "Redis unreachable: rules apply",
    leaving: "Redis back: decisions use Redis again",
    class: None,
};

fn refusal(class: &'static str) -> Expect {
    Expect {
        entering: "Redis refuses limiter calls until an operator acts",
        leaving: "Redis accepts limiter calls again",
        class: Some(class),
    }
}

/// The whole story for one way of failing: healthy, `break_it`, the state
/// opens (metric, status, one log line), decisions follow `on_redis_error`
/// without a Redis call each, the probe keeps failing without closing it,
/// `fix_it`, the state closes (one log line), decisions are Redis's again.
async fn opens_once_and_closes_once(
    redis: &RedisServer,
    url: &str,
    name: &str,
    expect: Expect,
    break_it: impl FnOnce(),
    fix_it: impl FnOnce(),
) -> Serve {
    let prefix = unique_prefix(name);
    let s = Serve::start(
        &temp_dir(&format!("redis-errors-{name}")),
        CONFIG,
        &["--redis", url, "--prefix", &prefix],
    )
    .await;
    assert_eq!(s.status("/closed").await, 200, "healthy: Redis decides");

    break_it();
    eventually(Duration::from_secs(10), || async {
        s.status("/open").await;
        let text = s.metrics().await;
        metric(&text, "tollgate_redis_up", &[]) == 0.0
            && expect
                .class
                .is_none_or(|c| metric(&text, "tollgate_redis_refusing", &[("class", c)]) == 1.0)
    })
    .await;
    assert_eq!(
        redis_status(&s).await["refusing"],
        expect.class.map_or(Value::Null, |c| Value::from(c))
    );

    // Open: decisions follow on_redis_error and none asks Redis: tollgate
    // times every decision's Redis call (not the probe's), and a call that
    // failed would count in tollgate_redis_errors_total. (Redis's own call
    // count includes the probe's, which grows with the time the loop takes.)
    cmd(redis, &["CONFIG", "RESETSTAT"]);
    let before = s.metrics().await;
    for _ in 0..REQUESTS {
        assert_eq!(s.status("/open").await, 200);
        assert_eq!(s.status("/closed").await, 429);
    }
    let after = s.metrics().await;
    assert_eq!(
        errors_total(&after),
        errors_total(&before),
        "decisions asked Redis"
    );
    let calls = |text: &str| metric(text, "tollgate_redis_call_duration_seconds_count", &[]);
    assert!(
        calls(&before) >= 1.0,
        "the healthy decision's call is timed"
    );
    assert_eq!(calls(&after), calls(&before), "decisions asked Redis");
    let during = redis_calls(redis);
    // The probe tries again and again, and fails: still one line, not closed.
    eventually(Duration::from_secs(10), || async {
        redis_calls(redis) >= during + 3
    })
    .await;
    assert_eq!(
        s.status("/closed").await,
        429,
        "the probe closed it falsely"
    );
    assert_eq!(lines_with(&s, expect.entering), 1, "{}", s.log());
    assert_eq!(lines_with(&s, expect.leaving), 0, "{}", s.log());

    fix_it();
    eventually(Duration::from_secs(10), || async {
        s.status("/closed").await == 200
    })
    .await;
    let text = s.metrics().await;
    assert_eq!(metric(&text, "tollgate_redis_up", &[]), 1.0);
    if let Some(c) = expect.class {
        assert_eq!(
            metric(&text, "tollgate_redis_refusing", &[("class", c)]),
            0.0
        );
    }
    assert_eq!(redis_status(&s).await["refusing"], Value::Null);
    assert_eq!(lines_with(&s, expect.entering), 1, "{}", s.log());
    assert_eq!(lines_with(&s, expect.leaving), 1, "{}", s.log());
    s
}

#[tokio::test]
async fn out_of_memory_under_noeviction_refuses_once_until_maxmemory_is_raised() {
    let redis = RedisServer::start();
    let s = opens_once_and_closes_once(
        &redis,
        &redis.url(),
        "oom",
        refusal("oom"),
        || {
            cmd(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
            cmd(&redis, &["CONFIG", "SET", "maxmemory", "1"]);
        },
        || {
            cmd(&redis, &["CONFIG", "SET", "maxmemory", "0"]);
        },
    )
    .await;
    assert_eq!(lines_with(&s, "Redis refuses (oom): "), 1, "{}", s.log());
}

/// An ACL user `tollgate` with every permission, and its URL.
fn acl_user(redis: &RedisServer, password: &str) -> String {
    cmd(
        redis,
        &[
            "ACL",
            "SETUSER",
            "tollgate",
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ],
    );
    format!("redis://tollgate:{password}@127.0.0.1:{}", redis.port)
}

#[tokio::test]
async fn an_acl_user_without_evalsha_refuses_once_until_it_is_given_back() {
    let redis = RedisServer::start();
    let url = acl_user(&redis, "noperm-Secret-51");
    let s = opens_once_and_closes_once(
        &redis,
        &url,
        "noperm",
        refusal("noperm"),
        || {
            cmd(&redis, &["ACL", "SETUSER", "tollgate", "-evalsha", "-eval"]);
        },
        || {
            cmd(&redis, &["ACL", "SETUSER", "tollgate", "+evalsha", "+eval"]);
        },
    )
    .await;
    assert_eq!(lines_with(&s, "Redis refuses (noperm): "), 1, "{}", s.log());
}

/// A password rotated under tollgate: Redis drops its connections (`CLIENT
/// KILL`), the reconnect is refused (WRONGPASS), and the breaker says so as a
/// refusal (not "unreachable"), until the old password works again.
#[tokio::test]
async fn a_password_rotated_under_a_reconnect_refuses_once_until_it_is_restored() {
    let redis = RedisServer::start();
    let url = acl_user(&redis, "wrongpass-Secret-52");
    let s = opens_once_and_closes_once(
        &redis,
        &url,
        "wrongpass",
        refusal("auth"),
        || {
            cmd(
                &redis,
                &[
                    "ACL",
                    "SETUSER",
                    "tollgate",
                    "resetpass",
                    ">rotated-Secret-53",
                ],
            );
            cmd(&redis, &["CLIENT", "KILL", "USER", "tollgate"]);
        },
        || {
            cmd(
                &redis,
                &[
                    "ACL",
                    "SETUSER",
                    "tollgate",
                    "resetpass",
                    ">wrongpass-Secret-52",
                ],
            );
        },
    )
    .await;
    assert_eq!(lines_with(&s, "Redis refuses (auth): "), 1, "{}", s.log());
    assert!(
        !s.log().contains("wrongpass-Secret-52"),
        "the password reached the log"
    );
}

#[tokio::test]
async fn a_node_demoted_to_replica_opens_the_breaker_until_replicaof_no_one() {
    let redis = RedisServer::start();
    let master = RedisServer::start();
    let master_port = master.port.to_string();
    opens_once_and_closes_once(
        &redis,
        &redis.url(),
        "readonly",
        OUTAGE,
        || {
            cmd(&redis, &["REPLICAOF", "127.0.0.1", &master_port]);
        },
        || {
            cmd(&redis, &["REPLICAOF", "NO", "ONE"]);
        },
    )
    .await;
}

async fn serve(redis: &RedisServer, name: &str) -> Serve {
    let prefix = unique_prefix(name);
    Serve::start(
        &temp_dir(&format!("redis-errors-{name}")),
        CONFIG,
        &["--redis", &redis.url(), "--prefix", &prefix],
    )
    .await
}

#[tokio::test]
async fn a_script_busy_elsewhere_opens_the_breaker_until_script_kill() {
    let redis = RedisServer::start_with(&["--busy-reply-threshold", "100"]);
    let s = serve(&redis, "busy").await;
    assert_eq!(s.status("/closed").await, 200, "healthy: Redis decides");

    // Another client's script loops; past the threshold Redis answers BUSY.
    let mut looping = redis.conn();
    let busy = std::thread::spawn(move || {
        let _ = redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<redis::Value>(&mut looping);
    });
    eventually(Duration::from_secs(10), || async {
        s.status("/open").await;
        metric(&s.metrics().await, "tollgate_redis_up", &[]) == 0.0
    })
    .await;
    let errors_before = errors_total(&s.metrics().await);
    for _ in 0..REQUESTS {
        assert_eq!(s.status("/open").await, 200);
        assert_eq!(s.status("/closed").await, 429);
    }
    assert_eq!(
        errors_total(&s.metrics().await),
        errors_before,
        "decisions asked Redis"
    );
    assert_eq!(lines_with(&s, OUTAGE.entering), 1, "{}", s.log());

    cmd(&redis, &["SCRIPT", "KILL"]);
    busy.join().unwrap();
    eventually(Duration::from_secs(10), || async {
        s.status("/closed").await == 200
    })
    .await;
    assert_eq!(lines_with(&s, OUTAGE.entering), 1, "{}", s.log());
    assert_eq!(lines_with(&s, OUTAGE.leaving), 1, "{}", s.log());
}

#[tokio::test]
async fn a_script_error_stays_per_call_and_is_logged_once_with_a_count() {
    let redis = RedisServer::start();
    let s = serve(&redis, "wrongtype").await;
    assert_eq!(s.status("/closed").await, 200);
    // The rule's counter becomes a hash: its script fails with WRONGTYPE.
    let mut c = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*:rl:{closed|*")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("DEL").arg(&keys[0]).query(&mut c).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&keys[0])
        .arg("f")
        .arg(1)
        .query(&mut c)
        .unwrap();

    for _ in 0..REQUESTS {
        assert_eq!(s.status("/closed").await, 429, "on_redis_error = deny");
        assert_eq!(s.status("/open").await, 200, "another key: Redis decides");
    }
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "tollgate_redis_errors_total", &[("kind", "server")]),
        REQUESTS as f64,
        "each call asked Redis"
    );
    assert_eq!(
        metric(&text, "tollgate_redis_up", &[]),
        1.0,
        "the breaker stays closed"
    );
    assert_eq!(
        lines_with(&s, "Redis refused a limiter call"),
        1,
        "{}",
        s.log()
    );
}

/// An admin write while Redis refuses writes (OOM under `noeviction`) is a
/// 503 naming the refusal, not a 500: the server is fine, Redis needs an
/// operator, and the same call will pass once it has one.
#[tokio::test]
async fn an_admin_write_while_redis_refuses_is_a_503_naming_the_refusal() {
    let redis = RedisServer::start();
    let s = serve(&redis, "admin-oom").await;
    cmd(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    cmd(&redis, &["CONFIG", "SET", "maxmemory", "1"]);
    let add = || async {
        let r = reqwest::Client::new()
            .post(format!("http://{}/v1/allowlist", s.admin_addr))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"cidr": "203.0.113.5", "ttl": "1h"}))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (code, v) = add().await;
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("Redis refuses (oom)"),
        "{v}"
    );
    cmd(&redis, &["CONFIG", "SET", "maxmemory", "0"]);
    let (code, v) = add().await;
    assert_eq!(code, 201, "{v}");
}
