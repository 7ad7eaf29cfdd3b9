//! The IP denylist: the allowlist's machinery with its own keys and stream.
//! Three servers on one real Redis (as `allowlist/`): an entry added on one
//! node is refused by every node (403 `denied`, `Retry-After`) before any
//! rule is charged; a deny beats the allowlist; expiry and removal reach
//! every node; bad input writes nothing; fail-static with Redis killed; a
//! trimmed stream resyncs; FLUSHALL is put back by the fleet restore; the
//! state file; `tollgate deny`; `tollgate follow --list deny --format nft`.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tollgate::keys::{AllowKeys, KeySpace};

use crate::support::binary::{output_text, tollgate, tollgate_cmd, Serve};
use crate::support::server::readyz;
use crate::support::{
    eventually, metric, scrape, shared_redis, temp_dir, unique_prefix, RedisServer, TestServer,
};

/// `login` is limited per client address (1/m); `admin` is an allowlist
/// gate; `bypass` lets allowlist members skip its limit.
fn config(extra: &str) -> String {
    format!(
        r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[denylist]
reap_interval = "1s"
{extra}

[[rule]]
name = "login"
match = {{ path_prefix = "/login" }}
limits = ["1/m"]

[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"

[[rule]]
name = "bypass"
match = {{ path_prefix = "/bypass" }}
limits = ["1/m"]
allowlist = "bypass"
"#
    )
}

fn deny_keys(prefix: &str) -> AllowKeys {
    KeySpace::new(prefix).list("deny")
}

async fn nodes(n: usize, url: &str, prefix: &str, extra: &str) -> Vec<TestServer> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TestServer::start(&config(extra), Some(url), prefix).await);
    }
    all
}

/// `POST /v1/<list>`: the status and body.
pub(crate) async fn add(s: &TestServer, list: &str, body: Value) -> (u16, Value) {
    s.admin_json(reqwest::Method::POST, &format!("/v1/{list}"), &body)
        .await
}

async fn deny(s: &TestServer, cidr: &str, ttl: &str) {
    let (status, body) = add(s, "denylist", json!({"cidr": cidr, "ttl": ttl})).await;
    assert_eq!(status, 201, "{body}");
}

/// What `check` (`/check`, `/check/nginx`, `/check/<path>`) answers for a
/// client at `ip` asking for `path`.
async fn ask(s: &TestServer, check: &str, path: &str, ip: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url(check))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

async fn status(s: &TestServer, path: &str, ip: &str) -> u16 {
    ask(s, "/check", path, ip).await.status().as_u16()
}

async fn all_answer(nodes: &[TestServer], path: &str, ip: &str, want: u16) -> bool {
    for n in nodes {
        if status(n, path, ip).await != want {
            return false;
        }
    }
    true
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Limiter keys under `prefix` (`<prefix>:rl:*`).
fn limiter_keys(prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}:rl:*"))
        .query(&mut shared_redis().conn())
        .unwrap()
}

#[tokio::test]
async fn a_deny_added_on_one_node_is_refused_by_every_node_with_403_denied_and_retry_after() {
    let prefix = unique_prefix("deny");
    let all = nodes(3, &shared_redis().url(), &prefix, "").await;
    deny(&all[0], "203.0.113.0/24", "1h").await;
    eventually(Duration::from_secs(5), || {
        all_answer(&all, "/anything", "203.0.113.9", 403)
    })
    .await;
    for n in &all {
        for check in ["/check", "/check/nginx"] {
            let r = ask(n, check, "/login", "203.0.113.9").await;
            assert_eq!(r.status(), 403, "{check}");
            assert_eq!(header(&r, "x-tollgate-reason").as_deref(), Some("denied"));
            let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
            // Rounded up, on the node's estimate of Redis time (off by
            // up to half a round trip): 3601 is possible.
            assert!((3500..=3601).contains(&retry), "{retry}");
        }
        let r = reqwest::Client::new()
            .get(n.url("/check/some/page"))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(header(&r, "x-tollgate-reason").as_deref(), Some("denied"));
        // Outside the network: the rules decide.
        assert_eq!(status(n, "/anything", "203.0.114.1").await, 200);
    }
    // Its own stream: the allowlist's saw nothing.
    let mut conn = shared_redis().conn();
    let deny_events: u64 = redis::cmd("XLEN")
        .arg(deny_keys(&prefix).events)
        .query(&mut conn)
        .unwrap();
    let allow_events: u64 = redis::cmd("XLEN")
        .arg(KeySpace::new(&prefix).allowlist().events)
        .query(&mut conn)
        .unwrap();
    assert_eq!((deny_events, allow_events), (1, 0));
}

