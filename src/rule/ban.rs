//! A rule's `ban`: after `after` limited answers for one client address
//! within `within`, the address (its IPv6 network by `client_ip.ipv6_prefix`)
//! goes on the denylist for `for`; each repeat offence within `remember` of
//! the last multiplies that by `factor`, up to `max`. The step itself is
//! `src/ban.rs`; its atomic Redis half `lua/deny_ban.lua`.

use std::fmt;
use std::time::Duration;

/// `factor` when a rule names none: every ban lasts `for` (no escalation).
pub const DEFAULT_FACTOR: u64 = 1;
/// `max` when a rule names none (or `for`, if longer).
pub const DEFAULT_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// `remember` when a rule names none: how long an offence counts towards
/// the next ban's length.
pub const DEFAULT_REMEMBER: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest `after` and `factor` a rule may set (beyond, a typo).
pub const MAX_AFTER: u64 = 1_000_000;
pub const MAX_FACTOR: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// Limited answers that make an offence (>= 1).
    pub after: u64,
    /// The window they are counted in, from the first of them.
    pub within: Duration,
    /// The first ban's length.
    pub duration: Duration,
    /// Each repeat offence within `remember` lasts this many times the last (>= 1).
    pub factor: u64,
    /// No ban lasts longer (>= `duration`).
    pub max: Duration,
    /// How long an offence is remembered after the last one.
    pub remember: Duration,
}

impl Ban {
    /// How long the `offence`-th ban (1: the first) lasts: `for × factor^(offence−1)`, at most `max`.
    pub fn length(&self, offence: u64) -> Duration {
        let mut d = self.duration;
        for _ in 1..offence {
            d = d.saturating_mul(self.factor as u32);
            if d >= self.max {
                return self.max;
            }
        }
        d.min(self.max)
    }

    /// The ban entry's note: why the address was denied.
    pub fn note(&self, rule: &str, offence: u64) -> String {
        format!("{}; offence {offence}", self.why(rule))
    }

    /// The note without its offence number (`lua/deny_ban.lua` adds it).
    pub fn why(&self, rule: &str) -> String {
        format!(
            "{} limited in {} by rule {rule}",
            self.after,
            humantime::format_duration(self.within)
        )
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Ban {
    pub fn within_ms(&self) -> u64 {
        ms(self.within)
    }
    pub fn duration_ms(&self) -> u64 {
        ms(self.duration)
    }
    pub fn max_ms(&self) -> u64 {
        ms(self.max)
    }
    pub fn remember_ms(&self) -> u64 {
        ms(self.remember)
    }
}

/// As `config check` prints it: `ban after 10 in 10m for 15m (x4 up to 7days, remembered 30days)`.
impl fmt::Display for Ban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = humantime::format_duration;
        write!(
            f,
            "ban after {} in {} for {} (x{} up to {}, remembered {})",
            self.after,
            h(self.within),
            h(self.duration),
            self.factor,
            h(self.max),
            h(self.remember)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_repeat_offence_lasts_factor_times_the_last_up_to_max() {
        let ban = Ban {
            after: 10,
            within: Duration::from_secs(600),
            duration: Duration::from_secs(900),
            factor: 4,
            max: Duration::from_secs(7 * 24 * 3600),
            remember: Duration::from_secs(30 * 24 * 3600),
        };
        assert_eq!(ban.length(1), Duration::from_secs(900));
        assert_eq!(ban.length(2), Duration::from_secs(3600));
        assert_eq!(ban.length(3), Duration::from_secs(4 * 3600));
        assert_eq!(ban.length(40), ban.max);
        assert_eq!(
            ban.note("login", 2),
            "10 limited in 10m by rule login; offence 2"
        );
    }
}
