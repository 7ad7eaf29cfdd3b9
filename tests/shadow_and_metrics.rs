//! Shadow mode never denies but reports; metrics match what was sent.

use crate::support::{metric, scrape, shared_redis, unique_prefix, TestServer};

const CONFIG: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "watch"
match = { path_prefix = "/watch" }
limits = ["1/h"]
shadow = true

[[rule]]
name = "enforce"
match = { path_prefix = "/enforce" }
limits = ["3/h"]
"#;

async fn get(s: &TestServer, uri: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url("/check"))
        .header("x-forwarded-uri", uri)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_shadow_rule_never_denies_but_reports_and_counts_would_be_denials() {
    let s = TestServer::start(
        CONFIG,
        Some(&shared_redis().url()),
        &unique_prefix("shadow"),
    )
    .await;
    for i in 0..5 {
        let r = get(&s, "/watch").await;
        assert_eq!(r.status(), 200);
        let remaining = r.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            remaining, "0",
            "request {i}: the headers still tell the truth"
        );
    }
    let text = scrape(&s).await;
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "watch"), ("outcome", "allowed")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "watch"), ("outcome", "shadow_limited")]
        ),
        4.0
    );
}

#[tokio::test]
async fn the_metrics_exposition_parses_and_counts_match_the_requests_sent() {
    let s = TestServer::start(
        CONFIG,
        Some(&shared_redis().url()),
        &unique_prefix("metrics"),
    )
    .await;
    for _ in 0..5 {
        get(&s, "/enforce").await;
    }
    for _ in 0..2 {
        get(&s, "/elsewhere").await;
    }
    let text = scrape(&s).await;
    // `metric` panics on any line that is not valid exposition format.
    let d = |outcome| {
        metric(
            &text,
            "tollgate_decisions_total",
            &[("rule", "enforce"), ("outcome", outcome)],
        )
    };
    assert_eq!((d("allowed"), d("limited")), (3.0, 2.0), "{text}");
    let h = |status| {
        metric(
            &text,
            "tollgate_http_requests_total",
            &[("endpoint", "/check"), ("status", status)],
        )
    };
    assert_eq!((h("200"), h("429")), (5.0, 2.0), "{text}");
    assert_eq!(metric(&text, "tollgate_redis_up", &[]), 1.0);
    // 3 allowed + 1 denied by Redis; the 5th request was a deny-cache hit.
    assert_eq!(
        metric(&text, "tollgate_redis_call_duration_seconds_count", &[]),
        4.0,
        "{text}"
    );
    assert_eq!(metric(&text, "tollgate_deny_cache_hits_total", &[]), 1.0);
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    assert!(
        !text.contains("203.0.113") && !text.contains("127.0.0.1"),
        "no addresses in labels"
    );
}

#[tokio::test]
async fn shadow_for_all_rules_from_the_command_line() {
    let ov = tollgate::config::Overrides {
        shadow: true,
        ..Default::default()
    };
    let cfg = tollgate::config::parse("t.toml", CONFIG, &ov).unwrap();
    assert!(cfg.rules.iter().all(|r| r.shadow));
}

/// Whether the exposition holds the series `tollgate_decisions_total{rule,outcome}` at exactly 0.
fn zero_series(text: &str, rule: &str, outcome: &str) -> bool {
    let line = format!("tollgate_decisions_total{{rule=\"{rule}\",outcome=\"{outcome}\"}} 0");
    text.lines().any(|l| l == line)
}

const OUTCOMES: [&str; 6] = [
    "allowed",
    "limited",
    "shadow_limited",
    "fallback_allowed",
    "fallback_limited",
    "not_allowlisted",
];

#[tokio::test]
async fn every_rule_and_outcome_series_exists_at_zero_from_start_and_after_a_reload_adds_a_rule() {
    let s = TestServer::start(CONFIG, None, &unique_prefix("zero")).await;
    let text = scrape(&s).await;
    for rule in ["watch", "enforce"] {
        for outcome in OUTCOMES {
            assert!(
                zero_series(&text, rule, outcome),
                "{rule}/{outcome} missing before any request:\n{text}"
            );
        }
    }
    let added = format!("{CONFIG}\n[[rule]]\nname = \"added\"\nlimits = [\"1/h\"]\n");
    let config = tollgate::config::parse("(test)", &added, &Default::default()).unwrap();
    s.app.reload(config);
    let text = scrape(&s).await;
    for outcome in OUTCOMES {
        assert!(
            zero_series(&text, "added", outcome),
            "added/{outcome} missing after the reload:\n{text}"
        );
    }
}
