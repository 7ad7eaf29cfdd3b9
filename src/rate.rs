//! Rates as operators write them: `"5/m"`, `"100/30s"`, `"10/2h"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One limit: at most `limit` units of cost per `period`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    /// Whole milliseconds, at least 1: the Lua scripts and `PEXPIRE` work in ms.
    pub period_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateError {
    #[error("bad rate {0:?}: expected COUNT/PERIOD, e.g. \"5/m\" or \"100/30s\"")]
    Shape(String),
    #[error("bad rate {0:?}: the count must be a whole number of at least 1")]
    Count(String),
    #[error("bad rate {0:?}: unknown period {1:?} (use s, m, h, d or a duration such as 30s, 2h)")]
    Period(String, String),
    #[error("bad rate {0:?}: the period must be a whole number of milliseconds, at least 1ms")]
    PeriodTooFine(String),
}

impl Rate {
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, RateError> {
        let (count, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| RateError::Shape(text.into()))?;
        let count = count.trim();
        let limit: u64 = match count.parse() {
            Ok(n) if n >= 1 => n,
            _ if count.is_empty() => return Err(RateError::Shape(text.into())),
            _ => return Err(RateError::Count(text.into())),
        };
        let period = period.trim();
        let duration = match period {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            // A bare number would be ambiguous (seconds? ms?), so humantime's
            // requirement of a unit is what we want here.
            other => humantime::parse_duration(other)
                .map_err(|_| RateError::Period(text.into(), other.into()))?,
        };
        if duration.subsec_nanos() % 1_000_000 != 0 || duration.as_millis() == 0 {
            return Err(RateError::PeriodTooFine(text.into()));
        }
        Ok(Rate {
            limit,
            period_ms: duration.as_millis() as u64,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.period_ms;
        match p {
            1000 => write!(f, "{}/s", self.limit),
            60_000 => write!(f, "{}/m", self.limit),
            3_600_000 => write!(f, "{}/h", self.limit),
            86_400_000 => write!(f, "{}/d", self.limit),
            _ => write!(
                f,
                "{}/{}",
                self.limit,
                humantime::format_duration(Duration::from_millis(p))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Result<Rate, RateError> {
        s.parse()
    }

    #[test]
    fn units_and_durations_parse() {
        assert_eq!(
            rate("5/m").unwrap(),
            Rate {
                limit: 5,
                period_ms: 60_000
            }
        );
        assert_eq!(
            rate("100/30s").unwrap(),
            Rate {
                limit: 100,
                period_ms: 30_000
            }
        );
        assert_eq!(
            rate("10/2h").unwrap(),
            Rate {
                limit: 10,
                period_ms: 7_200_000
            }
        );
        assert_eq!(rate("1/d").unwrap().period_ms, 86_400_000);
        assert_eq!(
            rate(" 7 / s ").unwrap(),
            Rate {
                limit: 7,
                period_ms: 1000
            }
        );
        assert_eq!(rate("3/250ms").unwrap().period_ms, 250);
    }

    #[test]
    fn bad_rates_say_what_is_wrong() {
        assert!(matches!(rate("5/x"), Err(RateError::Period(..))));
        assert!(matches!(rate("0/m"), Err(RateError::Count(_))));
        assert!(matches!(rate("-1/m"), Err(RateError::Count(_))));
        assert!(matches!(rate("five/m"), Err(RateError::Count(_))));
        assert!(matches!(rate("5"), Err(RateError::Shape(_))));
        assert!(matches!(rate("/m"), Err(RateError::Shape(_))));
        assert!(matches!(rate("5/60"), Err(RateError::Period(..))));
        assert!(matches!(rate("5/10us"), Err(RateError::PeriodTooFine(_))));
        assert!(rate("5/x").unwrap_err().to_string().contains("\"x\""));
    }

    #[test]
    fn display_round_trips() {
        for s in ["5/m", "100/30s", "10/2h", "1/d", "3/s"] {
            assert_eq!(rate(s).unwrap().to_string(), s);
        }
    }
}
