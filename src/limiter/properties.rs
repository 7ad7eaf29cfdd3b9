//! Property tests of the in-process algorithms (the embedded store, and the
//! fallback while Redis is away): for any limits, costs and times, no panic,
//! never more than the limit, and `remaining` within bounds.

use proptest::prelude::*;

use super::{Algorithm, Call, LocalStore, Outcome};
use crate::rate::Rate;

/// One step: (cost, µs since the previous step).
fn steps() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        (0u64..=12, prop_oneof![Just(0u64), 0u64..3_000_000]),
        1..120,
    )
}

fn rate() -> impl Strategy<Value = Rate> {
    (
        1u64..=10,
        prop_oneof![1u64..=20, 100u64..=2_000, Just(86_400_000)],
    )
        .prop_map(|(limit, period_ms)| Rate { limit, period_ms })
}

/// Runs the steps; returns (time, cost, outcome) of each.
fn run(
    alg: Algorithm,
    rate: &Rate,
    burst: Option<u64>,
    steps: &[(u64, u64)],
) -> Vec<(u64, u64, Outcome)> {
    let store = LocalStore::new(usize::MAX, Default::default());
    let limits = [rate.clone()];
    let mut now = 1_000_000_000_000u64;
    let mut out = Vec::new();
    for &(cost, pause) in steps {
        now += pause;
        let call = Call {
            algorithm: alg,
            base: "k",
            limits: &limits,
            cost,
            burst,
            charge: true,
        };
        let o = store.check_at(call, now);
        out.push((now, cost, o));
    }
    out
}

