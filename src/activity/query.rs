//! The reads: online now, active over days, a tracked rule's summary and one
//! path. Shared by the admin API (`http/activity_api.rs`) and the CLI
//! (`cli/activity.rs`); callers validate their input first (`parse_*`).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::ConnectionLike;
use serde::Serialize;

use super::{day_text, hour_text, HLL_STANDARD_ERROR, MS_PER_DAY, MS_PER_HOUR, OTHER};
use crate::config::ActivityConfig;
use crate::keys::ActivityKeys;
use crate::redis_conn::StoreError;

/// Most members an online listing returns.
pub const MAX_LIST: usize = 10_000;

/// A bad query parameter: the field and why.
#[derive(Debug, PartialEq, Eq)]
pub struct BadInput {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadInput {
    BadInput {
        field,
        message: message.into(),
    }
}

/// `within`: a duration from 1s to `activity.online_window`.
pub fn parse_within(text: &str, cfg: &ActivityConfig) -> Result<Duration, BadInput> {
    let d = humantime::parse_duration(text).map_err(|e| {
        bad(
            "within",
            format!("bad duration {text:?}: {e} (e.g. \"10m\")"),
        )
    })?;
    if d < Duration::from_secs(1) || d > cfg.online_window {
        return Err(bad(
            "within",
            format!(
                "must be between 1s and activity.online_window ({})",
                humantime::format_duration(cfg.online_window)
            ),
        ));
    }
    Ok(d)
}

/// `days`: 1 to `activity.retention_days`.
pub fn parse_days(text: &str, cfg: &ActivityConfig) -> Result<u64, BadInput> {
    let max = u64::from(cfg.retention_days);
    match text.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            "days",
            format!("must be a whole number from 1 to activity.retention_days ({max})"),
        )),
    }
}

/// `hours`: 1 to `activity.retention_days` × 24.
pub fn parse_hours(text: &str, cfg: &ActivityConfig) -> Result<u64, BadInput> {
    let max = u64::from(cfg.retention_days) * 24;
    match text.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            "hours",
            format!("must be a whole number from 1 to activity.retention_days × 24 ({max})"),
        )),
    }
}

#[derive(Debug, Serialize)]
pub struct Online {
    pub within_ms: u64,
    pub online: u64,
    pub as_of_ms: u64,
    /// With `list=true`: the members, most recent first (`ip:…` or `id:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

pub async fn online<C: ConnectionLike>(
    conn: &mut C,
    keys: &ActivityKeys,
    within: Duration,
    now: u64,
    list: bool,
) -> Result<Online, StoreError> {
    let key = keys.presence();
    let from = now.saturating_sub(within.as_millis() as u64);
    let online: u64 = redis::cmd("ZCOUNT")
        .arg(&key)
        .arg(from)
        .arg("+inf")
        .query_async(conn)
        .await
        .map_err(StoreError::from)?;
    let clients = if list {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg("+inf")
            .arg(from)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_LIST)
            .query_async(conn)
            .await
            .map_err(StoreError::from)?;
        Some(members)
    } else {
        None
    };
    Ok(Online {
        within_ms: within.as_millis() as u64,
        online,
        as_of_ms: now,
        truncated: clients.is_some() && online > MAX_LIST as u64,
        clients,
    })
}

#[derive(Debug, Serialize)]
pub struct Active {
    pub days: u64,
    /// Distinct clients that sent a heartbeat on any of those UTC days.
    pub active: u64,
    pub from_day: String,
    pub to_day: String,
    /// HyperLogLog: the count is an estimate with this relative standard error.
    pub standard_error: f64,
}

/// Distinct heartbeat clients over the last `days` UTC days, today included.
pub async fn active<C: ConnectionLike>(
    conn: &mut C,
    keys: &ActivityKeys,
    days: u64,
    now: u64,
) -> Result<Active, StoreError> {
    let today = now / MS_PER_DAY;
    let first = today + 1 - days;
    let mut cmd = redis::cmd("PFCOUNT");
    for day in first..=today {
        cmd.arg(keys.active_day(super::day_number(day)));
    }
    let active: u64 = cmd.query_async(conn).await.map_err(StoreError::from)?;
    Ok(Active {
        days,
        active,
        from_day: day_text(first),
        to_day: day_text(today),
        standard_error: HLL_STANDARD_ERROR,
    })
}