#[tokio::test]
async fn a_permanent_deny_needs_allow_permanent_and_then_sends_no_retry_after() {
    let prefix = unique_prefix("deny-perm");
    let s = &nodes(1, &shared_redis().url(), &prefix, "allow_permanent = true").await[0];
    deny(s, "198.51.100.7", "never").await;
    eventually(Duration::from_secs(5), || async {
        status(s, "/x", "198.51.100.7").await == 403
    })
    .await;
    let r = ask(s, "/check", "/x", "198.51.100.7").await;
    assert_eq!(header(&r, "x-tollgate-reason").as_deref(), Some("denied"));
    assert_eq!(header(&r, "retry-after"), None);
}

#[tokio::test]
async fn a_denied_request_charges_no_rule_and_is_counted_in_denied_requests_total() {
    let prefix = unique_prefix("deny-charge");
    let s = &nodes(1, &shared_redis().url(), &prefix, "").await[0];
    deny(s, "192.0.2.0/24", "1h").await;
    eventually(Duration::from_secs(5), || async {
        status(s, "/login", "192.0.2.1").await == 403
    })
    .await;
    for _ in 0..4 {
        assert_eq!(status(s, "/login", "192.0.2.1").await, 403);
    }
    assert!(limiter_keys(&prefix).is_empty(), "no limiter key written");
    let text = scrape(s).await;
    assert_eq!(metric(&text, "tollgate_denied_requests_total", &[]), 5.0);
    for outcome in ["allowed", "limited"] {
        assert_eq!(
            metric(
                &text,
                "tollgate_decisions_total",
                &[("rule", "login"), ("outcome", outcome)]
            ),
            0.0
        );
    }
    // `GET /v1/limits/login/<client>` (what `limits show` reads): nothing spent.
    let (code, v) = s
        .admin(reqwest::Method::GET, "/v1/limits/login/192.0.2.1")
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["limits"][0]["used"], 0, "{v}");
    // Removed: the full limit (1/m) is there, then spent.
    let (code, _) = s
        .admin(reqwest::Method::DELETE, "/v1/denylist/192.0.2.0/24")
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(5), || async {
        status(s, "/anything", "192.0.2.1").await == 200
    })
    .await;
    assert_eq!(status(s, "/login", "192.0.2.1").await, 200);
    assert_eq!(status(s, "/login", "192.0.2.1").await, 429);
}

