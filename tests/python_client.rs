//! The Python client package (clients/python) in real apps against a real
//! tollgate and Redis: pytest runs tests/python/client/ in the virtualenv
//! scripts/test.sh makes (the one of `grpc_python`), where Django + DRF,
//! FastAPI and uvicorn app workers run as processes on loopback ports.
//! Each test here runs one pytest file against a tollgate of its own (its own
//! key prefix), and asserts that every one of that file's tests passed.

use std::process::Command;

use crate::grpc_python::python;
use crate::support::{shared_redis, unique_prefix, TestServer};

/// Run `file` under pytest against a fresh tollgate; `expect` tests must pass,
/// none fail or be skipped.
async fn pytest(file: &'static str, expect: usize) {
    pytest_with(file, expect, "").await
}

/// `pytest`, against a tollgate with `config`.
async fn pytest_with(file: &'static str, expect: usize, config: &str) {
    let s = TestServer::start(config, Some(&shared_redis().url()), &unique_prefix("pyc")).await;
    let (url, admin) = (s.url(""), s.admin_url(""));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client");
    let python = python();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", file])
            .current_dir(dir)
            .env("TOLLGATE_TEST_URL", url)
            .env("TOLLGATE_TEST_ADMIN_URL", admin)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("TOLLGATE_URL")
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run pytest ({e}); scripts/test.sh installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest {file} failed:\n{text}");
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or("");
    assert!(
        summary.contains(&format!("{expect} passed")) && !summary.contains("skipped"),
        "pytest {file}: expected {expect} passed, none skipped:\n{text}"
    );
}

/// Two `runserver` processes: a burst of 64 admits exactly the limit (DRF's
/// own LocMemCache throttle admits more); wait()/Retry-After are tollgate's
/// retry_after_ms; keys by NUM_PROXIES, user id and scope as DRF builds them;
/// heartbeats from both count each client once.
#[tokio::test]
async fn django_workers_share_one_limit_where_drf_cache_over_admits() {
    pytest("test_django.py", 6).await;
}

/// Two uvicorn processes: the dependency and the middleware admit exactly the
/// limit of a burst of 64; Retry-After and RateLimit headers are tollgate's;
/// heartbeats from both workers count each client once.
#[tokio::test]
async fn fastapi_workers_share_one_limit_with_tollgates_headers() {
    pytest("test_fastapi.py", 3).await;
}

/// tollgate unreachable: each worker limits by itself (on_unreachable =
/// "local"; "allow" and "deny" as asked), one log line entering and leaving.
#[tokio::test]
async fn unreachable_tollgate_falls_back_with_one_log_line_each_way() {
    pytest("test_fallback.py", 6).await;
}

/// Bad settings stop runserver / the FastAPI app at startup naming the key;
/// DRF's rate spellings map to rates tollgate accepts.
#[tokio::test]
async fn bad_settings_raise_at_startup_naming_the_setting() {
    pytest("test_settings.py", 4).await;
}

/// `report()` on both clients: reports fill a `count = "reported"` rule (by
/// client address, by key with a cost), its check then denies; bad reports
/// raise naming the field; unreachable: None, one log line each way.
#[tokio::test]
async fn reports_charge_a_reported_rule_from_both_clients() {
    const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "login-failures"
match = { path = "/login", methods = ["POST"] }
limits = ["3/15m"]
count = "reported"

[[rule]]
name = "by-user"
match = { path = "/account" }
key = "header:x-user"
limits = ["2/15m"]
count = "reported"
"#;
    pytest_with("test_report.py", 4, CONFIG).await;
}
