//! What a reload changed, key by key, and whether it can apply each change.
//!
//! [`KEYS`] is the list of every setting and how a reload treats it: `Live`
//! settings are applied to new requests at once (`App::reload`), `Restart`
//! ones live in sockets, connections or tasks built at start, and wait for a
//! restart (`GET /v1/status` lists them under `restart_pending`).
//!
//! [`changes`] destructures every config struct without `..`: a field added
//! to any of them fails to compile here until it is compared, and its key
//! must be in [`KEYS`] (the unit tests change every key and check both ways).

use super::{
    ActivityConfig, AllowlistConfig, ApiConfig, ClientIpConfig, Config, LocalStoreConfig,
    RedisConfig, ServerConfig,
};
use crate::redis_conn::{Access, Topology};

/// How a reload treats a setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Applied by the reload, to new requests.
    Live,
    /// Read once at start; the running value stays until a restart.
    Restart,
}

use Apply::{Live, Restart};

/// Every setting a reload can see change, by its dotted key.
pub const KEYS: &[(&str, Apply)] = &[
    ("server.listen", Restart),
    ("server.admin_listen", Restart),
    ("server.admin_token_env", Restart),
    ("server.admin_token", Restart),
    ("server.shutdown_grace", Restart),
    ("server.grpc_listen", Restart),
    // Read at start by the gRPC services (`grpc/rls.rs`, `grpc/ext_authz.rs`).
    ("server.grpc_ratelimit_headers", Restart),
    // With `client_ip.trusted_proxies`: who may describe a request, kept as started.
    ("server.forwarded_request", Restart),
    ("server.max_connections", Restart),
    ("server.request_timeout", Restart),
    ("server.idle_timeout", Restart),
    // `[redis]` added or removed: another store altogether.
    ("redis", Restart),
    ("redis.url", Restart),
    ("redis.cluster", Restart),
    ("redis.sentinel", Restart),
    ("redis.prefix", Restart),
    // Credentials and TLS files: the connections are replaced (`App::reconnect_redis`).
    ("redis.username", Live),
    ("redis.password", Live),
    ("redis.tls", Live),
    ("redis.timeout", Live),
    // "auto" or a number, either way at once: the fallback reads it per call.
    ("redis.fallback_replicas", Live),
    ("redis.deny_cache_bytes", Live),
    ("client_ip.trusted_proxies", Restart),
    ("client_ip.ipv6_prefix", Live),
    ("allowlist.default_ttl", Live),
    ("allowlist.max_ttl", Live),
    ("allowlist.min_prefix_v4", Live),
    ("allowlist.min_prefix_v6", Live),
    ("allowlist.allow_permanent", Live),
    ("allowlist.reap_interval", Restart),
    ("allowlist.state_file", Restart),
    ("allowlist.snapshot_pages_per_second", Restart),
    ("allowlist.snapshot_fleet_pages_per_second", Restart),
    ("allowlist.snapshot_jitter_max", Restart),
    ("denylist.default_ttl", Live),
    ("denylist.max_ttl", Live),
    ("denylist.min_prefix_v4", Live),
    ("denylist.min_prefix_v6", Live),
    ("denylist.allow_permanent", Live),
    ("denylist.reap_interval", Restart),
    ("denylist.state_file", Restart),
    ("denylist.snapshot_pages_per_second", Restart),
    ("denylist.snapshot_fleet_pages_per_second", Restart),
    ("denylist.snapshot_jitter_max", Restart),
    ("overrides.default_ttl", Live),
    ("overrides.max_ttl", Live),
    ("overrides.min_prefix_v4", Live),
    ("overrides.min_prefix_v6", Live),
    ("overrides.allow_permanent", Live),
    ("overrides.reap_interval", Restart),
    ("overrides.state_file", Restart),
    ("overrides.snapshot_pages_per_second", Restart),
    ("overrides.snapshot_fleet_pages_per_second", Restart),
    ("overrides.snapshot_jitter_max", Restart),
    ("api.max_key_bytes", Live),
    ("api.max_limits", Live),
    ("api.max_limit", Live),
    ("api.max_log_limit", Live),
    ("api.max_cost", Live),
    ("api.max_period", Live),
    ("api.shadow", Live),
    ("local_store.max_bytes", Live),
    ("activity.retention_days", Live),
    ("activity.online_window", Live),
    ("activity.max_online", Live),
    ("rules", Live),
];

/// How a reload treats `key` (a key missing from [`KEYS`] is treated as
/// restart-only: never claimed as applied when it was not).
pub fn apply(key: &str) -> Apply {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map_or(Restart, |(_, a)| *a)
}

/// One changed setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub apply: Apply,
}