/// Units admitted (cost > 0, allowed) with a time in [from, to].
fn admitted(log: &[(u64, u64, Outcome)], from: u64, to: u64) -> u64 {
    log.iter()
        .filter(|(t, _, o)| o.allowed && (from..=to).contains(t))
        .map(|(_, c, _)| c)
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn sliding_log_never_admits_more_than_the_limit_in_any_period(r in rate(), s in steps()) {
        let log = run(Algorithm::SlidingLog, &r, None, &s);
        let p = r.period_ms * 1000;
        for (t, _, o) in &log {
            prop_assert!(o.limits[0].remaining <= r.limit);
            prop_assert!(admitted(&log, t.saturating_sub(p - 1), *t) <= r.limit);
        }
    }

    #[test]
    fn gcra_admits_at_most_burst_plus_elapsed_over_interval(
        r in rate(), burst in prop::option::of(1u64..=20), s in steps()
    ) {
        let log = run(Algorithm::Gcra, &r, burst, &s);
        let b = burst.unwrap_or(r.limit);
        let p = r.period_ms as u128 * 1000;
        for (i, (a, _, _)) in log.iter().enumerate() {
            prop_assert!(log[i].2.limits[0].remaining <= b);
            for (z, _, _) in &log[i..] {
                let n = admitted(&log, *a, *z) as u128;
                // n units need n intervals; the bucket holds burst of them.
                prop_assert!(n * p <= (*z - *a) as u128 * r.limit as u128 + b as u128 * p,
                    "{n} units in {} us", z - a);
            }
        }
    }

    #[test]
    fn fixed_window_admits_at_most_the_limit_per_window(r in rate(), s in steps()) {
        let log = run(Algorithm::FixedWindow, &r, None, &s);
        // The model: a window opens at the first admission after the last one ended.
        let (mut ends, mut used) = (0u64, 0u64);
        for (t, c, o) in &log {
            prop_assert!(o.limits[0].remaining <= r.limit);
            if *t >= ends && o.allowed && *c > 0 {
                ends = t + r.period_ms * 1000;
                used = 0;
            }
            if o.allowed {
                used += c;
            }
            prop_assert!(used <= r.limit);
        }
    }

    #[test]
    fn sliding_window_admits_at_most_the_limit_per_aligned_window_and_twice_per_period(
        r in rate(), s in steps()
    ) {
        let log = run(Algorithm::SlidingWindow, &r, None, &s);
        let p = r.period_ms * 1000;
        for (t, _, o) in &log {
            prop_assert!(o.limits[0].remaining <= r.limit);
            let start = t / 1000 / r.period_ms * p;
            prop_assert!(admitted(&log, start, *t) <= r.limit);
            prop_assert!(admitted(&log, t.saturating_sub(p - 1), *t) < 2 * r.limit.max(1) + 1);
        }
    }

    #[test]
    fn a_denial_consumes_nothing(
        r in rate(), s in steps(), alg in prop_oneof![
            Just(Algorithm::FixedWindow), Just(Algorithm::SlidingWindow),
            Just(Algorithm::SlidingLog), Just(Algorithm::Gcra)]
    ) {
        let store = LocalStore::new(usize::MAX, Default::default());
        let limits = [r.clone()];
        let mut now = 1_000_000_000_000u64;
        for (cost, pause) in s {
            now += pause;
            let call = |cost| Call { algorithm: alg, base: "k", limits: &limits, cost, burst: None, charge: true };
            let before = store.check_at(call(0), now);
            let o = store.check_at(call(cost), now);
            if !o.allowed {
                prop_assert!(o.retry_after_ms >= 1);
                prop_assert_eq!(store.check_at(call(0), now), before);
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A call that only checks (`count = "reported"`) answers what the same
    /// charging call would, and writes nothing either way. The charging call
    /// runs on a twin store rebuilt from the same history, so the two never
    /// part.
    #[test]
    fn a_check_only_call_answers_as_a_charge_would_and_writes_nothing(
        r in rate(), s in steps(), alg in prop_oneof![
            Just(Algorithm::FixedWindow), Just(Algorithm::SlidingWindow),
            Just(Algorithm::SlidingLog), Just(Algorithm::Gcra)]
    ) {
        let store = LocalStore::new(usize::MAX, Default::default());
        let limits = [r.clone()];
        let call = |cost, charge| Call { algorithm: alg, base: "k", limits: &limits, cost, burst: None, charge };
        let mut history: Vec<(u64, u64)> = Vec::new();
        let mut now = 1_000_000_000_000u64;
        for (i, (cost, pause)) in s.into_iter().enumerate() {
            now += pause;
            if i % 2 == 0 {
                store.check_at(call(cost, true), now);
                history.push((cost, now));
                continue;
            }
            let cost = cost.max(1);
            let before = store.check_at(call(0, true), now);
            let only = store.check_at(call(cost, false), now);
            let twin = LocalStore::new(usize::MAX, Default::default());
            for &(c, t) in &history {
                twin.check_at(call(c, true), t);
            }
            let charged = twin.check_at(call(cost, true), now);
            prop_assert_eq!(only.allowed, charged.allowed);
            if !only.allowed {
                prop_assert_eq!(only.retry_after_ms, charged.retry_after_ms);
            }
            prop_assert_eq!(store.check_at(call(0, true), now), before);
        }
    }
}

#[test]
fn a_cost_above_the_limit_is_denied_by_every_algorithm_without_panicking() {
    // The fallback divides limits by fallback_replicas: a share of 1 meets costs of 5.
    let limits = [Rate {
        limit: 1,
        period_ms: 1000,
    }];
    for alg in super::redis_store::ALGORITHMS {
        let store = LocalStore::new(usize::MAX, Default::default());
        for (now, cost) in [(10, 1), (20, 5), (30, u64::MAX)] {
            let call = Call {
                algorithm: alg,
                base: "k",
                limits: &limits,
                cost,
                burst: None,
                charge: true,
            };
            let o = store.check_at(call, 1_000_000_000 + now);
            assert_eq!(o.allowed, cost == 1, "{alg} cost {cost}");
        }
    }
}

#[test]
fn a_backlogged_gcra_key_admits_exactly_the_rate() {
    // 300 per ms: an interval of 3.33 us. Rounding the TAT up to whole
    // microseconds would give 4 us, i.e. 250 000/s instead of 300 000/s.
    let limits = [Rate {
        limit: 300,
        period_ms: 1,
    }];
    let store = LocalStore::new(usize::MAX, Default::default());
    let start = 1_000_000_000u64;
    let mut admitted = 0;
    for us in 0..=30_000 {
        let call = Call {
            algorithm: Algorithm::Gcra,
            base: "k",
            limits: &limits,
            cost: 1,
            burst: None,
            charge: true,
        };
        if store.check_at(call, start + us).allowed {
            admitted += 1;
        }
    }
    // A burst of 300, then one every 10/3 us for 30 ms.
    assert_eq!(admitted, 300 + 9_000);
}
