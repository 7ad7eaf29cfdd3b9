//! Each Lua script on a real Redis against its in-process twin
//! (`LocalStore::check_at`): random (cost, pause) sequences, the same answers.
//!
//! sliding_window, sliding_log and gcra read the time from TIME only: both
//! sides get the same test clock (see `script_clock`) and must agree exactly
//! (allowed, retry_after, remaining, reset). The clock runs ahead of real
//! time by the pauses plus a margin per step, so that a key's real TTL never
//! ends before the test clock says its content no longer counts; a step whose
//! round trip took longer than the margin makes the sequence inconclusive, and
//! it is run again on a fresh key.
//!
//! fixed_window reads PTTL, so it runs in real time: the twin gets the Redis
//! time read just before the call. Redis opens a window at the instant the
//! script ran, which the test knows within its round trip, so (the documented
//! tolerance) no call is made within a guard band around a window's end, and
//! reset/retry may differ by the round trips; allowed and remaining must agree.
//! A sequence with a round trip over 10 ms is inconclusive and run again.

use std::time::Duration;

use crate::script_clock::{call, redis_now_us, Rng};
use crate::support::{shared_redis, unique_prefix};
use tollgate::limiter::{Algorithm, Call, LocalStore, Outcome};
use tollgate::rate::Rate;

const MARGIN_US: u64 = 30_000;
const STEPS: usize = 120;

fn rates(specs: &[&str]) -> Vec<Rate> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

fn twin(
    store: &LocalStore,
    alg: Algorithm,
    limits: &[Rate],
    cost: u64,
    burst: Option<u64>,
    now: u64,
) -> Outcome {
    let call = Call {
        algorithm: alg,
        base: "k",
        limits,
        cost,
        burst,
    };
    store.check_at(call, now)
}

/// A cost: mostly small, sometimes 0 (a peek) or more than the smallest limit.
fn cost(rng: &mut Rng, limits: &[Rate], burst: Option<u64>) -> u64 {
    let max = burst.unwrap_or(limits.iter().map(|r| r.limit).min().unwrap());
    match rng.below(10) {
        0 => 0,
        1 => max + 1,
        _ => 1 + rng.below(max.min(4)),
    }
}

/// A pause: often none, else up to a quarter period or up to two periods.
fn pause_us(rng: &mut Rng, limits: &[Rate]) -> u64 {
    let p = limits[0].period_ms * 1000;
    match rng.below(3) {
        0 => 0,
        1 => rng.below(p / 4),
        _ => rng.below(2 * p),
    }
}

/// One sequence on a fresh key; None if a round trip outlasted the margin.
fn clocked_sequence(
    conn: &mut redis::Connection,
    alg: Algorithm,
    limits: &[Rate],
    burst: Option<u64>,
    seed: u64,
) -> Option<usize> {
    let base = format!("{}:{{d}}", unique_prefix("diff"));
    let store = LocalStore::new();
    let mut rng = Rng::new(seed);
    let mut offset = 0;
    let mut denied = 0;
    for step in 0..STEPS {
        offset += pause_us(&mut rng, limits) + MARGIN_US;
        let cost = cost(&mut rng, limits, burst);
        let read = redis_now_us(conn);
        let at = read + offset;
        let lua = call(conn, alg, &base, limits, cost, burst, Some(at));
        if redis_now_us(conn) - read > MARGIN_US {
            return None;
        }
        let local = twin(&store, alg, limits, cost, burst, at);
        assert_eq!(
            lua, local,
            "{alg} {limits:?} burst {burst:?} seed {seed} step {step} cost {cost}: Lua (left) and twin (right) differ"
        );
        denied += usize::from(!lua.allowed);
    }
    Some(denied)
}