/// Every setting that differs between `old` and `new`, in [`KEYS`] order.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut found = Vec::new();
    let mut diff = |key: &'static str, differs: bool| {
        if differs {
            found.push(key);
        }
    };
    let Config {
        server,
        redis,
        prefix,
        client_ip,
        allowlist,
        denylist,
        overrides,
        api,
        local_store,
        activity,
        rules,
    } = old;
    server_changes(server, &new.server, &mut diff);
    redis_changes(redis.as_ref(), new.redis.as_ref(), &mut diff);
    diff("redis.prefix", *prefix != new.prefix);
    client_ip_changes(client_ip, &new.client_ip, &mut diff);
    list_changes(&ALLOWLIST_KEYS, allowlist, &new.allowlist, &mut diff);
    list_changes(&DENYLIST_KEYS, denylist, &new.denylist, &mut diff);
    list_changes(&OVERRIDES_KEYS, overrides, &new.overrides, &mut diff);
    api_changes(api, &new.api, &mut diff);
    let LocalStoreConfig { max_bytes } = local_store;
    diff(
        "local_store.max_bytes",
        *max_bytes != new.local_store.max_bytes,
    );
    activity_changes(activity, &new.activity, &mut diff);
    diff(
        "rules",
        !crate::rule::Changes::between(rules, &new.rules).is_empty(),
    );
    found.sort_by_key(|k| KEYS.iter().position(|(key, _)| key == k));
    found.dedup();
    found
        .into_iter()
        .map(|key| Change {
            key,
            apply: apply(key),
        })
        .collect()
}

/// What a reload did, in the one line every replica logs (`config
/// reloaded: …`): the live settings applied, the rules added, removed and
/// changed, and every setting waiting for a restart (`pending`, all of them:
/// not only this reload's). E.g. `rules, api.max_cost applied; rules added
/// [b], removed [a], changed [c]; waiting for a restart: server.listen`.
pub fn summary(changes: &[Change], rules: &crate::rule::Changes, pending: &[&str]) -> String {
    let applied: Vec<&str> = changes
        .iter()
        .filter(|c| c.apply == Live)
        .map(|c| c.key)
        .collect();
    let mut parts = vec![if applied.is_empty() {
        "nothing to apply".to_string()
    } else {
        format!("{} applied", applied.join(", "))
    }];
    let changed: Vec<String> = rules.changed.iter().map(|c| c.0.clone()).collect();
    let lists = [
        ("added", &rules.added),
        ("removed", &rules.removed),
        ("changed", &changed),
    ];
    let named: Vec<String> = lists
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(what, names)| format!("{what} [{}]", names.join(", ")))
        .collect();
    if !named.is_empty() {
        parts.push(format!("rules {}", named.join(", ")));
    }
    if !pending.is_empty() {
        parts.push(format!("waiting for a restart: {}", pending.join(", ")));
    }
    parts.join("; ")
}

type Diff<'a> = dyn FnMut(&'static str, bool) + 'a;

fn server_changes(old: &ServerConfig, new: &ServerConfig, diff: &mut Diff<'_>) {
    let ServerConfig {
        listen,
        admin_listen,
        admin_token_env,
        admin_token,
        shutdown_grace,
        grpc_listen,
        grpc_ratelimit_headers,
        forwarded_request,
        max_connections,
        request_timeout,
        idle_timeout,
    } = old;
    diff("server.listen", *listen != new.listen);
    diff("server.admin_listen", *admin_listen != new.admin_listen);
    diff(
        "server.admin_token_env",
        *admin_token_env != new.admin_token_env,
    );
    diff("server.admin_token", *admin_token != new.admin_token);
    diff(
        "server.shutdown_grace",
        *shutdown_grace != new.shutdown_grace,
    );
    diff("server.grpc_listen", *grpc_listen != new.grpc_listen);
    diff(
        "server.grpc_ratelimit_headers",
        *grpc_ratelimit_headers != new.grpc_ratelimit_headers,
    );
    diff(
        "server.forwarded_request",
        *forwarded_request != new.forwarded_request,
    );
    diff(
        "server.max_connections",
        *max_connections != new.max_connections,
    );
    diff(
        "server.request_timeout",
        *request_timeout != new.request_timeout,
    );
    diff("server.idle_timeout", *idle_timeout != new.idle_timeout);
}

fn redis_changes(old: Option<&RedisConfig>, new: Option<&RedisConfig>, diff: &mut Diff<'_>) {
    let (Some(old), Some(new)) = (old, new) else {
        diff("redis", old.is_some() != new.is_some());
        return;
    };
    let RedisConfig {
        endpoint,
        timeout,
        fallback_replicas,
        deny_cache_bytes,
    } = old;
    let (before, after) = (endpoint.topology(), new.endpoint.topology());
    if before != after {
        for t in [before, after] {
            diff(topology_key(t), true);
        }
    }
    // Credentials for another Redis come with it, at the restart: the
    // running connections keep theirs (so they are not compared then).
    let Access {
        username,
        password,
        tls,
    } = &*endpoint.access();
    let access = new.endpoint.access();
    let same = before == after;
    diff("redis.username", same && *username != access.username);
    diff("redis.password", same && *password != access.password);
    diff("redis.tls", same && *tls != access.tls);
    diff("redis.timeout", *timeout != new.timeout);
    diff(
        "redis.fallback_replicas",
        *fallback_replicas != new.fallback_replicas,
    );
    diff(
        "redis.deny_cache_bytes",
        *deny_cache_bytes != new.deny_cache_bytes,
    );
}

