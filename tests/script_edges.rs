//! The limiter scripts' edge cases on a real Redis, at times the test
//! chooses: member names after a prune, large costs, GCRA while backlogged,
//! a counter without a TTL, and what a key costs in memory.

use crate::script_clock::call;
use crate::support::{shared_redis, unique_prefix};
use tollgate::limiter::Algorithm;
use tollgate::rate::Rate;

fn rate(spec: &str) -> Vec<Rate> {
    vec![spec.parse().unwrap()]
}

/// A time (µs) ending in 010: %.14g prints it in 100 µs steps, so x980 and
/// (x+1)020 after it print the same.
fn aligned_now(conn: &mut redis::Connection) -> u64 {
    crate::script_clock::redis_now_us(conn) / 1000 * 1000 + 10
}

#[test]
fn sliding_log_members_stay_unique_after_a_prune_and_within_one_microsecond() {
    let mut conn = shared_redis().conn();
    let base = format!("{}:{{sl}}", unique_prefix("edge"));
    let key = format!("{base}:1000");
    let limits = rate("2/1s");
    let z = aligned_now(&mut conn);
    let at = |us: u64| Some(z + us);
    let sl = Algorithm::SlidingLog;
    assert!(call(&mut conn, sl, &base, &limits, 1, None, at(0)).allowed);
    // 30 us before a period has passed: one unit counts, this is the second.
    assert!(call(&mut conn, sl, &base, &limits, 1, None, at(999_970)).allowed);
    // 10 us after: the first has left, so one counts and one more fits. Its
    // name must not collide with the previous one (the same 100 us when
    // printed with %.14g, and the same count).
    assert!(call(&mut conn, sl, &base, &limits, 1, None, at(1_000_010)).allowed);
    let members: u64 = redis::cmd("ZCARD").arg(&key).query(&mut conn).unwrap();
    assert_eq!(members, 2, "every admitted unit is a member");
    let o = call(&mut conn, sl, &base, &limits, 1, None, at(1_000_020));
    assert!(!o.allowed, "the last two fill the period: {o:?}");

    // Two calls in the same microsecond, after everything was pruned.
    let limits = rate("4/1s");
    let base = format!("{}:{{sl2}}", unique_prefix("edge"));
    for _ in 0..2 {
        assert!(call(&mut conn, sl, &base, &limits, 2, None, at(3_000_000)).allowed);
    }
    let members: u64 = redis::cmd("ZCARD")
        .arg(format!("{base}:1000"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(members, 4);
    assert!(!call(&mut conn, sl, &base, &limits, 1, None, at(3_000_000)).allowed);
}

#[test]
fn sliding_log_takes_a_cost_of_ten_thousand_in_one_call() {
    let mut conn = shared_redis().conn();
    let base = format!("{}:{{big}}", unique_prefix("edge"));
    let limits = rate("20000/m");
    let o = call(
        &mut conn,
        Algorithm::SlidingLog,
        &base,
        &limits,
        10_000,
        None,
        None,
    );
    assert!(o.allowed, "{o:?}");
    assert_eq!(o.limits[0].remaining, 10_000);
    let members: u64 = redis::cmd("ZCARD")
        .arg(format!("{base}:60000"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(members, 10_000);
    let o = call(
        &mut conn,
        Algorithm::SlidingLog,
        &base,
        &limits,
        10_001,
        None,
        None,
    );
    assert!(!o.allowed);
}

#[test]
fn a_backlogged_gcra_key_admits_exactly_its_rate() {
    // 300 000/s is one unit every 3.33 us. Rounding the TAT up to a whole
    // microsecond per request admitted 2 units per 7 us instead of per 6.67.
    let mut conn = shared_redis().conn();
    let base = format!("{}:{{gc}}", unique_prefix("edge"));
    let limits = rate("300000/s");
    let t0 = crate::script_clock::redis_now_us(&mut conn) + 1_000_000;
    let g = Algorithm::Gcra;
    // The whole burst at once: the TAT is a second ahead from the start (and
    // the key's real TTL a second, far longer than a step of this test).
    assert!(call(&mut conn, g, &base, &limits, 300_000, None, Some(t0)).allowed);
    let mut admitted = 300_000;
    const CALLS: u64 = 6000;
    for k in 1..=CALLS {
        // Demand: 2 units every 5 us (400 000/s), more than the rate.
        if call(&mut conn, g, &base, &limits, 2, None, Some(t0 + 5 * k)).allowed {
            admitted += 2;
        }
    }
    // burst + elapsed / interval = 300 000 + 30 000 us x 0.3 = 309 000
    // (rounding up per request gave 308 571).
    let exact = 300_000 + CALLS * 5 * 3 / 10;
    assert!(
        (exact - 2..=exact).contains(&admitted),
        "admitted {admitted}, the rate allows {exact}"
    );
}

#[test]
fn a_fixed_window_counter_without_ttl_starts_a_fresh_window_at_the_cost() {
    let mut conn = shared_redis().conn();
    let base = format!("{}:{{fw}}", unique_prefix("edge"));
    let key = format!("{base}:60000");
    // A counter that lost its TTL (a PERSIST, a restore without TTLs).
    let _: () = redis::cmd("SET").arg(&key).arg(5).query(&mut conn).unwrap();
    let limits = rate("5/m");
    let fw = Algorithm::FixedWindow;
    let o = call(&mut conn, fw, &base, &limits, 1, None, None);
    assert!(o.allowed && o.limits[0].remaining == 4, "{o:?}");
    let value: u64 = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert_eq!(value, 1, "the fresh window counts this request only");
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let o = call(&mut conn, fw, &base, &limits, 4, None, None);
    assert!(o.allowed && o.limits[0].remaining == 0, "{o:?}");
}

#[test]
fn a_gcra_key_stays_small() {
    let mut conn = shared_redis().conn();
    let base = format!("{}:{{mem}}", unique_prefix("edge"));
    // 7/s: an interval of 142 857 + 1/7 us, so the TAT carries a fraction.
    let limits = rate("7/s");
    call(&mut conn, Algorithm::Gcra, &base, &limits, 1, None, None);
    let key = format!("{base}:1000");
    let value: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert!(value.contains(' '), "a fraction is stored: {value:?}");
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    assert!(bytes <= 128, "{bytes} bytes for {key} = {value:?}");
}
