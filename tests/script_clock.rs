//! Running the limiter's Lua scripts at a time the test chooses.
//!
//! Each script reads the time once, `local t = redis.call('TIME')`. The copy
//! run here reads it from a hash beside its first key instead (set in the same
//! pipeline): every other line is the script tollgate runs. Fixed windows
//! ignore the time they are given (they read PTTL).

#![allow(dead_code)]

use tollgate::limiter::{Algorithm, Outcome};
use tollgate::rate::Rate;

const TIME_CALL: &str = "redis.call('TIME')";

pub fn script_text(alg: Algorithm) -> &'static str {
    tollgate::limiter::script_source(alg)
}

/// The script with its one `TIME` call reading `KEYS[1]:clock` instead.
pub fn clocked_text(alg: Algorithm) -> String {
    let text = script_text(alg);
    assert_eq!(
        text.matches(TIME_CALL).count(),
        1,
        "{alg}: one TIME call expected"
    );
    clocked(text)
}

/// Any script's `TIME` call reading `KEYS[1]:clock` instead (see `set_clock`).
pub fn clocked(text: &str) -> String {
    text.replace(
        TIME_CALL,
        "redis.call('HMGET', KEYS[1] .. ':clock', 's', 'us')",
    )
}

/// Redis's own clock, in µs.
pub fn redis_now_us(conn: &mut redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    s * 1_000_000 + us
}

/// One script call as tollgate makes it (keys `base:period`, ARGV cost then
/// limit, period[, burst]); `at` (µs) replaces TIME when given.
pub fn call(
    conn: &mut redis::Connection,
    alg: Algorithm,
    base: &str,
    limits: &[Rate],
    cost: u64,
    burst: Option<u64>,
    at: Option<u64>,
) -> Outcome {
    let text = match at {
        Some(_) => clocked_text(alg),
        None => script_text(alg).to_string(),
    };
    let keys: Vec<String> = limits
        .iter()
        .map(|r| format!("{base}:{}", r.period_ms))
        .collect();
    let mut eval = redis::cmd("EVAL");
    eval.arg(text).arg(keys.len()).arg(&keys).arg(cost);
    for r in limits {
        eval.arg(r.limit).arg(r.period_ms);
        if alg == Algorithm::Gcra {
            eval.arg(burst.unwrap_or(r.limit));
        }
    }
    let mut pipe = redis::pipe();
    if let Some(at) = at {
        set_clock(&mut pipe, &keys[0], at);
    }
    pipe.add_command(eval);
    let (reply,): (Vec<i64>,) = pipe
        .query(conn)
        .unwrap_or_else(|e| panic!("{alg}: script failed: {e}"));
    Outcome::from_reply(&reply, limits).unwrap_or_else(|| panic!("{alg}: reply {reply:?}"))
}

/// A small deterministic generator (xorshift64*), so a failing seed replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Like `call`, but the keys never expire in real time: after the call (in
/// one MULTI) they are PERSISTed, so only the test clock `at` (µs) moves
/// them on. Every script but fixed_window decides from its content alone
/// (a key past its TTL holds only content that no longer counts). fixed_window
/// reads its window's end from PTTL, so `ends` keeps each key's end on the
/// test clock (whole ms) and the TTL is set from it before the call (DEL
/// once it has passed), as Redis would have it at that time. (Redis's own
/// clock may cross a ms inside the MULTI: its PTTL can read 1 ms short.)
#[allow(clippy::too_many_arguments)]
pub fn call_persisted(
    conn: &mut redis::Connection,
    alg: Algorithm,
    base: &str,
    limits: &[Rate],
    cost: u64,
    burst: Option<u64>,
    at: u64,
    ends: &mut [Option<u64>],
) -> Outcome {
    let fixed = alg == Algorithm::FixedWindow;
    let keys: Vec<String> = limits
        .iter()
        .map(|r| format!("{base}:{}", r.period_ms))
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic();
    if fixed {
        assert_eq!(at % 1000, 0, "fixed_window runs on whole ms");
        for (key, end) in keys.iter().zip(ends.iter()) {
            match end {
                Some(end) if *end > at => pipe.cmd("PEXPIRE").arg(key).arg((end - at) / 1000),
                _ => pipe.cmd("DEL").arg(key),
            };
            pipe.ignore();
        }
    } else {
        set_clock(&mut pipe, &keys[0], at);
    }
    let mut eval = redis::cmd("EVAL");
    let text = if fixed {
        script_text(alg).to_string()
    } else {
        clocked_text(alg)
    };
    eval.arg(text).arg(keys.len()).arg(&keys).arg(cost);
    for r in limits {
        eval.arg(r.limit).arg(r.period_ms);
        if alg == Algorithm::Gcra {
            eval.arg(burst.unwrap_or(r.limit));
        }
    }
    pipe.add_command(eval);
    for key in &keys {
        pipe.cmd("PTTL").arg(key);
    }
    for key in &keys {
        pipe.cmd("PERSIST").arg(key).ignore();
    }
    let (reply, pttls): (Vec<i64>, Vec<i64>) = {
        let mut values: Vec<redis::Value> = pipe
            .query(conn)
            .unwrap_or_else(|e| panic!("{alg}: script failed: {e}"));
        let rest = values.split_off(1);
        (
            redis::from_redis_value(values.remove(0)).unwrap(),
            rest.into_iter()
                .map(|v| redis::from_redis_value(v).unwrap())
                .collect(),
        )
    };
    if fixed {
        // A key that was gone and now exists opened a window at `at`.
        for ((end, pttl), r) in ends.iter_mut().zip(pttls).zip(limits) {
            if pttl < 0 {
                *end = None;
            } else if end.is_none_or(|e| e <= at) {
                *end = Some(at + r.period_ms * 1000);
            }
        }
    }
    Outcome::from_reply(&reply, limits).unwrap_or_else(|| panic!("{alg}: reply {reply:?}"))
}

/// Add to `pipe` the test clock's time `at` (µs) for the call whose first key
/// is `first_key`: the patched script reads `KEYS[1]:clock` instead of `TIME`.
pub fn set_clock(pipe: &mut redis::Pipeline, first_key: &str, at: u64) {
    pipe.cmd("HSET")
        .arg(format!("{first_key}:clock"))
        .arg("s")
        .arg(at / 1_000_000)
        .arg("us")
        .arg(at % 1_000_000)
        .ignore();
}