#[derive(Debug, Default, Serialize)]
pub struct PathSummary {
    pub total: u64,
    /// Distinct clients over the whole range (HyperLogLog estimate).
    pub unique: u64,
    /// Requests per hour (`yyyy-mm-ddThh:00:00Z`), hours without requests left out.
    pub by_hour: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub rule: String,
    pub hours: u64,
    /// Start of the first hour and end of the last (the current) hour, ms since the epoch.
    pub from_ms: u64,
    pub to_ms: u64,
    pub from: String,
    pub to: String,
    pub total: u64,
    pub unique: u64,
    /// Per normalised path; `other` holds the paths beyond `track_paths` in each hour.
    pub paths: BTreeMap<String, PathSummary>,
    pub standard_error: f64,
}

fn hour_range(hours: u64, now: u64) -> std::ops::RangeInclusive<u64> {
    let current = now / MS_PER_HOUR;
    (current + 1 - hours)..=current
}

/// A tracked rule over the last `hours` hours, the current one included.
pub async fn summary<C: ConnectionLike>(
    conn: &mut C,
    keys: &ActivityKeys,
    rule: &str,
    hours: u64,
    now: u64,
) -> Result<Summary, StoreError> {
    let range = hour_range(hours, now);
    let mut pipe = redis::pipe();
    for h in range.clone() {
        pipe.cmd("HGETALL").arg(keys.rule_hour(rule, h).requests);
    }
    let per_hour: Vec<BTreeMap<String, u64>> =
        pipe.query_async(conn).await.map_err(StoreError::from)?;
    let mut paths: BTreeMap<String, PathSummary> = BTreeMap::new();
    let mut total = 0;
    for (h, counts) in range.clone().zip(per_hour) {
        for (path, n) in counts {
            total += n;
            let p = paths.entry(path).or_default();
            p.total += n;
            p.by_hour.insert(hour_text(h), n);
        }
    }
    // Uniques: one PFCOUNT per path over its hourly HyperLogLogs (one slot).
    let mut pipe = redis::pipe();
    let mut all = redis::cmd("PFCOUNT");
    for h in range.clone() {
        all.arg(keys.rule_hour(rule, h).clients);
    }
    pipe.add_command(all);
    for path in paths.keys() {
        let mut c = redis::cmd("PFCOUNT");
        for h in range.clone() {
            c.arg(keys.rule_hour(rule, h).path_clients(path));
        }
        pipe.add_command(c);
    }
    let uniques: Vec<u64> = pipe.query_async(conn).await.map_err(StoreError::from)?;
    for (p, u) in paths.values_mut().zip(uniques.iter().skip(1)) {
        p.unique = *u;
    }
    let (first, last) = (*range.start(), *range.end());
    Ok(Summary {
        rule: rule.to_string(),
        hours,
        from_ms: first * MS_PER_HOUR,
        to_ms: (last + 1) * MS_PER_HOUR,
        from: hour_text(first),
        to: hour_text(last + 1),
        total,
        unique: uniques.first().copied().unwrap_or(0),
        paths,
        standard_error: HLL_STANDARD_ERROR,
    })
}

#[derive(Debug, Serialize)]
pub struct PathReport {
    pub rule: String,
    pub path: String,
    pub hours: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    #[serde(flatten)]
    pub counts: PathSummary,
    pub standard_error: f64,
}

/// One path of a tracked rule (`path` normalised by the caller, or `other`).
pub async fn path<C: ConnectionLike>(
    conn: &mut C,
    keys: &ActivityKeys,
    rule: &str,
    path: &str,
    hours: u64,
    now: u64,
) -> Result<PathReport, StoreError> {
    let range = hour_range(hours, now);
    let mut pipe = redis::pipe();
    let mut unique = redis::cmd("PFCOUNT");
    for h in range.clone() {
        let k = keys.rule_hour(rule, h);
        pipe.cmd("HGET").arg(&k.requests).arg(path);
        unique.arg(k.path_clients(path));
    }
    pipe.add_command(unique);
    let mut replies: Vec<Option<u64>> = pipe.query_async(conn).await.map_err(StoreError::from)?;
    let unique = replies.pop().flatten().unwrap_or(0);
    let mut counts = PathSummary {
        unique,
        ..Default::default()
    };
    for (h, n) in range.clone().zip(replies) {
        if let Some(n) = n.filter(|&n| n > 0) {
            counts.total += n;
            counts.by_hour.insert(hour_text(h), n);
        }
    }
    Ok(PathReport {
        rule: rule.to_string(),
        path: path.to_string(),
        hours,
        from_ms: range.start() * MS_PER_HOUR,
        to_ms: (range.end() + 1) * MS_PER_HOUR,
        counts,
        standard_error: HLL_STANDARD_ERROR,
    })
}

