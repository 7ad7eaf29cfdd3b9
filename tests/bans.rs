//! Bans that follow from a rule (`ban = {…}` on a rule keyed by the client
//! address): real Redis and several replicas, or the embedded store. One ban
//! per offence however many replicas see it at once (counted in the deny
//! stream), escalation by `factor` up to `max` within `remember`, the banned
//! client's next request refused on every replica, shadow rules ban no one
//! but count, exempt allowlist entries are never banned (and a manual deny
//! still beats them), and config errors name the key.

use std::time::Duration;

use serde_json::Value;
use tollgate::keys::KeySpace;

use crate::denylist::add as post;
use crate::support::{eventually, metric, scrape, shared_redis, unique_prefix, TestServer};

/// `login`: 1 request a minute per address on `/login`, banning after
/// `after` limited answers; `extra` goes into the rule.
fn config(ban: &str, extra: &str) -> String {
    format!(
        r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
match = {{ path_prefix = "/login" }}
limits = ["1/m"]
ban = {{ {ban} }}
{extra}
"#
    )
}

async fn nodes(n: usize, text: &str, redis: Option<&str>, prefix: &str) -> Vec<TestServer> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TestServer::start(text, redis, prefix).await);
    }
    all
}

async fn ask(s: &TestServer, path: &str, ip: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

async fn status(s: &TestServer, path: &str, ip: &str) -> u16 {
    ask(s, path, ip).await.status().as_u16()
}

/// Whether `s` refuses `ip` as denied (403 `X-Tollgate-Reason: denied`).
async fn denied(s: &TestServer, path: &str, ip: &str) -> bool {
    let r = ask(s, path, ip).await;
    r.status() == 403
        && r.headers()
            .get("x-tollgate-reason")
            .is_some_and(|v| v == "denied")
}

/// Requests from `ip` to `s` until one is refused as denied (bounded).
async fn offend(s: &TestServer, ip: &str) -> usize {
    for n in 1..=50 {
        if denied(s, "/login", ip).await {
            return n;
        }
    }
    panic!("{ip} was never banned");
}

/// The denylist entry holding `ip` (`GET /v1/denylist/check`), if any.
async fn deny_entry(s: &TestServer, ip: &str) -> Option<Value> {
    let (code, body) = s
        .admin(reqwest::Method::GET, &format!("/v1/denylist/check?ip={ip}"))
        .await;
    (code == 200).then_some(body)
}

/// How long the entry holding `ip` was written for.
async fn banned_for_ms(s: &TestServer, ip: &str) -> u64 {
    let e = deny_entry(s, ip).await.expect("a deny entry");
    e["expires_at"].as_u64().unwrap() - e["created_at"].as_u64().unwrap()
}

async fn unban(s: &TestServer, cidr: &str) {
    let path = format!("/v1/denylist/{}", cidr.replace('/', "%2F"));
    let (code, body) = s.admin(reqwest::Method::DELETE, &path).await;
    assert_eq!(code, 200, "{body}");
}

/// Deny events in the stream written by `actor`.
fn deny_events_by(prefix: &str, actor: &str) -> usize {
    let events = KeySpace::new(prefix).list("deny").events;
    let all: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&events)
        .arg("-")
        .arg("+")
        .query(&mut shared_redis().conn())
        .unwrap();
    all.ids
        .iter()
        .filter(|id| id.get::<String>("actor").as_deref() == Some(actor))
        .count()
}

