//! gcra's `burst`: from a rule and from `POST /v1/check`, on both stores;
//! refused where it means nothing.

use crate::support::{unique_prefix, StoreKind, TestServer, BOTH_STORES};

fn config(burst: &str) -> String {
    format!(
        "[[rule]]\nname = \"api\"\nlimits = [\"10/m\"]\nalgorithm = \"gcra\"\n{burst}\non_redis_error = \"deny\"\n"
    )
}

async fn ask(s: &TestServer, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(s.url("/v1/check"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// How many of `n` calls pass at once; checks `remaining` as it goes.
async fn passing(s: &TestServer, body: serde_json::Value, n: u64, burst: u64) -> u64 {
    let mut passed = 0;
    for _ in 0..n {
        let (status, v) = ask(s, body.clone()).await;
        assert_eq!(status, 200, "{v}");
        if v["allowed"] == true {
            passed += 1;
            assert_eq!(v["remaining"], burst - passed, "{v}");
        }
    }
    passed
}

#[tokio::test]
async fn a_rule_burst_lets_that_many_pass_at_once_then_the_rate() {
    for store in BOTH_STORES {
        let url = store.redis_url();
        let s = TestServer::start(
            &config("burst = 25"),
            url.as_deref(),
            &unique_prefix("burst"),
        )
        .await;
        let body = serde_json::json!({"rule": "api", "key": "k"});
        assert_eq!(passing(&s, body, 30, 25).await, 25, "{store:?}");
        // Without burst the bucket is the limit (10).
        let s2 = TestServer::start(&config(""), url.as_deref(), &unique_prefix("burst")).await;
        let body = serde_json::json!({"rule": "api", "key": "k"});
        assert_eq!(passing(&s2, body, 15, 10).await, 10, "{store:?}");
        s.stop().await;
        s2.stop().await;
    }
}

#[tokio::test]
async fn an_ad_hoc_burst_applies_and_is_refused_where_it_means_nothing() {
    let s = TestServer::start(
        &config(""),
        StoreKind::Redis.redis_url().as_deref(),
        &unique_prefix("burst"),
    )
    .await;
    let body = serde_json::json!({"key": "k", "limits": ["2/m"], "algorithm": "gcra", "burst": 6});
    assert_eq!(passing(&s, body, 8, 6).await, 6);
    // A cost above the burst could never pass; up to it, it may.
    let (status, v) = ask(&s, serde_json::json!({"key": "k2", "limits": ["2/m"], "algorithm": "gcra", "burst": 6, "cost": 7})).await;
    assert_eq!((status, v["field"].as_str()), (400, Some("cost")), "{v}");
    let (status, v) = ask(&s, serde_json::json!({"key": "k2", "limits": ["2/m"], "algorithm": "gcra", "burst": 6, "cost": 5})).await;
    assert_eq!((status, v["allowed"].as_bool()), (200, Some(true)), "{v}");
    for (body, why) in [
        (
            serde_json::json!({"key": "k", "limits": ["2/m"], "burst": 6}),
            "fixed_window",
        ),
        (
            serde_json::json!({"key": "k", "limits": ["2/m", "9/h"], "algorithm": "gcra", "burst": 6}),
            "two limits",
        ),
        (
            serde_json::json!({"key": "k", "limits": ["2/m"], "algorithm": "gcra", "burst": 0}),
            "zero",
        ),
        (
            serde_json::json!({"key": "k", "rule": "api", "burst": 6}),
            "a rule's own",
        ),
    ] {
        let (status, v) = ask(&s, body).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some("burst")),
            "{why}: {v}"
        );
    }
    s.stop().await;
}