#[test]
fn time_reading_scripts_agree_exactly_with_their_twins() {
    let mut conn = shared_redis().conn();
    let cases: [(Algorithm, &[&str], Option<u64>); 8] = [
        (Algorithm::SlidingLog, &["5/1s"], None),
        (Algorithm::SlidingLog, &["3/500ms", "10/3s"], None),
        (Algorithm::SlidingWindow, &["5/1s"], None),
        (Algorithm::SlidingWindow, &["4/600ms", "9/2s"], None),
        (Algorithm::Gcra, &["5/1s"], None),
        (Algorithm::Gcra, &["7/700ms", "20/3s"], None),
        (Algorithm::Gcra, &["3/1s"], Some(8)),
        (Algorithm::Gcra, &["10/1s"], Some(2)),
    ];
    for (alg, specs, burst) in cases {
        let limits = rates(specs);
        for seed in [1, 2] {
            let denied = (0..3)
                .find_map(|_| clocked_sequence(&mut conn, alg, &limits, burst, seed))
                .unwrap_or_else(|| panic!("{alg}: every attempt had a round trip over the margin"));
            // Not vacuous: the sequences reach the limits and come back.
            assert!(
                denied > 0 && denied < STEPS,
                "{alg} {specs:?}: {denied} denials"
            );
        }
    }
}

/// Longest round trip a fixed_window step may take to be conclusive (µs).
const ROUND_TRIP_US: u64 = 10_000;
/// No call this close to a twin window's end: more than a window opening's
/// uncertainty (one round trip) plus the ms Redis rounds TTLs to.
const GUARD_US: u64 = 25_000;

/// One real-time sequence on a fresh key: (denied, admitted), or None if a
/// round trip outlasted `ROUND_TRIP_US` (the comparison would mean nothing).
fn fixed_sequence(
    conn: &mut redis::Connection,
    limits: &[Rate],
    seed: u64,
) -> Option<(usize, usize)> {
    let base = format!("{}:{{f}}", unique_prefix("diff-fw"));
    let store = LocalStore::new();
    let mut rng = Rng::new(seed);
    // When each limit's twin window ends (µs on Redis's clock), if open.
    let mut ends: Vec<Option<u64>> = vec![None; limits.len()];
    let (mut denied, mut admitted) = (0, 0);
    for step in 0..60 {
        std::thread::sleep(Duration::from_micros(rng.below(60_000)));
        let mut read = redis_now_us(conn);
        // Stay out of the guard band around a window's end.
        while let Some(end) = ends
            .iter()
            .flatten()
            .find(|&&e| read + GUARD_US > e && read < e + GUARD_US)
        {
            std::thread::sleep(Duration::from_micros(end + GUARD_US - read));
            read = redis_now_us(conn);
        }
        let c = cost(&mut rng, limits, None);
        let lua = call(conn, Algorithm::FixedWindow, &base, limits, c, None, None);
        if redis_now_us(conn) - read > ROUND_TRIP_US {
            return None;
        }
        let local = twin(&store, Algorithm::FixedWindow, limits, c, None, read);
        let what = format!("{limits:?} step {step} cost {c}: Lua {lua:?}, twin {local:?}");
        assert_eq!(lua.allowed, local.allowed, "{what}");
        // Times: this step's round trip and the window opening's, plus 2 ms of rounding.
        let slack = 2 * ROUND_TRIP_US / 1000 + 2;
        for (i, (l, t)) in lua.limits.iter().zip(&local.limits).enumerate() {
            assert_eq!(l.remaining, t.remaining, "{what}");
            assert!(l.reset_ms.abs_diff(t.reset_ms) <= slack, "{what}");
            if t.remaining < t.limit || c > 0 && local.allowed {
                ends[i] = Some(read + t.reset_ms * 1000);
            }
        }
        assert!(
            lua.retry_after_ms.abs_diff(local.retry_after_ms) <= slack,
            "{what}"
        );
        for (i, e) in ends.iter_mut().enumerate() {
            if e.is_some_and(|e| e <= read) && local.limits[i].remaining == limits[i].limit {
                *e = None;
            }
        }
        denied += usize::from(!lua.allowed);
        admitted += usize::from(lua.allowed && c > 0);
    }
    Some((denied, admitted))
}

#[test]
fn fixed_window_agrees_with_its_twin_in_real_time() {
    let mut conn = shared_redis().conn();
    for specs in [&["3/200ms"][..], &["2/150ms", "5/400ms"]] {
        let limits = rates(specs);
        let (denied, admitted) = (0..5)
            .find_map(|seed| fixed_sequence(&mut conn, &limits, 7 + seed))
            .unwrap_or_else(|| {
                panic!("{specs:?}: every attempt had a round trip over {ROUND_TRIP_US} us")
            });
        assert!(
            denied > 0 && admitted > 0,
            "{specs:?}: {denied} denied, {admitted} admitted"
        );
    }
}
