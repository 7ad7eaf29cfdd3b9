//! The real binary under signals: SIGHUP reloads (a broken file keeps the
//! running rules), SIGTERM drains and exits 0.

use std::time::Duration;

use crate::support::binary::Serve;
use crate::support::{eventually, temp_dir, ADMIN_TOKEN};

/// `tollgate serve` with `config` (no Redis: the embedded store), in its own dir.
async fn serve(name: &str, config: &str) -> Serve {
    Serve::start(&temp_dir(&format!("signals-{name}")), config, &[]).await
}

const RULE_A: &str =
    "[[rule]]\nname = \"a\"\nmatch = { path_prefix = \"/a\" }\nlimits = [\"1/h\"]\n";
const RULE_B: &str =
    "[[rule]]\nname = \"b\"\nmatch = { path_prefix = \"/b\" }\nlimits = [\"1/h\"]\n";

#[tokio::test]
async fn sighup_applies_a_new_file_and_keeps_the_old_rules_when_the_file_is_broken() {
    let b = serve("hup", RULE_A).await;
    assert_eq!(b.status("/a").await, 200);
    assert_eq!(b.status("/a").await, 429);

    std::fs::write(&b.config, "[[rule]]\nname = \"a\"\nlimits = [\"5/x\"]\n").unwrap();
    b.signal(libc::SIGHUP);
    b.log_line("reload rejected").await;
    assert!(b.log().contains("rule[0].limits[0]"), "{}", b.log());
    assert_eq!(
        b.status("/a").await,
        429,
        "a broken file replaced the running rules"
    );
    assert_eq!(b.status("/b").await, 200);
    assert_eq!(b.status("/b").await, 200, "no rule for /b yet");

    std::fs::write(&b.config, RULE_B).unwrap();
    b.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), || async {
        b.status("/a").await == 200
    })
    .await;
    assert_eq!(b.status("/b").await, 200);
    assert_eq!(b.status("/b").await, 429, "the new rule applies");
    let reloaded = b.log_line("config reloaded").await;
    assert!(
        reloaded.contains(r#"added=["b"]"#) && reloaded.contains(r#"removed=["a"]"#),
        "{reloaded}"
    );
}

#[tokio::test]
async fn a_reload_logs_each_changed_limit_and_its_counters_carry_over() {
    let b = serve("hup-change", RULE_A).await;
    assert_eq!(b.status("/a").await, 200);
    assert_eq!(b.status("/a").await, 429);
    // Same algorithm and period, a higher count: the client's one use carries over.
    std::fs::write(&b.config, RULE_A.replace("1/h", "2/h")).unwrap();
    b.signal(libc::SIGHUP);
    let changed = b.log_line("rule changed").await;
    assert!(
        changed.contains("rule=a")
            && changed.contains("limits [1/h]")
            && changed.contains("limits [2/h]"),
        "{changed}"
    );
    assert!(b
        .log_line("config reloaded")
        .await
        .contains(r#"changed=["a"]"#));
    assert_eq!(b.status("/a").await, 200, "one more under 2/h");
    assert_eq!(b.status("/a").await, 429, "the first use still counts");
}

#[tokio::test]
async fn sigterm_stops_the_server_and_exits_0() {
    let mut b = serve("term", RULE_A).await;
    assert_eq!(b.status("/a").await, 200);
    b.signal(libc::SIGTERM);
    assert_eq!(b.exit_code(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn a_reload_logs_what_it_applied_and_each_key_that_waits_for_a_restart() {
    let b = serve("hup-keys", RULE_A).await;
    let changed = format!("[server]\nmax_connections = 99\n\n[api]\nmax_cost = 5\n\n{RULE_A}");
    std::fs::write(&b.config, changed).unwrap();
    b.signal(libc::SIGHUP);
    b.log_line("reload: server.max_connections changed; it takes effect after a restart")
        .await;
    let reloaded = b.log_line("config reloaded").await;
    assert!(
        reloaded.contains("config reloaded: api.max_cost applied"),
        "{reloaded}"
    );
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/v1/status", b.admin_addr))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["restart_pending"],
        serde_json::json!(["server.max_connections"])
    );
}