#[tokio::test]
async fn an_offence_seen_by_three_replicas_at_once_bans_exactly_once() {
    let prefix = unique_prefix("ban-once");
    let text = config("after = 5, within = \"1m\", for = \"1h\"", "");
    let all = nodes(3, &text, Some(&shared_redis().url()), &prefix).await;
    let ip = "203.0.113.5";
    // 3 replicas x 40 concurrent requests: 1 allowed, then limited answers
    // on every replica at once, far more than `after`.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        for s in &all {
            tasks.push(ask(s, "/login", ip));
        }
    }
    let answers: Vec<u16> = futures::future::join_all(tasks)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        answers.iter().filter(|s| **s == 200).count(),
        1,
        "{answers:?}"
    );
    eventually(Duration::from_secs(5), || async {
        for s in &all {
            if !denied(s, "/anything", ip).await {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(deny_events_by(&prefix, "rule:login"), 1);
    let e = deny_entry(&all[0], ip).await.unwrap();
    assert_eq!(e["cidr"], "203.0.113.5/32");
    assert_eq!(e["actor"], "rule:login");
    assert_eq!(e["note"], "5 limited in 1m by rule login; offence 1");
    let mut banned = 0.0;
    for s in &all {
        banned += metric(
            &scrape(s).await,
            "tollgate_bans_total",
            &[("rule", "login"), ("shadow", "false")],
        );
    }
    assert_eq!(banned, 1.0);
}

#[tokio::test]
async fn the_banned_clients_next_request_is_refused_by_the_banning_replica_and_then_every_replica()
{
    let prefix = unique_prefix("ban-next");
    let text = config("after = 2, within = \"1m\", for = \"1h\"", "");
    let all = nodes(3, &text, Some(&shared_redis().url()), &prefix).await;
    let ip = "198.51.100.20";
    assert_eq!(status(&all[0], "/login", ip).await, 200);
    assert_eq!(status(&all[0], "/login", ip).await, 429);
    // The second limited answer bans: the answer itself is still a 429 ...
    let r = ask(&all[0], "/login", ip).await;
    assert_eq!(r.status(), 429);
    // ... and the very next request to that replica is refused, any path.
    assert!(denied(&all[0], "/home", ip).await);
    for s in &all[1..] {
        eventually(Duration::from_secs(5), || denied(s, "/home", ip)).await;
    }
    // Another address is untouched.
    assert_eq!(status(&all[1], "/home", "198.51.100.21").await, 200);
}

#[tokio::test]
async fn a_repeat_offence_within_remember_is_banned_factor_times_longer_up_to_max() {
    let prefix = unique_prefix("ban-escalate");
    let text = config(
        "after = 2, within = \"1m\", for = \"2s\", factor = 4, max = \"10s\", remember = \"1h\"",
        "",
    );
    let all = nodes(2, &text, Some(&shared_redis().url()), &prefix).await;
    let ip = "192.0.2.77";
    let mut lengths = Vec::new();
    for _ in 0..3 {
        offend(&all[0], ip).await;
        lengths.push(banned_for_ms(&all[0], ip).await);
        // Unbanned by hand: the offences are still remembered.
        unban(&all[1], "192.0.2.77/32").await;
        for s in &all {
            eventually(Duration::from_secs(5), || async {
                !denied(s, "/home", ip).await
            })
            .await;
        }
    }
    assert_eq!(lengths, [2_000, 8_000, 10_000]);
    let e = deny_events_by(&prefix, "rule:login");
    assert_eq!(e, 3);
}

#[tokio::test]
async fn a_shadow_rule_bans_no_one_and_counts_what_it_would_have_banned() {
    let prefix = unique_prefix("ban-shadow");
    let text = config("after = 2, within = \"1m\", for = \"1h\"", "shadow = true");
    let all = nodes(2, &text, Some(&shared_redis().url()), &prefix).await;
    let ip = "203.0.113.60";
    for _ in 0..4 {
        // A shadow rule never refuses.
        assert_eq!(status(&all[0], "/login", ip).await, 200);
    }
    assert!(deny_entry(&all[0], ip).await.is_none());
    assert_eq!(deny_events_by(&prefix, "rule:login"), 0);
    assert_eq!(deny_events_by(&prefix, "shadow:login"), 0);
    let text = scrape(&all[0]).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_bans_total",
            &[("rule", "login"), ("shadow", "true")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_ban_steps_total",
            &[("rule", "login"), ("outcome", "shadow")]
        ),
        1.0
    );
}

#[tokio::test]
async fn the_embedded_store_bans_once_per_offence_and_escalates_the_same_way() {
    let prefix = unique_prefix("ban-local");
    let text = config(
        "after = 2, within = \"1m\", for = \"2s\", factor = 3, max = \"5s\", remember = \"1h\"",
        "",
    );
    let s = TestServer::start(&text, None, &prefix).await;
    let ip = "203.0.113.99";
    let mut lengths = Vec::new();
    for _ in 0..3 {
        assert_eq!(offend(&s, ip).await, if lengths.is_empty() { 4 } else { 3 });
        let e = deny_entry(&s, ip).await.unwrap();
        assert_eq!(e["actor"], "rule:login");
        lengths.push(banned_for_ms(&s, ip).await);
        unban(&s, "203.0.113.99/32").await;
        assert!(!denied(&s, "/home", ip).await);
    }
    assert_eq!(lengths, [2_000, 5_000, 5_000]);
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_bans_total",
            &[("rule", "login"), ("shadow", "false")]
        ),
        3.0
    );
}