/// A path as the API and CLI take it: normalised like a request's, or `other`.
pub fn parse_path(text: &str) -> Result<String, BadInput> {
    if text == OTHER {
        return Ok(OTHER.to_string());
    }
    let with_slash = if text.starts_with('/') {
        text.to_string()
    } else {
        format!("/{text}")
    };
    crate::path::normalize(&with_slash)
        .map(|p| p.canonical)
        .map_err(|e| bad("path", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ActivityConfig {
        ActivityConfig {
            retention_days: 30,
            online_window: Duration::from_secs(3600),
            max_online: 10,
        }
    }

    #[test]
    fn query_parameters_are_bounded_and_named() {
        let c = cfg();
        assert_eq!(parse_within("10m", &c), Ok(Duration::from_secs(600)));
        assert_eq!(parse_within("2h", &c).unwrap_err().field, "within");
        assert_eq!(parse_within("abc", &c).unwrap_err().field, "within");
        assert_eq!(parse_days("7", &c), Ok(7));
        assert_eq!(parse_days("0", &c).unwrap_err().field, "days");
        assert_eq!(parse_days("31", &c).unwrap_err().field, "days");
        assert_eq!(parse_hours("720", &c), Ok(720));
        assert_eq!(parse_hours("721", &c).unwrap_err().field, "hours");
        assert_eq!(parse_path("a/./b").unwrap(), "/a/b");
        assert_eq!(parse_path("other").unwrap(), "other");
        assert_eq!(parse_path("/%zz").unwrap_err().field, "path");
    }
}

/// One key `top` names: how often its rule limited it in the minutes asked.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Hurting {
    pub key: String,
    pub limited: u64,
}

#[derive(Debug, Serialize)]
pub struct Top {
    pub rule: String,
    pub minutes: u64,
    pub as_of_ms: u64,
    pub keys: Vec<Hurting>,
}

/// Most keys one `top` answer names.
pub const MAX_TOP: usize = 100;

/// `minutes` for `top`: 1 to the minutes kept in Redis.
pub fn parse_minutes(text: &str) -> Result<u64, BadInput> {
    let max = super::flush::TOP_MINUTES_KEPT;
    text.parse::<u64>()
        .ok()
        .filter(|m| (1..=max).contains(m))
        .ok_or(BadInput {
            field: "minutes",
            message: format!("must be a whole number of minutes from 1 to {max}"),
        })
}

/// `count` for `top`: 1 to `MAX_TOP`.
pub fn parse_count(text: &str) -> Result<usize, BadInput> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_TOP).contains(n))
        .ok_or(BadInput {
            field: "count",
            message: format!("must be a whole number from 1 to {MAX_TOP}"),
        })
}

/// The keys `rule` limited most often over the last `minutes` (this minute
/// included), across every replica: each minute's sorted set (its
/// `TOP_KEPT` most limited keys) read and summed. A key below a minute's
/// thousandth is not counted for that minute, so counts are lower bounds.
pub async fn top<C: ConnectionLike>(
    conn: &mut C,
    keys: &ActivityKeys,
    rule: &str,
    minutes: u64,
    count: usize,
    now: u64,
) -> Result<Top, StoreError> {
    let this = now / 60_000;
    let mut pipe = redis::pipe();
    for m in (this + 1).saturating_sub(minutes)..=this {
        pipe.cmd("ZRANGE")
            .arg(keys.limited_minute(rule, m))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
    }
    let minutes_read: Vec<Vec<(String, f64)>> =
        pipe.query_async(conn).await.map_err(StoreError::from)?;
    let mut sum: std::collections::HashMap<String, u64> = Default::default();
    for (key, n) in minutes_read.into_iter().flatten() {
        *sum.entry(key).or_default() += n as u64;
    }
    let mut keys: Vec<Hurting> = sum
        .into_iter()
        .map(|(key, limited)| Hurting { key, limited })
        .collect();
    keys.sort_by(|a, b| b.limited.cmp(&a.limited).then_with(|| a.key.cmp(&b.key)));
    keys.truncate(count);
    Ok(Top {
        rule: rule.to_string(),
        minutes,
        as_of_ms: now,
        keys,
    })
}
