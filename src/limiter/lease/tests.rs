//! Hotness, spending a window slice and a gcra run, reading a grant.
use super::held::State;
use super::*;
use crate::limiter::Algorithm;

fn call<'a>(algorithm: Algorithm, limits: &'a [Rate]) -> Call<'a> {
    Call {
        algorithm,
        base: "b",
        limits,
        cost: 1,
        burst: None,
        charge: true,
    }
}

fn grant(granted: u64, ahead_us: u64, limits: &[Rate]) -> Grant {
    Grant {
        granted,
        outcome: Outcome::from_reply(&[1, 0, 40, 1000], limits).unwrap(),
        ahead_us,
    }
}

#[test]
fn a_key_is_hot_after_enough_decisions_in_a_second() {
    let mut s = State::default();
    let now = Instant::now();
    for _ in 0..HOT - 1 {
        s.seen(now);
    }
    assert!(!s.hot());
    s.seen(now);
    assert!(s.hot());
    // The next second still counts the previous one: no cold edge.
    s.seen(now + Duration::from_millis(1500));
    assert!(s.hot());
    s.seen(now + Duration::from_millis(4000));
    assert!(!s.hot());
}

#[test]
fn a_window_slice_is_spent_once_and_not_past_the_window() {
    let limits: Vec<Rate> = vec!["100/1s".parse().unwrap()];
    let c = call(Algorithm::FixedWindow, &limits);
    let mut s = State::default();
    let sent = Instant::now();
    s.hold(&grant(3, 0, &limits), sent, &c);
    let first = s.spend(sent, &c).unwrap();
    assert_eq!(first.limits[0].remaining, 41);
    assert!(s.spend(sent, &c).is_some());
    assert!(
        s.spend(sent, &c).is_none(),
        "three granted, one for the taker"
    );
    s.hold(&grant(6, 0, &limits), sent, &c);
    // The window ends 1000 ms after the script read it: 1 ms is kept
    // for PTTL's rounding.
    assert!(s.spend(sent + Duration::from_millis(998), &c).is_some());
    assert!(s.spend(sent + Duration::from_millis(999), &c).is_none());
    let other: Vec<Rate> = vec!["50/1s".parse().unwrap()];
    let o = call(Algorithm::FixedWindow, &other);
    assert!(s.spend(sent, &o).is_none(), "taken for other limits");
}

#[test]
fn just_past_a_window_slice_a_take_asks_only_for_its_own_units() {
    let limits: Vec<Rate> = vec!["1000000/1s".parse().unwrap()];
    let c = call(Algorithm::FixedWindow, &limits);
    let mut s = State::default();
    let sent = Instant::now();
    s.hold(&grant(500, 0, &limits), sent, &c);
    // The slice ends at sent + 999 ms (the grant's reset 1000, less 1 ms).
    let end = sent + Duration::from_millis(999);
    assert_eq!(s.cap(sent, 1, 0), 0, "inside the window: the rule's cap");
    assert_eq!(s.cap(end, 1, 0), 1, "its window may still be open in Redis");
    assert_eq!(s.cap(end + Duration::from_micros(1999), 1, 7), 1);
    assert_eq!(
        s.cap(end + Duration::from_millis(2), 1, 7),
        7,
        "a new window"
    );
    // A slice spent before its end: the window is open, the next take is whole.
    s.hold(&grant(1, 0, &limits), sent, &c);
    assert!(s.spend(sent, &c).is_none());
    assert_eq!(s.cap(sent, 1, 0), 0);
    // gcra's runs are not windows.
    let g = call(Algorithm::Gcra, &limits);
    s.hold(&grant(3, 0, &limits), sent, &g);
    assert_eq!(s.cap(end, 1, 0), 0);
}

#[test]
fn gcra_emissions_are_spent_only_while_they_lie_ahead() {
    // 1000/s: one emission a ms; a run of 10 starting 2 ms after the take.
    let limits: Vec<Rate> = vec!["1000/1s".parse().unwrap()];
    let c = call(Algorithm::Gcra, &limits);
    let mut s = State::default();
    let sent = Instant::now();
    s.hold(&grant(10, 2000, &limits), sent, &c);
    // Emissions 1..9 start at 3..11 ms: at once, all of them may go.
    assert_eq!(s.slice.units(sent), 9);
    for _ in 0..3 {
        assert!(s.spend(sent, &c).is_some());
    }
    // At 7.5 ms, emissions 4 and 5 (6, 7 ms) are past: the next is 6 (8 ms).
    let later = sent + Duration::from_micros(7500);
    assert_eq!(s.slice.units(later), 4);
    assert!(s.spend(later, &c).is_some());
    assert_eq!(s.slice.units(later), 3);
    assert_eq!(s.slice.units(sent + Duration::from_millis(12)), 0);
}

#[test]
fn a_grant_of_nothing_is_a_denial() {
    let limits: Vec<Rate> = vec!["100/1s".parse().unwrap()];
    let g = Grant::from_reply(&[0, 300, 0, 300], &limits).unwrap();
    assert!(!g.outcome.allowed && g.granted == 0);
    let g = Grant::from_reply(&[7, 0, 10, 900], &limits).unwrap();
    assert!(g.outcome.allowed && g.granted == 7 && g.ahead_us == 0);
    let g = Grant::from_reply(&[7, 0, 10, 900, 2500], &limits).unwrap();
    assert_eq!(g.ahead_us, 2500);
    assert!(Grant::from_reply(&[7, 0, 10], &limits).is_none());
    assert_eq!(divisor(0), 2);
    assert_eq!(divisor(3), 6);
}