#[tokio::test]
async fn a_failed_ban_step_leaves_the_answer_limited_and_is_counted() {
    // Redis for the limiter and the lists, then gone: the limited answers
    // stay 429 (or the rule's fallback), the step counts as failed.
    let mut redis = crate::support::RedisServer::start();
    let prefix = unique_prefix("ban-fail");
    let text = config(
        "after = 1, within = \"1m\", for = \"1h\"",
        "on_redis_error = \"local\"",
    );
    let s = TestServer::start(&text, Some(&redis.url()), &prefix).await;
    let ip = "203.0.113.140";
    assert_eq!(status(&s, "/login", ip).await, 200);
    redis.kill();
    eventually(Duration::from_secs(5), || async {
        let r = ask(&s, "/login", ip).await.status().as_u16();
        assert_ne!(r, 403, "nothing could be banned");
        metric(
            &scrape(&s).await,
            "tollgate_ban_steps_total",
            &[("rule", "login"), ("outcome", "failed")],
        ) >= 1.0
    })
    .await;
    assert_eq!(
        metric(&scrape(&s).await, "tollgate_ban_step_failing", &[]),
        1.0
    );
}

#[tokio::test]
async fn a_ban_on_a_rule_not_keyed_by_the_address_is_a_config_error_naming_the_key() {
    let text = "[[rule]]\nname = \"login\"\nkey = \"header:x-user\"\nlimits = [\"1/m\"]\nban = { after = 1, within = \"1m\", for = \"1h\" }\n";
    let e = tollgate::config::parse("t.toml", text, &Default::default()).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("rule[0].ban") && shown.contains("header:x-user"),
        "{shown}"
    );
    let text = "[[rule]]\nname = \"login\"\nlimits = [\"1/m\"]\nban = { after = 0, within = \"1m\", for = \"1h\", max = \"1m\" }\n";
    let shown = tollgate::config::parse("t.toml", text, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("rule[0].ban.after") && shown.contains("rule[0].ban.max"),
        "{shown}"
    );
}