#[tokio::test]
async fn a_deny_beats_the_allowlist_for_a_gate_and_a_bypass() {
    let prefix = unique_prefix("deny-allow");
    let s = &nodes(1, &shared_redis().url(), &prefix, "").await[0];
    let ip = "203.0.113.50";
    let (code, body) = add(
        s,
        "allowlist",
        json!({"cidr": "203.0.113.0/24", "ttl": "1h"}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    eventually(Duration::from_secs(5), || async {
        status(s, "/admin", ip).await == 200
    })
    .await;
    // A narrower deny inside the allowed network.
    deny(s, "203.0.113.50", "1h").await;
    eventually(Duration::from_secs(5), || async {
        status(s, "/admin", ip).await == 403
    })
    .await;
    for path in ["/admin", "/bypass", "/login"] {
        let r = ask(s, "/check", path, ip).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(header(&r, "x-tollgate-reason").as_deref(), Some("denied"));
    }
    // Its neighbour is only allowlisted.
    assert_eq!(status(s, "/admin", "203.0.113.51").await, 200);
}

#[tokio::test]
async fn expiry_and_removal_reach_every_node() {
    let prefix = unique_prefix("deny-exp");
    let all = nodes(3, &shared_redis().url(), &prefix, "").await;
    deny(&all[0], "198.51.100.1", "2s").await;
    deny(&all[1], "198.51.100.2", "1h").await;
    eventually(Duration::from_secs(5), || async {
        all_answer(&all, "/x", "198.51.100.1", 403).await
            && all_answer(&all, "/x", "198.51.100.2", 403).await
    })
    .await;
    let (code, _) = all[2]
        .admin(reqwest::Method::DELETE, "/v1/denylist/198.51.100.2")
        .await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(10), || async {
        all_answer(&all, "/x", "198.51.100.1", 200).await
            && all_answer(&all, "/x", "198.51.100.2", 200).await
    })
    .await;
    // The reaper wrote the expiry to the stream: every node's table is empty.
    eventually(Duration::from_secs(5), || async {
        all.iter().all(|n| n.app.denylist.table().is_empty())
    })
    .await;
    let (code, body) = all[0]
        .admin(reqwest::Method::GET, "/v1/denylist/check?ip=198.51.100.2")
        .await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test]
async fn a_bad_cidr_or_ttl_is_a_400_naming_the_field_and_writes_nothing() {
    let prefix = unique_prefix("deny-bad");
    let s = &nodes(1, &shared_redis().url(), &prefix, "").await[0];
    for (body, field) in [
        (json!({"cidr": "300.1.1.1", "ttl": "1h"}), "cidr"),
        (json!({"cidr": "10.0.0.0/4", "ttl": "1h"}), "cidr"),
        (json!({"cidr": "192.0.2.1", "ttl": "never"}), "ttl"),
        (json!({"cidr": "192.0.2.1", "ttl": "forever"}), "ttl"),
        (json!({"cidr": "192.0.2.1", "ttl": "400d"}), "ttl"),
    ] {
        let (code, answer) = add(s, "denylist", body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (_, answer) = add(s, "denylist", json!({"cidr": "192.0.2.1", "ttl": "never"})).await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("denylist.allow_permanent"),
        "{answer}"
    );
    let mut conn = shared_redis().conn();
    for key in deny_keys(&prefix).all() {
        let exists: u64 = redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap();
        assert_eq!(exists, 0, "{key}");
    }
}

#[tokio::test]
async fn with_redis_killed_every_node_keeps_denying_from_its_table() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("deny-static");
    let all = nodes(2, &redis.url(), &prefix, "").await;
    deny(&all[0], "192.0.2.0/24", "1h").await;
    eventually(Duration::from_secs(5), || {
        all_answer(&all, "/x", "192.0.2.7", 403)
    })
    .await;
    redis.kill();
    for n in &all {
        eventually(Duration::from_secs(10), || async {
            readyz(n.admin_addr).await.1.contains("denylist stale")
        })
        .await;
    }
    for _ in 0..3 {
        assert!(all_answer(&all, "/x", "192.0.2.7", 403).await);
    }
}

#[tokio::test]
async fn a_follower_whose_denylist_events_were_trimmed_resyncs_on_the_gap() {
    let prefix = unique_prefix("deny-gap");
    let url = shared_redis().url();
    let admin = &nodes(1, &url, &prefix, "").await[0];
    let dir = temp_dir("deny-gap");
    let node = Serve::start(&dir, &config(""), &["--redis", &url, "--prefix", &prefix]).await;
    let node_status = |ip: &'static str| {
        let addr = node.addr;
        async move {
            reqwest::Client::new()
                .get(format!("http://{addr}/check"))
                .header("x-forwarded-uri", "/x")
                .header("x-forwarded-for", ip)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    deny(admin, "192.0.2.1", "1h").await;
    eventually(Duration::from_secs(5), || async {
        node_status("192.0.2.1").await == 403
    })
    .await;

    node.signal(libc::SIGSTOP);
    deny(admin, "198.51.100.10", "1h").await;
    let (code, _) = admin
        .admin(reqwest::Method::DELETE, "/v1/denylist/192.0.2.1")
        .await;
    assert_eq!(code, 200);
    let _: i64 = redis::cmd("XTRIM")
        .arg(deny_keys(&prefix).events)
        .arg("MAXLEN")
        .arg(0)
        .query(&mut shared_redis().conn())
        .unwrap();
    node.signal(libc::SIGCONT);

    eventually(Duration::from_secs(10), || async {
        metric(
            &node.metrics().await,
            "tollgate_denylist_resyncs_total",
            &[("reason", "gap")],
        ) >= 1.0
    })
    .await;
    assert_eq!(node_status("192.0.2.1").await, 200, "the removal");
    assert_eq!(node_status("198.51.100.10").await, 403, "the add");
    // The allowlist's follower was not disturbed.
    assert_eq!(
        metric(
            &node.metrics().await,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "gap")],
        ),
        0.0
    );
}

