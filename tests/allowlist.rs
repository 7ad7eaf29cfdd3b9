//! The distributed allowlist: three tollgate servers sharing one redis-server,
//! the admin API, the stream, expiry, longest-prefix matches, bad input, the
//! embedded store, and `tollgate allow`.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::StreamRangeReply;
use serde_json::{json, Value};

use crate::support::{
    eventually, free_port, metric, scrape, shared_redis, unique_prefix, TestServer,
};

/// `admin` is a pure gate; `login` lets members skip its limit.
fn config(reap_interval: &str, trusted: &str) -> String {
    format!(
        r#"
[client_ip]
trusted_proxies = [{trusted}]

[allowlist]
reap_interval = "{reap_interval}"

[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"

[[rule]]
name = "login"
match = {{ path_prefix = "/login" }}
limits = ["1/m"]
allowlist = "bypass"
"#
    )
}

const TRUSTED: &str = r#""127.0.0.1/32""#;

async fn servers(n: usize, reap_interval: &str) -> (String, Vec<TestServer>) {
    let prefix = unique_prefix("allow");
    let url = shared_redis().url();
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TestServer::start(&config(reap_interval, TRUSTED), Some(&url), &prefix).await);
    }
    (prefix, all)
}

/// The status `/check` (or `/check/nginx`) answers for a client at `ip` on `path`.
async fn ask(s: &TestServer, check: &str, path: &str, ip: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url(check))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

async fn gate(s: &TestServer, ip: &str) -> u16 {
    ask(s, "/check", "/admin", ip).await.status().as_u16()
}

async fn all_answer(servers: &[TestServer], ip: &str, status: u16) -> bool {
    for s in servers {
        if gate(s, ip).await != status {
            return false;
        }
    }
    true
}

async fn add(s: &TestServer, body: Value) -> (u16, Value) {
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn admin(s: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = s
        .admin_client()
        .request(method, s.admin_url(path))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn check_ip(s: &TestServer, ip: &str) -> (u16, Value) {
    let path = format!("/v1/allowlist/check?ip={ip}");
    admin(s, reqwest::Method::GET, &path).await
}

fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}:{{{prefix}:allow}}:{name}")
}

/// Every event in the stream, as field maps.
fn events(prefix: &str) -> Vec<HashMap<String, String>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(key(prefix, "events"))
        .arg("-")
        .arg("+")
        .query(&mut shared_redis().conn())
        .unwrap();
    reply
        .ids
        .iter()
        .map(|id| {
            id.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                .collect()
        })
        .collect()
}

fn ops(prefix: &str, op: &str, cidr: &str) -> usize {
    events(prefix)
        .iter()
        .filter(|e| e["op"] == op && e["cidr"] == cidr)
        .count()
}

/// `DUMP` of the four keys: byte-for-byte state.
fn dump(prefix: &str) -> Vec<Option<Vec<u8>>> {
    let mut conn = shared_redis().conn();
    ["meta", "entries", "exp", "events"]
        .iter()
        .map(|name| {
            redis::cmd("DUMP")
                .arg(key(prefix, name))
                .query(&mut conn)
                .unwrap()
        })
        .collect()
}

fn redis_now_ms() -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME")
        .query(&mut shared_redis().conn())
        .unwrap();
    s * 1000 + us / 1000
}

