use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::config::{parse, Overrides};
use crate::redis_conn::{Endpoint, Tls};
use crate::secret::Secret;

const BASE: &str =
    "[redis]\nurl = \"redis://127.0.0.1:6379\"\n\n[[rule]]\nname = \"a\"\nlimits = [\"5/m\"]\n";

fn base() -> Config {
    parse("base.toml", BASE, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// A config like `base()` whose endpoint shares nothing with it (clones
/// share their credentials: a reload swaps them for every clone at once).
fn fresh() -> Config {
    let mut c = base();
    let r = c.redis.as_mut().unwrap();
    r.endpoint = Endpoint::new(r.endpoint.topology().clone(), Access::default());
    c
}

fn with_access(c: &mut Config, change: impl FnOnce(&mut Access)) {
    let r = c.redis.as_mut().unwrap();
    let mut access = (*r.endpoint.access()).clone();
    change(&mut access);
    r.endpoint = Endpoint::new(r.endpoint.topology().clone(), access);
}

fn redis(c: &mut Config) -> &mut RedisConfig {
    c.redis.as_mut().unwrap()
}

type Edit = fn(&mut Config);

/// One edit per key, each changing that setting alone.
fn edits() -> Vec<(&'static str, Edit)> {
    vec![
        ("server.listen", |c| {
            c.server.listen = "127.0.0.1:1".parse().unwrap()
        }),
        ("server.admin_listen", |c| {
            c.server.admin_listen = "127.0.0.1:2".parse().unwrap()
        }),
        ("server.admin_token_env", |c| {
            c.server.admin_token_env = "OTHER".into()
        }),
        ("server.admin_token", |c| {
            c.server.admin_token = Some(Secret::new("t"))
        }),
        ("server.shutdown_grace", |c| {
            c.server.shutdown_grace = Duration::from_secs(1)
        }),
        ("server.grpc_listen", |c| {
            c.server.grpc_listen = Some("127.0.0.1:3".parse().unwrap())
        }),
        ("server.grpc_ratelimit_headers", |c| {
            c.server.grpc_ratelimit_headers ^= true
        }),
        ("server.forwarded_request", |c| {
            c.server.forwarded_request = crate::request::forwarded::ForwardedRequest::XOriginal
        }),
        ("server.max_connections", |c| c.server.max_connections += 1),
        ("server.request_timeout", |c| {
            c.server.request_timeout += Duration::from_secs(1)
        }),
        ("server.idle_timeout", |c| {
            c.server.idle_timeout += Duration::from_secs(1)
        }),
        ("redis", |c| c.redis = None),
        ("redis.url", |c| {
            redis(c).endpoint = Endpoint::single("redis://127.0.0.1:6380")
        }),
        ("redis.cluster", |c| {
            // From one server to a cluster: both keys are named.
            redis(c).endpoint = Endpoint::new(
                Topology::Cluster(vec!["redis://127.0.0.1:7000".into()]),
                Access::default(),
            )
        }),
        ("redis.sentinel", |c| {
            redis(c).endpoint = Endpoint::new(
                Topology::Sentinel {
                    master: "m".into(),
                    nodes: vec!["redis://127.0.0.1:26379".into()],
                },
                Access::default(),
            )
        }),
        ("redis.prefix", |c| c.prefix = "other".into()),
        ("redis.username", |c| {
            with_access(c, |a| a.username = Some("u".into()))
        }),
        ("redis.password", |c| {
            with_access(c, |a| a.password = Some(Secret::new("p")))
        }),
        ("redis.tls", |c| {
            with_access(c, |a| {
                let mut tls = Tls::default();
                tls.insecure_skip_verify = true;
                a.tls = Some(tls)
            })
        }),
        ("redis.timeout", |c| {
            redis(c).timeout += Duration::from_millis(1)
        }),
        ("redis.fallback_replicas", |c| {
            redis(c).fallback_replicas = crate::config::FallbackReplicas::Fixed(2)
        }),
        ("redis.deny_cache_bytes", |c| redis(c).deny_cache_bytes += 1),
        ("client_ip.trusted_proxies", |c| {
            c.client_ip.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]
        }),
        ("client_ip.ipv6_prefix", |c| c.client_ip.ipv6_prefix = 48),
        ("allowlist.default_ttl", |c| {
            c.allowlist.default_ttl += Duration::from_secs(1)
        }),
        ("allowlist.max_ttl", |c| {
            c.allowlist.max_ttl += Duration::from_secs(1)
        }),
        ("allowlist.min_prefix_v4", |c| {
            c.allowlist.min_prefix_v4 += 1
        }),
        ("allowlist.min_prefix_v6", |c| {
            c.allowlist.min_prefix_v6 += 1
        }),
        ("allowlist.allow_permanent", |c| {
            c.allowlist.allow_permanent ^= true
        }),
        ("allowlist.reap_interval", |c| {
            c.allowlist.reap_interval += Duration::from_secs(1)
        }),
        ("allowlist.state_file", |c| {
            c.allowlist.state_file = Some("state".into())
        }),
        ("allowlist.snapshot_pages_per_second", |c| {
            c.allowlist.snapshot_pages_per_second += 1
        }),
        ("allowlist.snapshot_fleet_pages_per_second", |c| {
            c.allowlist.snapshot_fleet_pages_per_second += 1
        }),
        ("allowlist.snapshot_jitter_max", |c| {
            c.allowlist.snapshot_jitter_max += Duration::from_secs(1)
        }),
        ("denylist.default_ttl", |c| {
            c.denylist.default_ttl += Duration::from_secs(1)
        }),
        ("denylist.max_ttl", |c| {
            c.denylist.max_ttl += Duration::from_secs(1)
        }),
        ("denylist.min_prefix_v4", |c| c.denylist.min_prefix_v4 += 1),
        ("denylist.min_prefix_v6", |c| c.denylist.min_prefix_v6 += 1),
        ("denylist.allow_permanent", |c| {
            c.denylist.allow_permanent ^= true
        }),
        ("denylist.reap_interval", |c| {
            c.denylist.reap_interval += Duration::from_secs(1)
        }),
        ("denylist.state_file", |c| {
            c.denylist.state_file = Some("state".into())
        }),
        ("denylist.snapshot_pages_per_second", |c| {
            c.denylist.snapshot_pages_per_second += 1
        }),
        ("denylist.snapshot_fleet_pages_per_second", |c| {
            c.denylist.snapshot_fleet_pages_per_second += 1
        }),
        ("denylist.snapshot_jitter_max", |c| {
            c.denylist.snapshot_jitter_max += Duration::from_secs(1)
        }),
        ("overrides.default_ttl", |c| {
            c.overrides.default_ttl += Duration::from_secs(1)
        }),
        ("overrides.max_ttl", |c| {
            c.overrides.max_ttl += Duration::from_secs(1)
        }),
        ("overrides.min_prefix_v4", |c| {
            c.overrides.min_prefix_v4 += 1
        }),
        ("overrides.min_prefix_v6", |c| {
            c.overrides.min_prefix_v6 += 1
        }),
        ("overrides.allow_permanent", |c| {
            c.overrides.allow_permanent ^= true
        }),
        ("overrides.reap_interval", |c| {
            c.overrides.reap_interval += Duration::from_secs(1)
        }),
        ("overrides.state_file", |c| {
            c.overrides.state_file = Some("state".into())
        }),
        ("overrides.snapshot_pages_per_second", |c| {
            c.overrides.snapshot_pages_per_second += 1
        }),
        ("overrides.snapshot_fleet_pages_per_second", |c| {
            c.overrides.snapshot_fleet_pages_per_second += 1
        }),
        ("overrides.snapshot_jitter_max", |c| {
            c.overrides.snapshot_jitter_max += Duration::from_secs(1)
        }),
        ("api.max_key_bytes", |c| c.api.max_key_bytes += 1),
        ("api.max_limits", |c| c.api.max_limits += 1),
        ("api.max_limit", |c| c.api.max_limit += 1),
        ("api.max_log_limit", |c| c.api.max_log_limit += 1),
        ("api.max_cost", |c| c.api.max_cost += 1),
        ("api.max_period", |c| {
            c.api.max_period += Duration::from_secs(1)
        }),
        ("api.shadow", |c| c.api.shadow ^= true),
        ("local_store.max_bytes", |c| c.local_store.max_bytes += 1),
        ("activity.retention_days", |c| {
            c.activity.retention_days += 1
        }),
        ("activity.online_window", |c| {
            c.activity.online_window += Duration::from_secs(1)
        }),
        ("activity.max_online", |c| c.activity.max_online += 1),
        ("rules", |c| c.rules[0].shadow ^= true),
    ]
}

#[test]
fn an_unchanged_config_has_no_changes() {
    assert_eq!(changes(&base(), &fresh()), []);
}

#[test]
fn each_setting_changed_alone_is_named_by_its_key_alone() {
    for (key, edit) in edits() {
        let mut new = fresh();
        edit(&mut new);
        let found: Vec<&str> = changes(&base(), &new).iter().map(|c| c.key).collect();
        let expected: &[&str] = match key {
            "redis.cluster" | "redis.sentinel" => &["redis.url", key],
            _ => &[key],
        };
        assert_eq!(found, expected, "changing {key}");
    }
}

/// Each key in `KEYS` is changed by one edit above, and each edit's key is
/// in `KEYS`: a setting cannot be listed without being compared, nor compared
/// without saying whether a reload applies it.
#[test]
fn every_listed_key_is_compared_and_every_compared_key_is_listed() {
    let listed: BTreeSet<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    assert_eq!(listed.len(), KEYS.len(), "a key is listed twice");
    let edited: BTreeSet<&str> = edits().iter().map(|(k, _)| *k).collect();
    assert_eq!(listed, edited);
}

#[test]
fn changes_say_whether_they_apply_now_or_after_a_restart() {
    let mut new = fresh();
    new.server.listen = "127.0.0.1:1".parse().unwrap();
    new.api.max_cost = 5;
    redis(&mut new).fallback_replicas = crate::config::FallbackReplicas::Fixed(3);
    assert_eq!(
        changes(&base(), &new),
        [
            Change {
                key: "server.listen",
                apply: Apply::Restart
            },
            Change {
                key: "redis.fallback_replicas",
                apply: Apply::Live
            },
            Change {
                key: "api.max_cost",
                apply: Apply::Live
            },
        ]
    );
    assert_eq!(apply("no.such.key"), Apply::Restart);
}

#[test]
fn credentials_that_come_with_another_redis_wait_for_it() {
    let mut new = fresh();
    redis(&mut new).endpoint = Endpoint::new(
        Topology::Single("redis://127.0.0.1:6380".into()),
        Access {
            username: Some("u".into()),
            ..Access::default()
        },
    );
    let found: Vec<&str> = changes(&base(), &new).iter().map(|c| c.key).collect();
    assert_eq!(found, ["redis.url"]);
}

#[test]
fn the_summary_names_what_applied_each_rule_change_and_what_waits() {
    let mut new = base();
    new.api.max_cost = 5;
    new.server.max_connections = 1;
    let rules = crate::rule::Changes {
        added: vec!["b".into()],
        removed: vec!["a".into()],
        changed: vec![("c".into(), "1/h".into(), "2/h".into())],
    };
    let line = summary(&changes(&base(), &new), &rules, &["server.max_connections"]);
    assert_eq!(
        line,
        "api.max_cost applied; rules added [b], removed [a], changed [c]; waiting for a restart: server.max_connections"
    );
    let none = summary(&[], &crate::rule::Changes::default(), &[]);
    assert_eq!(none, "nothing to apply");
}
