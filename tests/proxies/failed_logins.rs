//! "Count only what failed" through real proxies: a tiny login app answers
//! 401 to a wrong password, 200 (its own body) to the right one; a rule with
//! `count = "reported"` limits the failures per client address, and right
//! passwords in between are never counted.
//!
//! - nginx has no response hook: the app itself calls `POST /v1/report`
//!   (from loopback, a trusted peer) with the address nginx hands it in
//!   `X-Real-IP` (the one line added to the shipped nginx.conf).
//! - HAProxy reports the upstream's status itself (`lua.tollgate_report` in
//!   the shipped haproxy.cfg): the app knows nothing of tollgate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::json;
use tokio::sync::Notify;

use super::stack::*;
use crate::support::process::terminate;
use crate::support::{eventually, shared_redis, unique_prefix, TestServer};

/// What the login app answers to the right password: tollgate never writes it.
const WELCOME: &str = "welcome, the login app answered";
const WRONG: &str = "wrong password, the login app answered";
const LOCKED: &str = "account locked, the login app answered";

/// `password=slow`: the app says it has the request, then answers 401 once
/// released (the test stops tollgate in between).
#[derive(Default)]
struct Hold {
    arrived: Notify,
    release: Notify,
}

/// `POST /login` with body `password=right` → 200 `WELCOME`,
/// `password=locked` → 403 `LOCKED`, `password=slow` → 401 `WRONG` when
/// `hold` releases it, any other → 401 `WRONG`; with `report_to`, a wrong password is first reported there
/// for the client in `X-Real-IP` (500 if the report is not a 200 counting
/// it, so a test cannot pass on a lost report).
async fn login_app(report_to: Option<SocketAddr>, hold: Arc<Hold>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let login = move |headers: HeaderMap, body: String| async move {
        match body.as_str() {
            "password=right" => return (StatusCode::OK, WELCOME.to_string()),
            "password=locked" => return (StatusCode::FORBIDDEN, LOCKED.to_string()),
            "password=slow" => {
                hold.arrived.notify_one();
                hold.release.notified().await;
            }
            _ => {}
        }
        if let Some(tollgate) = report_to {
            let client = headers
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let r = reqwest::Client::new()
                .post(format!("http://{tollgate}/v1/report"))
                .json(&json!({"rule": "login-failures", "client": client}))
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status() == 200 => true,
                Ok(r) => {
                    let text = r.text().await.unwrap_or_default();
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("report: {text}"));
                }
                Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("report: {e}")),
            };
            assert!(ok);
        }
        (StatusCode::UNAUTHORIZED, WRONG.to_string())
    };
    let app = axum::Router::new().route("/login", post(login));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Five failures per 15 minutes per client address, counted from reports.
fn config(report_statuses: &str) -> String {
    format!(
        r#"
[redis]
timeout = "2s"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login-failures"
match = {{ path = "/login", methods = ["POST"] }}
limits = ["5/15m"]
count = "reported"
{report_statuses}
"#
    )
}