#[tokio::test]
async fn an_entry_added_on_one_node_passes_everywhere_and_its_removal_denies_everywhere() {
    let (prefix, s) = servers(3, "1s").await;
    assert!(all_answer(&s, "203.0.113.7", 403).await);
    let r = ask(&s[0], "/check/nginx", "/admin", "203.0.113.7").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-tollgate-reason"], "not_allowlisted");
    let r = ask(&s[0], "/check", "/admin", "203.0.113.7").await;
    assert_eq!(r.headers()["x-tollgate-reason"], "not_allowlisted");
    let metrics = reqwest::get(s[0].admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"tollgate_decisions_total{rule="admin",outcome="not_allowlisted"} 3"#),
        "{metrics}"
    );

    let before = redis_now_ms();
    let (status, body) = add(
        &s[0],
        json!({"cidr": "203.0.113.7", "ttl": "1h", "note": "login alice"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["cidr"], "203.0.113.7/32");
    assert_eq!(body["note"], "login alice");
    assert_eq!(body["actor"], "admin-api");
    assert_eq!(body["seq"], 1);
    let created = body["created_at"].as_u64().unwrap();
    assert!(created >= before, "{body}");
    assert_eq!(body["expires_at"].as_u64().unwrap(), created + 3_600_000);

    eventually(Duration::from_secs(1), || {
        all_answer(&s, "203.0.113.7", 200)
    })
    .await;
    assert!(all_answer(&s, "203.0.113.8", 403).await);

    let (status, body) = admin(
        &s[1],
        reqwest::Method::DELETE,
        "/v1/allowlist/203.0.113.7%2F32",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seq"], 2);
    eventually(Duration::from_secs(1), || {
        all_answer(&s, "203.0.113.7", 403)
    })
    .await;
    let (status, body) = admin(&s[2], reqwest::Method::DELETE, "/v1/allowlist/203.0.113.7").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["field"], "cidr");

    let ev = events(&prefix);
    assert_eq!(ev.len(), 2, "an absent entry's removal publishes nothing");
    assert_eq!(ev[0]["op"], "upsert");
    assert_eq!(ev[0]["actor"], "admin-api");
    assert_eq!(ev[0]["note"], "login alice");
    assert_eq!(ev[0]["ver"], "1");
    assert_eq!(ev[1]["op"], "remove");
    assert_eq!(ev[1]["seq"], "2");
    assert_eq!(ev[0]["epoch"], ev[1]["epoch"]);
}

#[tokio::test]
async fn a_ttl_entry_stops_matching_everywhere_and_expires_exactly_once_with_three_reapers() {
    let (prefix, s) = servers(3, "100ms").await;
    let (status, _) = add(&s[2], json!({"cidr": "198.51.100.0/24", "ttl": "2s"})).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(1), || {
        all_answer(&s, "198.51.100.9", 200)
    })
    .await;
    eventually(Duration::from_secs(4), || {
        all_answer(&s, "198.51.100.9", 403)
    })
    .await;
    eventually(Duration::from_secs(2), || async {
        ops(&prefix, "expire", "198.51.100.0/24") == 1
    })
    .await;
    // Every reaper runs again, all at once: nothing is due any more.
    let again = futures::future::join_all(s.iter().map(|s| s.app.allowlist.reap())).await;
    assert!(again.iter().all(|r| matches!(r, Ok(0))), "{again:?}");
    assert_eq!(ops(&prefix, "expire", "198.51.100.0/24"), 1);
    assert_eq!(events(&prefix).len(), 2);
    let (_, list) = admin(&s[0], reqwest::Method::GET, "/v1/allowlist").await;
    assert_eq!(list["entries"], json!([]));
}

#[tokio::test]
async fn nodes_stop_matching_at_expiry_without_waiting_for_the_reapers_event() {
    // The reapers ran once at start and not again for an hour.
    let (prefix, s) = servers(3, "1h").await;
    let (status, _) = add(&s[0], json!({"cidr": "192.0.2.0/24", "ttl": "1s"})).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(1), || all_answer(&s, "192.0.2.1", 200)).await;
    eventually(Duration::from_secs(3), || all_answer(&s, "192.0.2.1", 403)).await;
    assert_eq!(ops(&prefix, "expire", "192.0.2.0/24"), 0);
    let still: bool = redis::cmd("HEXISTS")
        .arg(key(&prefix, "entries"))
        .arg("192.0.2.0/24")
        .query(&mut shared_redis().conn())
        .unwrap();
    assert!(still, "the entry was not reaped, yet no node matches it");
    let (status, _) = admin(
        &s[1],
        reqwest::Method::GET,
        "/v1/allowlist/check?ip=192.0.2.1",
    )
    .await;
    assert_eq!(status, 404, "an expired entry is not listed");
}