#[tokio::test]
async fn after_flushall_the_fleet_puts_the_denylist_back_and_nodes_deny_meanwhile() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("deny-flush");
    let all = nodes(2, &redis.url(), &prefix, "").await;
    deny(&all[0], "192.0.2.0/24", "1h").await;
    deny(&all[0], "2001:db8::/48", "1h").await;
    let (code, _) = add(&all[0], "allowlist", json!({"cidr": "198.51.100.0/24"})).await;
    assert_eq!(code, 201);
    eventually(Duration::from_secs(5), || async {
        all_answer(&all, "/x", "2001:db8::5", 403).await
            && all_answer(&all, "/admin", "198.51.100.1", 200).await
    })
    .await;
    let old = all[0].app.denylist.table().epoch.clone();

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    assert!(
        all_answer(&all, "/x", "192.0.2.9", 403).await,
        "fail-static"
    );

    // One node restores each list; every node loads the new epochs.
    let keys = deny_keys(&prefix);
    eventually(Duration::from_secs(15), || async {
        let mut conn = redis.conn();
        let entries: u64 = redis::cmd("HLEN")
            .arg(&keys.entries)
            .query(&mut conn)
            .unwrap();
        let allow: u64 = redis::cmd("HLEN")
            .arg(KeySpace::new(&prefix).allowlist().entries)
            .query(&mut conn)
            .unwrap();
        entries == 2
            && allow == 1
            && all.iter().all(|n| {
                let t = n.app.denylist.table();
                t.epoch != old && t.len() == 2
            })
    })
    .await;
    let born: Option<String> = redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("born")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(born.as_deref(), Some("fleet"));
    assert!(all_answer(&all, "/x", "2001:db8::5", 403).await);
    assert!(all_answer(&all, "/x", "192.0.2.9", 403).await);
    for n in &all {
        assert_eq!(
            metric(&scrape(n).await, "tollgate_denylist_source_lost", &[]),
            0.0
        );
    }
}

#[tokio::test]
async fn a_node_started_from_its_state_file_denies_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("deny-state");
    let dir = temp_dir("deny-state");
    let state = dir.join("deny-state.json");
    let extra = format!("state_file = {:?}", state.display().to_string());
    let first = nodes(1, &redis.url(), &prefix, &extra).await.remove(0);
    deny(&first, "192.0.2.0/24", "1h").await;
    eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&state).is_ok_and(|t| t.contains("192.0.2.0/24"))
    })
    .await;
    first.stop().await;
    redis.kill();

    let second = TestServer::launch(&config(&extra), Some(&redis.url()), &prefix).await;
    eventually(Duration::from_secs(5), || async {
        status(&second, "/x", "192.0.2.3").await == 403
    })
    .await;
    assert_eq!(status(&second, "/x", "192.0.3.1").await, 200);
}