/// One login attempt through the proxy: its status and body.
async fn attempt(c: &reqwest::Client, proxy: &Proxy, password: &str) -> (u16, String) {
    let r = c
        .post(proxy.url("/login"))
        .body(format!("password={password}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Two replicas on one Redis and `kind` in front of the login app.
async fn replicas(config: &str) -> (TestServer, TestServer) {
    let prefix = unique_prefix("failed-logins");
    let redis = shared_redis().url();
    let a = TestServer::start(config, Some(&redis), &prefix).await;
    let b = TestServer::start(config, Some(&redis), &prefix).await;
    (a, b)
}

/// `limits show` on a replica: what is left of login-failures for `client`.
async fn left(s: &TestServer, client: &str) -> u64 {
    let (code, v) = s
        .admin(
            reqwest::Method::GET,
            &format!("/v1/limits/login-failures/{client}"),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    v["limits"][0]["remaining"].as_u64().unwrap()
}

/// Five wrong passwords from one address, right ones in between: every wrong
/// one is the app's 401, every right one the app's 200 and never counted.
async fn five_failures(kind: Kind, proxy: &Proxy, replica: &TestServer, source: &str) {
    let c = client_from(source);
    for n in 0..5 {
        assert_body_is(attempt(&c, proxy, "wrong").await, 401, WRONG, kind, n);
        if n < 4 {
            assert_body_is(attempt(&c, proxy, "right").await, 200, WELCOME, kind, n);
        }
        assert_eq!(
            left(replica, source).await,
            4 - n,
            "{kind:?} after {n}: only failures count"
        );
    }
}

/// `five_failures`, then the sixth attempt (right or wrong) is tollgate's
/// 429, without the app's body. Another address is untouched.
async fn five_failures_then_429(kind: Kind, proxy: &Proxy, replica: &TestServer, source: &str) {
    five_failures(kind, proxy, replica, source).await;
    let c = client_from(source);
    for password in ["right", "wrong"] {
        let (status, body) = attempt(&c, proxy, password).await;
        assert_eq!(
            status, 429,
            "{kind:?} {password} after 5 failures: {body:?}"
        );
        assert!(
            !body.contains("login app"),
            "{kind:?}: the app answered {body:?}"
        );
    }
    let other = client_from("127.0.0.99");
    assert_body_is(
        attempt(&other, proxy, "right").await,
        200,
        WELCOME,
        kind,
        99,
    );
}

fn assert_body_is(got: (u16, String), status: u16, body: &str, kind: Kind, n: u64) {
    assert_eq!(got, (status, body.to_string()), "{kind:?} attempt {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_the_app_reports_wrong_passwords_and_the_sixth_attempt_is_429() {
    let (a, b) = replicas(&config("")).await;
    let proxy = nginx_in_front(&a, &b).await;
    five_failures_then_429(Kind::Nginx, &proxy, &b, "127.0.0.41").await;
}

/// nginx before two replicas and the reporting login app. The shipped
/// nginx.conf sends the app nothing of the client: an app that reports
/// needs its address, one line.
async fn nginx_in_front(a: &TestServer, b: &TestServer) -> Proxy {
    let app = login_app(Some(a.addr), Arc::default()).await;
    Proxy::start_edited(Kind::Nginx, [a.addr, b.addr], app, |conf| {
        edit(
            conf,
            "            proxy_pass http://app;\n",
            "            proxy_set_header X-Real-IP $remote_addr;\n            proxy_pass http://app;\n",
        )
    })
    .await
}

/// Whether `replica` refuses `source` on `path` as denied.
async fn denied_on(replica: &TestServer, path: &str, source: &str) -> bool {
    let r = reqwest::Client::new()
        .get(replica.url("/check"))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", source)
        .send()
        .await
        .unwrap();
    r.status() == 403
        && r.headers()
            .get("x-tollgate-reason")
            .is_some_and(|v| v == "denied")
}

/// How long the deny entry holding `source` was written for, and its actor.
async fn ban_of(s: &TestServer, source: &str) -> (u64, String) {
    let (code, e) = s
        .admin(
            reqwest::Method::GET,
            &format!("/v1/denylist/check?ip={source}"),
        )
        .await;
    assert_eq!(code, 200, "{e}");
    let length = e["expires_at"].as_u64().unwrap() - e["created_at"].as_u64().unwrap();
    (length, e["actor"].as_str().unwrap().to_string())
}

/// The ban half: with `ban` on the reported rule, the sixth attempt is the
/// limiter's 429 and the offence; then every path on every replica is a 403
/// (through nginx too), and once the ban ends the next attempt (still over
/// the failures' limit) is a second offence, banned `factor` times longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_five_failed_logins_ban_the_address_on_every_replica_and_a_second_offence_lasts_factor_times_longer(
) {
    let (a, b) = replicas(&config(
        "ban = { after = 1, within = \"15m\", for = \"2s\", factor = 3, max = \"1h\", remember = \"1h\" }",
    ))
    .await;
    let proxy = nginx_in_front(&a, &b).await;
    let source = "127.0.0.51";
    let c = client_from(source);
    five_failures(Kind::Nginx, &proxy, &b, source).await;
    let (status, body) = attempt(&c, &proxy, "right").await;
    assert_eq!(status, 429, "the limiter answers the offence: {body:?}");
    for replica in [&a, &b] {
        for path in ["/login", "/", "/account/settings"] {
            eventually(Duration::from_secs(5), || denied_on(replica, path, source)).await;
        }
    }
    for password in ["right", "wrong"] {
        let (status, body) = attempt(&c, &proxy, password).await;
        assert_eq!(status, 403, "{password}: {body:?}");
    }
    assert_eq!(
        ban_of(&a, source).await,
        (2_000, "rule:login-failures".into())
    );
    // Another address is untouched.
    let other = client_from("127.0.0.98");
    assert_body_is(
        attempt(&other, &proxy, "right").await,
        200,
        WELCOME,
        Kind::Nginx,
        98,
    );

    // The ban ends (2 s): the client is still over its failures' limit.
    eventually(Duration::from_secs(10), || async {
        !denied_on(&a, "/", source).await && !denied_on(&b, "/", source).await
    })
    .await;
    let (status, body) = attempt(&c, &proxy, "right").await;
    assert_eq!(status, 429, "still limited: {body:?}");
    for replica in [&a, &b] {
        eventually(Duration::from_secs(5), || denied_on(replica, "/", source)).await;
    }
    assert_eq!(
        ban_of(&b, source).await,
        (6_000, "rule:login-failures".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_reports_the_upstream_401s_itself_and_the_sixth_attempt_is_429() {
    let (a, b) = replicas(&config("report_statuses = [401]")).await;
    let app = login_app(None, Arc::default()).await;
    let proxy = Proxy::start(Kind::Haproxy, [a.addr, b.addr], app).await;
    // A status HAProxy reports but the rule does not list: nothing counted.
    let c = client_from("127.0.0.42");
    for n in 0..3 {
        assert_body_is(
            attempt(&c, &proxy, "locked").await,
            403,
            LOCKED,
            Kind::Haproxy,
            n,
        );
    }
    assert_eq!(
        left(&b, "127.0.0.42").await,
        5,
        "403 is not in report_statuses"
    );
    five_failures_then_429(Kind::Haproxy, &proxy, &b, "127.0.0.42").await;
    assert!(
        !proxy.log_text().contains("tollgate: report"),
        "{}",
        proxy.log_text()
    );
}

/// HAProxy's report failing (every replica gone between the request and
/// the answer): the client still gets the app's answer (reports fail open),
/// one alert names the address and the answer; once a replica is back, a
/// report works and one line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_a_failed_report_passes_the_answer_on_and_is_logged_once_each_way() {
    let config = config("report_statuses = [401]");
    let (a, b) = replicas(&config).await;
    let hold = Arc::new(Hold::default());
    let app = login_app(None, hold.clone()).await;
    let proxy = Proxy::start(Kind::Haproxy, [a.addr, b.addr], app).await;
    let url = format!("http://{}/report", proxy.check.unwrap());
    let failed = format!("tollgate: report to {url} failed: 503");
    let back = format!("tollgate: reports to {url} answer again");

    let c = client_from("127.0.0.43");
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), proxy.url("/login"));
        async move {
            let r = c.post(url).body("password=slow").send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    hold.arrived.notified().await;
    let first = a.addr;
    a.stop().await;
    b.stop().await;
    hold.release.notify_one();
    assert_eq!(slow.await.unwrap(), (401, WRONG.to_string()), "fail open");
    let log = |text: String| {
        let proxy = &proxy;
        async move {
            eventually(Duration::from_secs(5), || {
                let found = proxy.log_text().contains(&text);
                async move { found }
            })
            .await;
            proxy.log_text().matches(&text).count()
        }
    };
    assert_eq!(log(failed.clone()).await, 1, "{}", proxy.log_text());
    assert!(!proxy.log_text().contains(&back));

    // A replica back at the first address (the embedded store: a fresh count).
    let embedded = edit(&config, "[redis]\ntimeout = \"2s\"\n", "");
    let mut tollgate = tollgate_at(first, &embedded);
    eventually(Duration::from_secs(10), || {
        let (c, proxy) = (c.clone(), &proxy);
        async move { attempt(&c, proxy, "right").await.0 == 200 }
    })
    .await;
    assert_body_is(
        attempt(&c, &proxy, "wrong").await,
        401,
        WRONG,
        Kind::Haproxy,
        0,
    );
    assert_eq!(log(back).await, 1, "{}", proxy.log_text());
    assert_eq!(proxy.log_text().matches(&failed).count(), 1);
    terminate(&mut tollgate, Duration::from_secs(2));
}