#[tokio::test]
async fn an_exempt_allowlist_address_is_never_banned_and_a_manual_deny_still_beats_it() {
    let prefix = unique_prefix("ban-exempt");
    let text = config("after = 1, within = \"1m\", for = \"1h\"", "");
    let all = nodes(2, &text, Some(&shared_redis().url()), &prefix).await;
    let (code, body) = post(
        &all[1],
        "allowlist",
        serde_json::json!({"cidr": "203.0.113.0/24", "ttl": "1h", "note": "office", "exempt": true}),
    )
    .await;
    assert_eq!((code, &body["exempt"]), (201, &Value::Bool(true)), "{body}");
    // The mark travels with the event: the other node's own table has it.
    eventually(Duration::from_secs(5), || async {
        let (_, doc) = all[0]
            .admin(reqwest::Method::GET, "/v1/allowlist/export")
            .await;
        doc["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["exempt"] == true))
    })
    .await;
    let ip = "203.0.113.8";
    for _ in 0..10 {
        // Limited (the rule ignores the allowlist), never banned.
        assert_ne!(status(&all[0], "/login", ip).await, 403);
    }
    assert!(deny_entry(&all[0], ip).await.is_none());
    assert_eq!(deny_events_by(&prefix, "rule:login"), 0);
    let steps = metric(
        &scrape(&all[0]).await,
        "tollgate_ban_steps_total",
        &[("rule", "login"), ("outcome", "exempt")],
    );
    assert!(steps >= 9.0, "{steps}");
    // An address outside the exempt entry is banned at once.
    assert_eq!(status(&all[0], "/login", "198.51.100.8").await, 200);
    assert_eq!(status(&all[0], "/login", "198.51.100.8").await, 429);
    assert!(denied(&all[0], "/home", "198.51.100.8").await);
    // A manual deny beats the allowlist, exempt or not.
    let (code, body) = post(
        &all[1],
        "denylist",
        serde_json::json!({"cidr": ip, "ttl": "1h"}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    for s in &all {
        eventually(Duration::from_secs(5), || denied(s, "/home", ip)).await;
    }
    // Exempt is for allowlist entries only: a 400 naming the field, nothing written.
    let (code, body) = post(
        &all[0],
        "denylist",
        serde_json::json!({"cidr": "192.0.2.1", "exempt": true}),
    )
    .await;
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("exempt")),
        "{body}"
    );
    assert!(deny_entry(&all[0], "192.0.2.1").await.is_none());
}

#[tokio::test]
async fn the_embedded_store_never_bans_an_exempt_address() {
    let prefix = unique_prefix("ban-exempt-local");
    let text = config("after = 1, within = \"1m\", for = \"1h\"", "");
    let s = TestServer::start(&text, None, &prefix).await;
    let (code, _) = post(
        &s,
        "allowlist",
        serde_json::json!({"cidr": "192.0.2.0/24", "exempt": true}),
    )
    .await;
    assert_eq!(code, 201);
    for _ in 0..5 {
        assert_ne!(status(&s, "/login", "192.0.2.44").await, 403);
    }
    assert!(deny_entry(&s, "192.0.2.44").await.is_none());
}

/// `tollgate <list> args... --redis <redis> --prefix <prefix>`: exit code and output.
fn cli(list: &str, args: &[&str], prefix: &str) -> (Option<i32>, String) {
    let o = crate::support::binary::tollgate_cmd(&[list])
        .args(args)
        .args(["--redis", &shared_redis().url(), "--prefix", prefix])
        .output()
        .unwrap();
    (o.status.code(), crate::support::binary::output_text(&o))
}

#[tokio::test]
async fn the_cli_marks_an_allowlist_entry_exempt_and_unbans_with_deny_remove() {
    let prefix = unique_prefix("ban-cli");
    let text = config("after = 1, within = \"1m\", for = \"1h\"", "");
    let s = TestServer::start(&text, Some(&shared_redis().url()), &prefix).await;
    let (code, out) = cli(
        "allow",
        &["add", "192.0.2.0/28", "--exempt", "--ttl", "1h"],
        &prefix,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("exempt from bans"), "{out}");
    // `--exempt` is for allowlist entries only: refused, nothing written.
    let (code, out) = cli("deny", &["add", "192.0.2.200", "--exempt"], &prefix);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--exempt"), "{out}");
    assert!(deny_entry(&s, "192.0.2.200").await.is_none());

    // The exempt address is limited, never banned (once the node has the entry).
    eventually(Duration::from_secs(5), || async {
        let (_, doc) = s.admin(reqwest::Method::GET, "/v1/allowlist/export").await;
        doc["entries"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    for _ in 0..3 {
        assert_ne!(status(&s, "/login", "192.0.2.5").await, 403);
    }
    assert!(deny_entry(&s, "192.0.2.5").await.is_none());

    // Another address is banned; `deny remove` lifts the ban.
    offend(&s, "192.0.2.100").await;
    let (code, out) = cli("deny", &["list"], &prefix);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("192.0.2.100/32") && out.contains("rule:login"),
        "{out}"
    );
    let (code, out) = cli("deny", &["remove", "192.0.2.100/32"], &prefix);
    assert_eq!(code, Some(0), "{out}");
    eventually(Duration::from_secs(5), || async {
        !denied(&s, "/home", "192.0.2.100").await
    })
    .await;
}
