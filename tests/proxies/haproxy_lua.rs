//! HAProxy's Lua action: the address it calls is set once, in haproxy.cfg
//! (`setenv TOLLGATE_CHECK`; the stack moves it to a free port by that line
//! alone and uses tollgate.lua as shipped), and a failed call is logged with
//! the address and what came back, once per outage.

use std::time::Duration;

use super::scenarios::{answer, app_answer};
use super::stack::*;
use crate::support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lua_calls_the_address_the_cfg_sets() {
    let lua = include_str!("../../deploy/haproxy/tollgate.lua");
    assert!(
        !lua.contains("8079"),
        "tollgate.lua names an address itself"
    );
    assert!(lua.contains(r#"os.getenv("TOLLGATE_CHECK")"#));
    let s = Stack::start(Kind::Haproxy, CONFIG).await;
    assert_ne!(s.proxy.check.unwrap().port(), 8079, "a non-default address");
    let c = client_from("127.0.0.13");
    let r = c.get(s.proxy.url("/limited")).send().await.unwrap();
    let h = app_answer(Kind::Haproxy, r, "/limited").await;
    // The RateLimit header proves tollgate was asked at the moved address.
    assert_eq!(h["ratelimit"], r#""page";r=2;t=3600"#);
    let r = c.get(s.proxy.url("/admin/")).send().await.unwrap();
    answer(Kind::Haproxy, r, 403, "/admin/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tollgate_down_the_lua_logs_the_address_and_the_error_once() {
    let s = Stack::start(Kind::Haproxy, CONFIG).await;
    let c = client_from("127.0.0.14");
    let r = c.get(s.proxy.url("/free")).send().await.unwrap();
    app_answer(Kind::Haproxy, r, "before the stop").await;
    let Stack { replicas, proxy } = s;
    for r in replicas {
        r.stop().await;
    }
    let line = format!(
        "tollgate: call to http://{}/check failed: 503 Service Unavailable",
        proxy.check.unwrap()
    );
    assert!(
        !proxy.log_text().contains(&line),
        "logged before any failure"
    );
    for n in 0..3 {
        let r = c.get(proxy.url("/free")).send().await.unwrap();
        answer(Kind::Haproxy, r, 503, &format!("request {n}: fail-closed")).await;
    }
    eventually(Duration::from_secs(5), || {
        let logged = proxy.log_text().contains(&line);
        async move { logged }
    })
    .await;
    let log = proxy.log_text();
    assert_eq!(log.matches(&line).count(), 1, "one line per outage: {log}");
}