#[tokio::test]
async fn re_adding_before_expiry_extends_the_entry_and_the_old_expiry_does_not_remove_it() {
    let (prefix, s) = servers(3, "100ms").await;
    let (_, first) = add(&s[0], json!({"cidr": "192.0.2.128/25", "ttl": "1s"})).await;
    let old_expiry = first["expires_at"].as_u64().unwrap();
    let (status, second) = add(
        &s[1],
        json!({"cidr": "192.0.2.128/25", "ttl": "1h", "note": "again"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(second["seq"], 2);
    assert!(second["expires_at"].as_u64().unwrap() > old_expiry + 3_000_000);
    // Well past the old expiry and several reaper rounds.
    eventually(Duration::from_secs(3), || async {
        redis_now_ms() > old_expiry + 500
    })
    .await;
    assert!(all_answer(&s, "192.0.2.200", 200).await);
    assert_eq!(ops(&prefix, "expire", "192.0.2.128/25"), 0);
    let (_, list) = admin(&s[2], reqwest::Method::GET, "/v1/allowlist").await;
    let e = &list["entries"][0];
    assert_eq!(e["note"], "again");
    assert!(e["remaining_ms"].as_u64().unwrap() > 3_000_000, "{list}");
}

#[tokio::test]
async fn a_new_epoch_or_a_gap_in_seq_makes_every_node_load_a_fresh_snapshot() {
    let (prefix, s) = servers(2, "1h").await;
    add(&s[0], json!({"cidr": "192.0.2.1"})).await;
    let synced = |seq: u64| {
        let s = &s;
        move || async move { s.iter().all(|n| n.app.allowlist.table().seq == seq) }
    };
    eventually(Duration::from_secs(1), synced(1)).await;
    let first_epoch = s[0].app.allowlist.table().epoch.clone();

    // The dataset is lost (as when Redis restarts empty): the next write starts a new epoch.
    let mut conn = shared_redis().conn();
    for name in ["meta", "entries", "exp", "events"] {
        let _: i64 = redis::cmd("DEL")
            .arg(key(&prefix, name))
            .query(&mut conn)
            .unwrap();
    }
    add(&s[1], json!({"cidr": "192.0.2.2"})).await;
    eventually(Duration::from_secs(2), || async {
        s.iter().all(|n| {
            let t = n.app.allowlist.table();
            t.epoch != first_epoch && t.seq == 1
        })
    })
    .await;
    assert!(all_answer(&s, "192.0.2.2", 200).await);
    assert!(
        all_answer(&s, "192.0.2.1", 403).await,
        "the old epoch's entry is gone"
    );

    // An event the nodes never saw (seq 2 is skipped): the gap makes them resync.
    let _: i64 = redis::cmd("HINCRBY")
        .arg(key(&prefix, "meta"))
        .arg("seq")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    add(&s[0], json!({"cidr": "192.0.2.3"})).await;
    eventually(Duration::from_secs(3), synced(3)).await;
    assert!(all_answer(&s, "192.0.2.3", 200).await);
}

#[tokio::test]
async fn the_longest_prefix_matches_and_removing_the_24_keeps_the_8s_coverage() {
    let (_, s) = servers(2, "1s").await;
    for (cidr, note) in [("10.0.0.0/8", "wide"), ("10.1.2.0/24", "narrow")] {
        let (status, _) = add(&s[0], json!({"cidr": cidr, "note": note})).await;
        assert_eq!(status, 201);
    }
    let check = |ip: &'static str| check_ip(&s[1], ip);
    let (_, hit) = check("10.1.2.3").await;
    assert_eq!(
        (hit["cidr"].as_str(), hit["note"].as_str()),
        (Some("10.1.2.0/24"), Some("narrow"))
    );
    assert_eq!(check("10.9.9.9").await.1["cidr"], "10.0.0.0/8");
    assert_eq!(check("11.0.0.1").await.0, 404);

    // The path form of a CIDR: /v1/allowlist/10.1.2.0/24.
    let (status, _) = admin(&s[1], reqwest::Method::DELETE, "/v1/allowlist/10.1.2.0/24").await;
    assert_eq!(status, 200);
    assert_eq!(check("10.1.2.3").await.1["cidr"], "10.0.0.0/8");
    eventually(Duration::from_secs(1), || async {
        s[0].app.allowlist.table().seq == 3 && s[1].app.allowlist.table().seq == 3
    })
    .await;
    assert!(all_answer(&s, "10.1.2.3", 200).await);
}

#[tokio::test]
async fn an_ipv4_mapped_client_matches_an_ipv4_entry_and_ipv6_entries_match() {
    let (_, s) = servers(2, "1s").await;
    for cidr in ["::ffff:203.0.113.0/120", "2001:DB8:1::/48"] {
        let (status, body) = add(&s[0], json!({"cidr": cidr})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, list) = admin(&s[0], reqwest::Method::GET, "/v1/allowlist").await;
    let cidrs: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(
        cidrs,
        ["203.0.113.0/24", "2001:db8:1::/48"],
        "stored canonical"
    );
    eventually(Duration::from_secs(1), || async {
        all_answer(&s, "::ffff:203.0.113.9", 200).await
            && all_answer(&s, "2001:db8:1::5", 200).await
    })
    .await;
    assert!(all_answer(&s, "203.0.113.9", 200).await);
    assert!(all_answer(&s, "2001:db8:2::5", 403).await);
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_naming_an_allowlisted_ip_does_not_pass_require() {
    let prefix = unique_prefix("allow");
    let url = shared_redis().url();
    let s = TestServer::start(&config("1s", ""), Some(&url), &prefix).await;
    let (status, _) = add(&s, json!({"cidr": "203.0.113.7"})).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(1), || async {
        !s.app.allowlist.table().is_empty()
    })
    .await;
    // An untrusted peer may not name the original request in headers: it asks
    // Envoy-style, with the path in the URL.
    let gate = |ip: &'static str| {
        let url = s.url("/check/admin");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("x-forwarded-for", ip);
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        gate("203.0.113.7").await,
        403,
        "X-Forwarded-For from an untrusted peer"
    );
    // The peer itself is who counts.
    add(&s, json!({"cidr": "127.0.0.1"})).await;
    eventually(Duration::from_secs(1), || async {
        gate("203.0.113.99").await == 200
    })
    .await;
}

#[tokio::test]
async fn bypass_rules_let_members_skip_their_limits() {
    let (_, s) = servers(1, "1s").await;
    let s0 = &s[0];
    let login =
        |ip: &'static str| async move { ask(s0, "/check", "/login", ip).await.status().as_u16() };
    assert_eq!(login("192.0.2.10").await, 200);
    assert_eq!(login("192.0.2.10").await, 429);
    add(&s[0], json!({"cidr": "192.0.2.11"})).await;
    eventually(Duration::from_secs(1), || async {
        s[0].app.allowlist.table().seq == 1
    })
    .await;
    for _ in 0..3 {
        assert_eq!(login("192.0.2.11").await, 200);
    }
    // What each gate lets through is counted, as its refusals are.
    for _ in 0..2 {
        assert_eq!(
            ask(s0, "/check", "/admin", "192.0.2.11").await.status(),
            200
        );
    }
    let text = scrape(s0).await;
    let count = |rule, outcome| {
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", rule), ("outcome", outcome)],
        )
    };
    assert_eq!(count("login", "allowlisted"), 3.0);
    assert_eq!(count("login", "allowed"), 1.0, "only the non-member's pass");
    assert_eq!(count("admin", "allowlisted"), 2.0);
}

#[tokio::test]
async fn every_bad_input_is_a_400_naming_the_field_and_changes_no_key() {
    let (prefix, s) = servers(1, "1h").await;
    let s = &s[0];
    assert_eq!(
        add(s, json!({"cidr": "192.0.2.1", "note": "keep"})).await.0,
        201
    );
    let before = dump(&prefix);
    let long_note = "n".repeat(257);
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"cidr": "not-an-ip"}), "cidr", "not an IP"),
        (
            json!({"cidr": "203.0.113.7/24"}),
            "cidr",
            "canonical form is 203.0.113.0/24",
        ),
        (json!({"cidr": "0.0.0.0/0"}), "cidr", "/0"),
        (json!({"cidr": "::/0"}), "cidr", "/0"),
        (json!({"cidr": "10.0.0.0/7"}), "cidr", "min_prefix_v4"),
        (json!({"cidr": "2001:db8::/31"}), "cidr", "min_prefix_v6"),
        (json!({"cidr": "192.0.2.2", "ttl": "31d"}), "ttl", "max_ttl"),
        (
            json!({"cidr": "192.0.2.2", "ttl": "never"}),
            "ttl",
            "allow_permanent",
        ),
        (
            json!({"cidr": "192.0.2.2", "ttl": "soon"}),
            "ttl",
            "bad duration",
        ),
        (json!({"cidr": "192.0.2.2", "ttl": 60}), "ttl", "string"),
        (
            json!({"cidr": "192.0.2.2", "note": long_note}),
            "note",
            "256",
        ),
        (
            json!({"cidr": "192.0.2.2", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (json!({"ttl": "1h"}), "cidr", "missing"),
        (json!(["192.0.2.2"]), "(body)", "object"),
    ];
    for (body, field, message) in cases {
        let (status, answer) = add(s, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(message),
            "{body}: {error:?} lacks {message:?}"
        );
    }
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .header("x-tollgate-actor", "a".repeat(65))
        .body(r#"{"cidr": "192.0.2.3"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["field"],
        "X-Tollgate-Actor"
    );
    for (method, path, field) in [
        (
            reqwest::Method::DELETE,
            "/v1/allowlist/192.0.2.1%2F24",
            "cidr",
        ),
        (reqwest::Method::DELETE, "/v1/allowlist/nope", "cidr"),
        (
            reqwest::Method::GET,
            "/v1/allowlist/check?ip=192.0.2.0/24",
            "ip",
        ),
        (reqwest::Method::GET, "/v1/allowlist/check", "ip"),
    ] {
        let (status, answer) = admin(s, method, path).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{path}: {answer}"
        );
    }
    // No token: 401, and nothing changes either.
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .post(s.admin_url("/v1/allowlist"))
        .json(&json!({"cidr": "192.0.2.9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for path in ["/v1/allowlist", "/v1/allowlist/check?ip=192.0.2.1"] {
        assert_eq!(
            anonymous
                .get(s.admin_url(path))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let r = anonymous
        .delete(s.admin_url("/v1/allowlist/192.0.2.1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(dump(&prefix), before, "a refused request changed a key");
    assert_eq!(events(&prefix).len(), 1);
}

#[tokio::test]
async fn the_embedded_store_keeps_an_allowlist_with_the_same_api() {
    let s = TestServer::start(&config("100ms", TRUSTED), None, &unique_prefix("allow")).await;
    assert_eq!(gate(&s, "192.0.2.7").await, 403);
    let (status, body) = add(&s, json!({"cidr": "192.0.2.0/24", "note": "x"})).await;
    assert_eq!((status, body["seq"].as_u64()), (201, Some(1)));
    assert_eq!(
        gate(&s, "192.0.2.7").await,
        200,
        "applied at once in process"
    );
    assert_eq!(
        admin(&s, reqwest::Method::GET, "/v1/allowlist/check?ip=192.0.2.7")
            .await
            .1["cidr"],
        "192.0.2.0/24"
    );
    let (status, body) = admin(&s, reqwest::Method::DELETE, "/v1/allowlist/192.0.2.0/24").await;
    assert_eq!((status, body["seq"].as_u64()), (200, Some(2)));
    assert_eq!(
        admin(&s, reqwest::Method::DELETE, "/v1/allowlist/192.0.2.0/24")
            .await
            .0,
        404
    );
    assert_eq!(gate(&s, "192.0.2.7").await, 403);

    add(&s, json!({"cidr": "192.0.2.7", "ttl": "500ms"})).await;
    assert_eq!(gate(&s, "192.0.2.7").await, 200);
    eventually(Duration::from_secs(3), || async {
        gate(&s, "192.0.2.7").await == 403
    })
    .await;
    // The reaper then drops it, with a seq of its own.
    eventually(Duration::from_secs(3), || async {
        s.app.allowlist.table().seq == 4
    })
    .await;
    let (_, list) = admin(&s, reqwest::Method::GET, "/v1/allowlist").await;
    assert_eq!(list["entries"], json!([]));
}

#[tokio::test]
async fn readyz_waits_for_the_allowlist_snapshot() {
    let cfg = tollgate::config::parse(
        "t.toml",
        "",
        &tollgate::config::Overrides {
            redis_url: Some(format!("redis://127.0.0.1:{}", free_port())),
            ..Default::default()
        },
    )
    .unwrap();
    let app = tollgate::App::new(cfg);
    assert!(!app.allowlist.is_synced());
    let listeners = tollgate::Listeners::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let admin_addr = listeners.admin.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tollgate::run(app, listeners, async move {
        let _ = rx.await;
    }));
    let r = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("allowlist"));
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

mod cli {
    use std::process::{Command, Output};

    use super::*;

    fn allow(args: &[&str], redis: &str, prefix: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("allow")
            .args(args)
            .args(["--redis", redis, "--prefix", prefix])
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap()
    }

    fn text(o: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    #[tokio::test]
    async fn cli_add_list_check_remove_round_trip_against_the_same_redis() {
        let prefix = unique_prefix("allowcli");
        let url = shared_redis().url();
        let s = TestServer::start(&config("1s", TRUSTED), Some(&url), &prefix).await;

        let o = allow(
            &["add", "198.51.100.0/24", "--ttl", "2h", "--note", "office"],
            &url,
            &prefix,
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("198.51.100.0/24"), "{}", text(&o));
        eventually(Duration::from_secs(1), || async {
            gate(&s, "198.51.100.20").await == 200
        })
        .await;

        let o = allow(&["list"], &url, &prefix);
        assert_eq!(o.status.code(), Some(0));
        let out = text(&o);
        assert!(
            out.contains("198.51.100.0/24") && out.contains("office") && out.contains("cli"),
            "{out}"
        );

        let o = allow(&["check", "198.51.100.20"], &url, &prefix);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("198.51.100.0/24"));

        let o = allow(&["remove", "198.51.100.0/24"], &url, &prefix);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        eventually(Duration::from_secs(1), || async {
            gate(&s, "198.51.100.20").await == 403
        })
        .await;

        let o = allow(&["check", "198.51.100.20"], &url, &prefix);
        assert_eq!(o.status.code(), Some(1), "not a member: {}", text(&o));
        assert!(text(&o).contains("not on the allowlist"));
        let o = allow(&["remove", "198.51.100.0/24"], &url, &prefix);
        assert_eq!(o.status.code(), Some(1), "no such entry: {}", text(&o));

        let ev = events(&prefix);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["actor"], "cli");
    }

    #[tokio::test]
    async fn cli_bad_input_exits_2_and_an_unreachable_redis_exits_1() {
        let prefix = unique_prefix("allowcli");
        let url = shared_redis().url();
        let o = allow(&["add", "198.51.100.1/24"], &url, &prefix);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("198.51.100.0/24"), "{}", text(&o));
        let o = allow(&["add", "198.51.100.1", "--ttl", "never"], &url, &prefix);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let o = allow(&["check", "nope"], &url, &prefix);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert_eq!(dump(&prefix), vec![None, None, None, None]);

        let dead = format!("redis://127.0.0.1:{}", free_port());
        let o = allow(&["add", "198.51.100.1"], &dead, &prefix);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let o = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["allow", "list"])
            .env_remove("TOLLGATE_REDIS_URL")
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "no Redis configured: {}",
            text(&o)
        );
    }
}
