//! `[activity]` and the rule keys `track` / `track_paths` (`src/activity/`).
//!
//! Activity counters live in Redis only: every replica flushes into the same
//! keys, and that is what makes "who is online" true across replicas. With
//! the embedded store a tracked rule is refused here, and the activity
//! endpoints answer 503 saying Redis is needed.

use std::time::Duration;

use super::Collector;
use crate::config::raw::{RawConfig, RawRule};
use crate::config::ActivityConfig;

use crate::config::DEFAULT_TRACK_PATHS;
/// Upper bound on `track_paths`: each path costs a hash field and a
/// HyperLogLog (up to 12 KB) per hour of retention.
pub const MAX_TRACK_PATHS: i64 = 10_000;
/// Upper bound on `retention_days` (a year and a day).
pub const MAX_RETENTION_DAYS: i64 = 366;

pub(super) fn validate(c: &mut Collector<'_>, raw: &RawConfig) -> Option<ActivityConfig> {
    let a = &raw.activity;
    let before = c.issues.len();
    let days = *a.retention_days.get_ref();
    if !(1..=MAX_RETENTION_DAYS).contains(&days) {
        c.push(
            "activity.retention_days",
            Some(&a.retention_days),
            format!("must be between 1 and {MAX_RETENTION_DAYS}"),
        );
    }
    let window = c.duration("activity.online_window", &a.online_window);
    if window.is_some_and(|w| w < Duration::from_secs(1) || w > Duration::from_secs(7 * 86_400)) {
        c.push(
            "activity.online_window",
            Some(&a.online_window),
            "must be between 1s and 7d",
        );
    }
    let max_online = *a.max_online.get_ref();
    if !(1..=100_000_000).contains(&max_online) {
        c.push(
            "activity.max_online",
            Some(&a.max_online),
            "must be between 1 and 100000000",
        );
    }
    for (i, r) in raw.rule.iter().enumerate() {
        if raw.redis.is_none() && r.track.as_ref().is_some_and(|t| *t.get_ref()) {
            c.push(
                format!("rule[{i}].track"),
                r.track.as_ref(),
                "activity counters live in Redis (set [redis] url, --redis or TOLLGATE_REDIS_URL): the embedded store has none",
            );
        }
    }
    (c.issues.len() == before).then(|| ActivityConfig {
        retention_days: days as u32,
        online_window: window.unwrap_or_default(),
        max_online: max_online as u64,
    })
}

/// A rule's `track` / `track_paths`: `Some(track_paths)` when tracked.
pub(super) fn track(c: &mut Collector<'_>, i: usize, r: &RawRule) -> Option<u32> {
    let tracked = r.track.as_ref().is_some_and(|t| *t.get_ref());
    let paths = match &r.track_paths {
        None => DEFAULT_TRACK_PATHS,
        Some(p) if !tracked => {
            c.push(
                format!("rule[{i}].track_paths"),
                Some(p),
                "only for a tracked rule (track = true)",
            );
            return None;
        }
        Some(p) if !(1..=MAX_TRACK_PATHS).contains(p.get_ref()) => {
            c.push(
                format!("rule[{i}].track_paths"),
                Some(p),
                format!("must be between 1 and {MAX_TRACK_PATHS}"),
            );
            return None;
        }
        Some(p) => *p.get_ref() as u32,
    };
    if tracked && r.descriptor.is_some() {
        c.push(
            format!("rule[{i}].track"),
            r.track.as_ref(),
            "not for a descriptor rule (Envoy's rate limit service sends no path)",
        );
    }
    tracked.then_some(paths)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Overrides};

    fn issues(text: &str, redis: bool) -> Vec<String> {
        let ov = Overrides {
            redis_url: redis.then(|| "redis://127.0.0.1:6379".to_string()),
            ..Default::default()
        };
        match parse("t.toml", text, &ov) {
            Ok(_) => vec![],
            Err(e) => e
                .issues
                .iter()
                .map(|i| format!("{}: {}", i.key, i.message))
                .collect(),
        }
    }

    #[test]
    fn activity_keys_are_checked_and_named() {
        let found = issues(
            "[activity]\nretention_days = 0\nonline_window = \"10x\"\nmax_online = 0\n",
            true,
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with("activity.retention_days"),
            "{found:#?}"
        );
        assert!(found[1].starts_with("activity.online_window"), "{found:#?}");
        assert!(found[2].starts_with("activity.max_online"), "{found:#?}");
        assert!(issues("[activity]\nonline_window = \"8d\"\n", true)[0]
            .starts_with("activity.online_window: must be between"));
    }

    #[test]
    fn track_paths_is_bounded_and_needs_track_and_redis() {
        let rule = |extra: &str| format!("[[rule]]\nname = \"p\"\nlimits = [\"5/s\"]\n{extra}\n");
        assert!(issues(&rule("track = true\ntrack_paths = 50"), true).is_empty());
        let found = issues(&rule("track = true\ntrack_paths = 0"), true);
        assert!(
            found[0].starts_with("rule[0].track_paths: must be between"),
            "{found:#?}"
        );
        let found = issues(&rule("track_paths = 5"), true);
        assert!(
            found[0].starts_with("rule[0].track_paths: only for"),
            "{found:#?}"
        );
        let found = issues(&rule("track = true"), false);
        assert!(
            found[0].starts_with("rule[0].track: activity counters live in Redis"),
            "{found:#?}"
        );
        let ov = Overrides {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..Default::default()
        };
        let cfg = parse("t.toml", &rule("track = true"), &ov).unwrap();
        assert_eq!(cfg.rules[0].track, Some(crate::config::DEFAULT_TRACK_PATHS));
        assert_eq!(cfg.activity.retention_days, 30);
    }
}
