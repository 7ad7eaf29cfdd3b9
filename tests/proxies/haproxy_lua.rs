//! HAProxy's Lua action: the address it calls is set once, in haproxy.cfg
//! (`setenv TOLLGATE_CHECK`; the stack moves it to a free port by that line
//! alone and uses tollgate.lua as shipped; without it HAProxy refuses the
//! cfg), and a failed call is logged with the address and what came back,
//! once per outage, and once when calls work again.

use std::net::SocketAddr;
use std::time::Duration;

use super::scenarios::{answer, app_answer};
use super::stack::*;
use crate::support::process::terminate;
use crate::support::{eventually, free_port, temp_dir};

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

/// HAProxy's log so far, once it has a line containing `text`; that text's count.
async fn logged(proxy: &Proxy, text: &str) -> usize {
    eventually(Duration::from_secs(5), || {
        let found = proxy.log_text().contains(text);
        async move { found }
    })
    .await;
    proxy.log_text().matches(text).count()
}

/// Both replicas down from the start: every request is refused with 503
/// (not the app's answer) and one line names the address and the answer;
/// once a replica serves at a listed address, requests reach the app and one
/// line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_is_logged_once_with_the_address_and_once_when_calls_work_again() {
    let replicas = [free_port(), free_port()].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let proxy = Proxy::start(Kind::Haproxy, replicas, upstream().await).await;
    let url = format!("http://{}/check", proxy.check.unwrap());
    let failed = format!("tollgate: call to {url} failed: 503 Service Unavailable");
    let back = format!("tollgate: calls to {url} answer again");
    let c = client_from("127.0.0.14");
    for n in 0..3 {
        let r = c.get(proxy.url("/free")).send().await.unwrap();
        answer(Kind::Haproxy, r, 503, &format!("request {n}: fail-closed")).await;
    }
    assert_eq!(logged(&proxy, &failed).await, 1, "one line per outage");
    assert!(!proxy.log_text().contains(&back));

    // A real tollgate (no rules: it allows everything) at the first listed address.
    let mut tollgate = tollgate_at(
        replicas[0],
        "[client_ip]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let page = proxy.url("/free");
    eventually(Duration::from_secs(10), || {
        let (c, page) = (c.clone(), page.clone());
        async move { c.get(&page).send().await.unwrap().status() == 200 }
    })
    .await;
    for n in 0..3 {
        let r = c.get(proxy.url("/free")).send().await.unwrap();
        app_answer(Kind::Haproxy, r, &format!("request {n} after the start")).await;
    }
    assert_eq!(
        logged(&proxy, &back).await,
        1,
        "one line when calls work again"
    );
    assert_eq!(proxy.log_text().matches(&failed).count(), 1);
    terminate(&mut tollgate, Duration::from_secs(2));
}

/// A cfg that loads tollgate.lua without setting TOLLGATE_CHECK is refused
/// by `haproxy -c`, with a message naming the variable and where to set it.
#[test]
fn without_tollgate_check_haproxy_refuses_the_cfg_naming_the_variable() {
    let dir = temp_dir("haproxy-no-check");
    let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/tollgate.lua");
    let shipped = include_str!("../../deploy/haproxy/haproxy.cfg");
    let cfg = edit(shipped, "    setenv TOLLGATE_CHECK 127.0.0.1:8079\n", "");
    let cfg = edit(&cfg, "/etc/haproxy/tollgate.lua", lua);
    std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
    let out = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .env_remove("TOLLGATE_CHECK")
        .output()
        .expect("haproxy must be installed (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {text}");
    assert!(
        text.contains("TOLLGATE_CHECK is not set; haproxy.cfg's global section must set it"),
        "{text}"
    );
}
