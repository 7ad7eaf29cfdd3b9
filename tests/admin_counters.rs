//! The counters admin API (`/v1/limits/{rule}/{key}`) and `tollgate limits`.

use serde_json::Value;

use crate::support::binary::tollgate_cmd;
use crate::support::{shared_redis, temp_dir, unique_prefix, TestServer};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login"
key = "ip"
limits = ["2/m", "5/h"]
"#;

async fn hit(s: &TestServer, ip: &str) -> u16 {
    s.check_with("x-forwarded-for", ip).await
}

/// The status a request gets.
async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

/// The JSON body a request gets.
async fn json(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let s = TestServer::start(CONFIG, Some(&shared_redis().url()), &unique_prefix("auth")).await;
    let url = s.admin_url("/v1/limits/login/203.0.113.1");
    let plain = reqwest::Client::new();
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(status(plain.delete(&url).bearer_auth("wrong")).await, 401);
    assert_eq!(status(s.admin_client().get(&url)).await, 200);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(status(plain.get(s.admin_url("/readyz"))).await, 200);
    assert_eq!(status(plain.get(s.admin_url("/metrics"))).await, 200);
}

#[tokio::test]
async fn show_and_reset_one_clients_counters_and_404_for_an_unknown_rule() {
    let s = TestServer::start(
        CONFIG,
        Some(&shared_redis().url()),
        &unique_prefix("counters"),
    )
    .await;
    let admin = s.admin_client();
    assert_eq!(hit(&s, "203.0.113.7").await, 200);
    assert_eq!(hit(&s, "203.0.113.7").await, 200);
    assert_eq!(hit(&s, "203.0.113.7").await, 429);

    let counters = s.admin_url("/v1/limits/login/203.0.113.7");
    let v = json(admin.get(&counters)).await;
    assert_eq!(v["algorithm"], "fixed_window");
    assert_eq!(v["limits"][0]["limit"], "2/m");
    assert_eq!(v["limits"][0]["used"], 2);
    assert_eq!(v["limits"][0]["remaining"], 0);
    assert_eq!(v["limits"][1]["used"], 2, "the denial charged nothing");
    assert!(v["limits"][0]["reset_ms"].as_u64().unwrap() > 0);
    // Looking does not count.
    let again = json(admin.get(&counters)).await;
    assert_eq!(again["limits"][1]["used"], 2);

    assert_eq!(status(admin.delete(&counters)).await, 200);
    assert_eq!(hit(&s, "203.0.113.7").await, 200, "unblocked");

    let r = admin
        .get(s.admin_url("/v1/limits/nope/203.0.113.7"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "rule");
    assert!(body["error"].as_str().unwrap().contains("nope"));
    // Keys are opaque: one that no request would build is still accepted.
    let opaque = s.admin_url("/v1/limits/login/not-an-ip/with/slashes");
    assert_eq!(status(admin.get(opaque)).await, 200);
}

#[tokio::test]
async fn the_cli_shows_and_resets_counters_in_the_same_redis() {
    let redis = shared_redis();
    let prefix = unique_prefix("cli-limits");
    let s = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    assert_eq!(hit(&s, "198.51.100.3").await, 200);
    assert_eq!(hit(&s, "198.51.100.3").await, 200);
    let file = temp_dir("limits").join("c.toml");
    std::fs::write(&file, CONFIG).unwrap();
    let run = |verb: &str| {
        tollgate_cmd(&[])
            .args([
                "limits",
                verb,
                "login",
                "198.51.100.3",
                "--config",
                file.to_str().unwrap(),
            ])
            .args(["--redis", &redis.url(), "--prefix", &prefix])
            .output()
            .unwrap()
    };
    let out = run("show");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2/m") && text.contains("used 2") && text.contains("remaining 0"),
        "{text}"
    );
    assert!(run("reset").status.success());
    assert_eq!(hit(&s, "198.51.100.3").await, 200);
    let out = tollgate_cmd(&[])
        .args([
            "limits",
            "show",
            "nope",
            "k",
            "--config",
            file.to_str().unwrap(),
            "--redis",
            &redis.url(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown rule \"nope\""));
}

#[tokio::test]
async fn a_redis_error_in_a_script_is_a_500_and_an_unreachable_redis_a_503() {
    let prefix = unique_prefix("script-bug");
    let redis = shared_redis();
    let s = TestServer::start(CONFIG, Some(&redis.url()), &prefix).await;
    // A counter key of the wrong type: the script's GET fails (WRONGTYPE),
    // as a script bug would. Redis answered: that is not "try again later".
    let keys = tollgate::keys::KeySpace::new(&prefix);
    let base = keys.limit_base(tollgate::limiter::Algorithm::FixedWindow, "login", "k1");
    let key = tollgate::keys::KeySpace::limit_key(&base, 60_000);
    redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .exec(&mut redis.conn())
        .unwrap();
    let (status, body) = s.admin(reqwest::Method::GET, "/v1/limits/login/k1").await;
    assert_eq!(status, 500);
    assert!(
        body["error"].as_str().unwrap().contains("WRONGTYPE"),
        "{body}"
    );

    // Redis away: 503.
    let dead = format!("redis://127.0.0.1:{}", crate::support::free_port());
    let s = TestServer::launch(CONFIG, Some(&dead), &prefix).await;
    let (status, _) = s.admin(reqwest::Method::GET, "/v1/limits/login/k1").await;
    assert_eq!(status, 503);
}