fn topology_key(t: &Topology) -> &'static str {
    match t {
        Topology::Single(_) => "redis.url",
        Topology::Cluster(_) => "redis.cluster",
        Topology::Sentinel { .. } => "redis.sentinel",
    }
}

fn client_ip_changes(old: &ClientIpConfig, new: &ClientIpConfig, diff: &mut Diff<'_>) {
    let ClientIpConfig {
        trusted_proxies,
        ipv6_prefix,
    } = old;
    diff(
        "client_ip.trusted_proxies",
        *trusted_proxies != new.trusted_proxies,
    );
    diff("client_ip.ipv6_prefix", *ipv6_prefix != new.ipv6_prefix);
}

/// The settings of a list section, in `list_changes`' order.
const ALLOWLIST_KEYS: [&str; 10] = [
    "allowlist.default_ttl",
    "allowlist.max_ttl",
    "allowlist.min_prefix_v4",
    "allowlist.min_prefix_v6",
    "allowlist.allow_permanent",
    "allowlist.reap_interval",
    "allowlist.state_file",
    "allowlist.snapshot_pages_per_second",
    "allowlist.snapshot_fleet_pages_per_second",
    "allowlist.snapshot_jitter_max",
];
const DENYLIST_KEYS: [&str; 10] = [
    "denylist.default_ttl",
    "denylist.max_ttl",
    "denylist.min_prefix_v4",
    "denylist.min_prefix_v6",
    "denylist.allow_permanent",
    "denylist.reap_interval",
    "denylist.state_file",
    "denylist.snapshot_pages_per_second",
    "denylist.snapshot_fleet_pages_per_second",
    "denylist.snapshot_jitter_max",
];

const OVERRIDES_KEYS: [&str; 10] = [
    "overrides.default_ttl",
    "overrides.max_ttl",
    "overrides.min_prefix_v4",
    "overrides.min_prefix_v6",
    "overrides.allow_permanent",
    "overrides.reap_interval",
    "overrides.state_file",
    "overrides.snapshot_pages_per_second",
    "overrides.snapshot_fleet_pages_per_second",
    "overrides.snapshot_jitter_max",
];

/// `[allowlist]`, `[denylist]` or `[overrides]`: `keys` names its settings.
fn list_changes(
    keys: &[&'static str; 10],
    old: &AllowlistConfig,
    new: &AllowlistConfig,
    diff: &mut Diff<'_>,
) {
    let AllowlistConfig {
        section: _,
        default_ttl,
        max_ttl,
        min_prefix_v4,
        min_prefix_v6,
        allow_permanent,
        reap_interval,
        state_file,
        snapshot_pages_per_second,
        snapshot_fleet_pages_per_second,
        snapshot_jitter_max,
    } = old;
    let differs = [
        *default_ttl != new.default_ttl,
        *max_ttl != new.max_ttl,
        *min_prefix_v4 != new.min_prefix_v4,
        *min_prefix_v6 != new.min_prefix_v6,
        *allow_permanent != new.allow_permanent,
        *reap_interval != new.reap_interval,
        *state_file != new.state_file,
        *snapshot_pages_per_second != new.snapshot_pages_per_second,
        *snapshot_fleet_pages_per_second != new.snapshot_fleet_pages_per_second,
        *snapshot_jitter_max != new.snapshot_jitter_max,
    ];
    for (key, differs) in keys.iter().zip(differs) {
        diff(key, differs);
    }
}

fn api_changes(old: &ApiConfig, new: &ApiConfig, diff: &mut Diff<'_>) {
    let ApiConfig {
        max_key_bytes,
        max_limits,
        max_limit,
        max_log_limit,
        max_cost,
        max_period,
        shadow,
    } = old;
    diff("api.max_key_bytes", *max_key_bytes != new.max_key_bytes);
    diff("api.max_limits", *max_limits != new.max_limits);
    diff("api.max_limit", *max_limit != new.max_limit);
    diff("api.max_log_limit", *max_log_limit != new.max_log_limit);
    diff("api.max_cost", *max_cost != new.max_cost);
    diff("api.max_period", *max_period != new.max_period);
    diff("api.shadow", *shadow != new.shadow);
}

fn activity_changes(old: &ActivityConfig, new: &ActivityConfig, diff: &mut Diff<'_>) {
    let ActivityConfig {
        retention_days,
        online_window,
        max_online,
    } = old;
    diff(
        "activity.retention_days",
        *retention_days != new.retention_days,
    );
    diff(
        "activity.online_window",
        *online_window != new.online_window,
    );
    diff("activity.max_online", *max_online != new.max_online);
}

#[cfg(test)]
mod tests;
