//! Each algorithm against both stores (embedded and a real Redis): the same
//! behaviour, asserted the same way.

use std::time::Duration;

use crate::support::{app_for, shared_redis, unique_prefix, StoreKind, BOTH_STORES};
use tollgate::limiter::{Algorithm, Call, Outcome};
use tollgate::rate::Rate;
use tollgate::App;

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
    Algorithm::SlidingLog,
    Algorithm::Gcra,
];

fn rates(specs: &[&str]) -> Vec<Rate> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

async fn check(app: &App, alg: Algorithm, key: &str, limits: &[Rate], cost: u64) -> Outcome {
    let base = app.keys.limit_base(alg, "t", key);
    app.limiter
        .store
        .check(Call {
            algorithm: alg,
            base: &base,
            limits,
            cost,
            burst: None,
            charge: true,
        })
        .await
        .unwrap_or_else(|e| panic!("{alg}: store error {e}"))
}

/// Run `body` for every (store, algorithm) pair, each with a fresh app and prefix.
macro_rules! for_each_store_and_algorithm {
    (|$app:ident, $alg:ident, $store:ident| $body:block) => {
        for $store in BOTH_STORES {
            for $alg in ALGORITHMS {
                let $app = app_for($store, &unique_prefix("alg"), "").await;
                $body
            }
        }
    };
}

#[tokio::test]
async fn admits_exactly_the_limit_then_denies_with_the_right_retry_after() {
    for_each_store_and_algorithm!(|app, alg, store| {
        let limits = rates(&["5/m"]);
        for i in 0..5 {
            let o = check(&app, alg, "k", &limits, 1).await;
            assert!(o.allowed, "{store:?} {alg}: request {} denied", i + 1);
            assert_eq!(o.limits[0].remaining, 4 - i, "{store:?} {alg}");
            assert_eq!(o.retry_after_ms, 0);
        }
        let o = check(&app, alg, "k", &limits, 1).await;
        assert!(!o.allowed, "{store:?} {alg}: 6th request admitted");
        assert_eq!(o.limits[0].remaining, 0);
        let r = o.retry_after_ms;
        match alg {
            // The window (or the oldest logged unit) ends a minute after the first hit.
            Algorithm::FixedWindow | Algorithm::SlidingLog => {
                assert!(
                    (58_000..=60_000).contains(&r),
                    "{store:?} {alg}: retry_after {r}"
                )
            }
            // One unit frees every period / limit = 12 s.
            Algorithm::Gcra => assert!(
                (10_000..=12_000).contains(&r),
                "{store:?} {alg}: retry_after {r}"
            ),
            // Until this window ends, plus until its weight has decayed by one unit (12 s).
            Algorithm::SlidingWindow => {
                let expected = o.limits[0].reset_ms + 12_000;
                assert!(
                    r.abs_diff(expected) <= 2,
                    "{store:?} {alg}: retry_after {r}, expected {expected}"
                )
            }
        }
    });
}

#[tokio::test]
async fn a_denied_request_consumes_nothing() {
    for_each_store_and_algorithm!(|app, alg, store| {
        let limits = rates(&["5/m"]);
        assert!(
            check(&app, alg, "k", &limits, 3).await.allowed,
            "{store:?} {alg}"
        );
        assert!(
            !check(&app, alg, "k", &limits, 3).await.allowed,
            "{store:?} {alg}: 3 + 3 > 5"
        );
        // Had the denial charged anything, these 2 units would not fit.
        let o = check(&app, alg, "k", &limits, 2).await;
        assert!(o.allowed, "{store:?} {alg}: denial consumed quota");
        assert_eq!(o.limits[0].remaining, 0, "{store:?} {alg}");
        assert!(
            !check(&app, alg, "k", &limits, 1).await.allowed,
            "{store:?} {alg}"
        );
    });
}

#[tokio::test]
async fn several_limits_are_checked_and_charged_all_or_nothing() {
    for_each_store_and_algorithm!(|app, alg, store| {
        let both = rates(&["2/m", "10/h"]);
        for _ in 0..2 {
            assert!(
                check(&app, alg, "k", &both, 1).await.allowed,
                "{store:?} {alg}"
            );
        }
        let o = check(&app, alg, "k", &both, 1).await;
        assert!(
            !o.allowed,
            "{store:?} {alg}: the per-minute limit must deny"
        );
        assert_eq!(
            o.limits[1].remaining, 8,
            "{store:?} {alg}: the hourly limit was charged by a denial"
        );
        // The hourly counter is the same key when asked alone: exactly 8 units are left.
        let hourly = rates(&["10/h"]);
        assert!(
            check(&app, alg, "k", &hourly, 8).await.allowed,
            "{store:?} {alg}"
        );
        assert!(
            !check(&app, alg, "k", &hourly, 1).await.allowed,
            "{store:?} {alg}"
        );
    });
}

#[tokio::test]
async fn every_redis_key_written_has_a_ttl() {
    let redis = shared_redis();
    let mut conn = redis.conn();
    for alg in ALGORITHMS {
        let prefix = unique_prefix("ttl");
        let app = app_for(StoreKind::Redis, &prefix, "").await;
        check(&app, alg, "k", &rates(&["3/s", "10/m"]), 1).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(keys.len(), 2, "{alg}: {keys:?}");
        for key in keys {
            assert!(key.contains("{t|k}"), "{alg}: {key} lacks the hash tag");
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
            assert!(pttl > 0, "{alg}: {key} has PTTL {pttl}");
        }
    }
}

#[tokio::test]
async fn after_retry_after_the_window_rolls_over_and_admits_again() {
    for_each_store_and_algorithm!(|app, alg, store| {
        let limits = rates(&["2/1s"]);
        assert!(check(&app, alg, "k", &limits, 1).await.allowed);
        assert!(check(&app, alg, "k", &limits, 1).await.allowed);
        let denied = check(&app, alg, "k", &limits, 1).await;
        assert!(!denied.allowed, "{store:?} {alg}");
        assert!(
            denied.retry_after_ms >= 1 && denied.retry_after_ms <= 2000,
            "{store:?} {alg}: {}",
            denied.retry_after_ms
        );
        // The behaviour under test: after waiting retry_after on the real
        // clock (no condition to poll: the next check is the assertion).
        tokio::time::sleep(Duration::from_millis(denied.retry_after_ms + 15)).await;
        assert!(
            check(&app, alg, "k", &limits, 1).await.allowed,
            "{store:?} {alg}: not admitted after retry_after"
        );
    });
}

#[tokio::test]
async fn keys_and_rules_are_counted_apart() {
    for_each_store_and_algorithm!(|app, alg, store| {
        let limits = rates(&["1/m"]);
        assert!(check(&app, alg, "a", &limits, 1).await.allowed);
        assert!(
            check(&app, alg, "b", &limits, 1).await.allowed,
            "{store:?} {alg}: keys share a counter"
        );
        assert!(!check(&app, alg, "a", &limits, 1).await.allowed);
    });
}