#[tokio::test]
async fn tollgate_deny_adds_checks_lists_and_removes_through_the_same_scripts() {
    let prefix = unique_prefix("deny-cli");
    let url = shared_redis().url();
    let s = &nodes(1, &url, &prefix, "").await[0];
    let cli = |args: &[&str]| {
        let mut all = vec!["deny"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--redis", &url, "--prefix", &prefix]);
        tollgate(&all)
    };
    let o = cli(&["add", "203.0.113.0/24", "--ttl", "1h", "--note", "scraper"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    eventually(Duration::from_secs(5), || async {
        status(s, "/x", "203.0.113.4").await == 403
    })
    .await;
    let o = cli(&["check", "203.0.113.4"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(output_text(&o).contains("is denied by 203.0.113.0/24"));
    let o = cli(&["list"]);
    assert!(
        output_text(&o).contains("\"scraper\""),
        "{}",
        output_text(&o)
    );
    let o = cli(&["add", "203.0.113.0/24", "--ttl", "never"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(output_text(&o).contains("denylist.allow_permanent"));
    // Its export is the denylist's: the allowlist refuses to restore it.
    let file = temp_dir("deny-cli").join("deny.json");
    let o = cli(&["export", "--output", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let o = tollgate(&[
        "allow",
        "restore",
        file.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(output_text(&o).contains("tollgate-denylist"));
    let o = cli(&["restore", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let o = cli(&["remove", "203.0.113.0/24"]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    eventually(Duration::from_secs(5), || async {
        status(s, "/x", "203.0.113.4").await == 200
    })
    .await;
    let o = cli(&["check", "203.0.113.4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(output_text(&o).contains("not on the denylist"));
}

/// A `tollgate follow` process, killed on drop.
struct Follow(Child);

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn follow(dir: &Path, url: &str, prefix: &str, format: &str, export: &Path) -> Follow {
    let log = std::fs::File::create(dir.join(format!("follow-{format}.log"))).unwrap();
    Follow(
        tollgate_cmd(&[
            "follow", "--redis", url, "--prefix", prefix, "--list", "deny",
        ])
        .args(["--format", format, "--export", export.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap(),
    )
}

#[tokio::test]
async fn tollgate_follow_exports_the_denylist_as_nginx_geo_and_as_an_nft_script() {
    let prefix = unique_prefix("deny-follow");
    let url = shared_redis().url();
    let s = &nodes(1, &url, &prefix, "").await[0];
    let (code, _) = add(s, "allowlist", json!({"cidr": "198.51.100.0/24"})).await;
    assert_eq!(code, 201);
    deny(s, "192.0.2.0/24", "1h").await;
    deny(s, "2001:db8::/48", "1h").await;
    let dir = temp_dir("deny-follow");
    let (geo, nft) = (dir.join("deny.geo"), dir.join("deny.nft"));
    let _g = follow(&dir, &url, &prefix, "nginx-geo", &geo);
    let _n = follow(&dir, &url, &prefix, "nft", &nft);
    eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&nft).is_ok_and(|t| t.contains("2001:db8::/48"))
            && std::fs::read_to_string(&geo).is_ok_and(|t| t.contains("2001:db8::/48 1;"))
    })
    .await;
    let geo = std::fs::read_to_string(&geo).unwrap();
    assert!(geo.contains("geo $tollgate_denied"), "{geo}");
    assert!(geo.contains("192.0.2.0/24 1;") && !geo.contains("198.51.100"));
    let text = std::fs::read_to_string(&nft).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "table inet tollgate {",
            "\tset denylist_v4 { type ipv4_addr; flags interval; auto-merge; }",
            "\tset denylist_v6 { type ipv6_addr; flags interval; auto-merge; }",
            "}",
            "flush set inet tollgate denylist_v4",
            "add element inet tollgate denylist_v4 { 192.0.2.0/24 }",
            "flush set inet tollgate denylist_v6",
            "add element inet tollgate denylist_v6 { 2001:db8::/48 }",
        ]
    );
    // `nft -c` (check only, nothing applied) where nft is installed.
    if let Ok(o) = std::process::Command::new("nft")
        .args(["-c", "-f"])
        .arg(&nft)
        .output()
    {
        assert!(o.status.success(), "{}", output_text(&o));
    }
}
