//! The benchmark harness (`scripts/bench_load.py`) against a real tollgate:
//! its probe passes a real decision and stops a run whose answers are not the
//! ones it expects: the old harness loaded `GET /allow`, a 404 on the decision
//! port, and published the 404s as decisions.

use std::process::Command;

use crate::support::{unique_prefix, TestServer};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "allow"
match = { path_prefix = "/allow" }
key = "ip"
limits = ["1000/h"]
"#;

/// Run `body` (Python) with the harness importable; `PASSED` or `FAILED <reason>`.
fn harness(body: &str) -> String {
    let script = format!(
        "import sys\nsys.path.insert(0, 'scripts')\nfrom bench_load import BenchFailure, Target, probe, verify\n\
         try:\n{}\n    print('PASSED')\nexcept BenchFailure as e:\n    print('FAILED', e)\n",
        body.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // No __pycache__ in scripts/: a test writes only under its temp dir.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs the benchmark harness: install it");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with("PASSED") || text.starts_with("FAILED"),
        "harness crashed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn probe(
    port: u16,
    path: &'static str,
    headers: &'static str,
    expect: &'static str,
) -> String {
    let body = format!("probe(Target('t', {port}, '{path}', {expect}, headers={headers}))");
    tokio::task::spawn_blocking(move || harness(&body))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_probe_passes_a_decision_and_stops_on_a_404_or_an_unexpected_status() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("bench")).await;
    let port = s.addr.port();
    let decision = probe(port, "/check", "{'X-Forwarded-Uri': '/allow'}", "{'200'}").await;
    assert!(decision.starts_with("PASSED"), "{decision}");
    // What the old harness loaded: the router's 404, not a decision.
    let old = probe(port, "/allow", "{}", "{'200'}").await;
    assert!(old.starts_with("FAILED") && old.contains("404"), "{old}");
    // A run that expects denials and gets a decision that allows stops too.
    let wrong = probe(port, "/check", "{'X-Forwarded-Uri': '/allow'}", "{'429'}").await;
    assert!(
        wrong.starts_with("FAILED") && wrong.contains("200"),
        "{wrong}"
    );
    s.stop().await;
}

#[test]
fn bench_run_fails_on_statuses_errors_or_bodies_it_did_not_expect() {
    let result = |statuses: &str, errors: &str, bad: u32| {
        format!(
            "verify(Target('t', 1, '/check', {{'200'}}, body_check='x'), {{'requests': 10, 'statuses': {statuses}, \
             'errors': {errors}, 'bad_bodies': {bad}}}, {{'tollgate': True}})"
        )
    };
    let none = "{'connect': 0, 'read': 0, 'write': 0, 'timeout': 0}";
    assert!(harness(&result("{'200': 10}", none, 0)).starts_with("PASSED"));
    let all_404 = harness(&result("{'404': 10}", none, 0));
    assert!(
        all_404.contains("unexpected statuses {'404': 10}"),
        "{all_404}"
    );
    let uncounted = harness(&result("{'200': 7}", none, 0));
    assert!(uncounted.contains("7 statuses counted"), "{uncounted}");
    let errors = harness(&result(
        "{'200': 10}",
        "{'connect': 0, 'read': 3, 'write': 0, 'timeout': 0}",
        0,
    ));
    assert!(errors.contains("socket errors {'read': 3}"), "{errors}");
    let bodies = harness(&result("{'200': 10}", none, 2));
    assert!(bodies.contains("2 sampled bodies lack 'x'"), "{bodies}");
    let dead = harness(
        "verify(Target('t', 1, '/check', {'200'}), {'requests': 10, 'statuses': {'200': 10}, \
         'errors': {}, 'bad_bodies': 0}, {'tollgate': False})",
    );
    assert!(dead.contains("died during the run"), "{dead}");
}
