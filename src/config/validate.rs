//! One pass over the raw config that collects every problem with its key.

mod activity;
mod ban;
mod caps;
mod descriptor;
mod report;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawConfig, RawLease, RawRule};
use super::{
    line_of, AllowlistConfig, ClientIpConfig, Config, Issue, Overrides, RedisConfig, ServerConfig,
};
use crate::limiter::{Algorithm, LeaseSize};
use crate::rate::Rate;
use crate::redis_conn::{Access, Endpoint, Tls, Topology};
use crate::request::forwarded::ForwardedRequest;
use crate::rule::{AllowlistMode, Count, KeyTemplate, Matcher, OnRedisError, Rule};

struct Collector<'t> {
    text: &'t str,
    issues: Vec<Issue>,
}

impl Collector<'_> {
    fn push<T>(
        &mut self,
        key: impl Into<String>,
        at: Option<&Spanned<T>>,
        message: impl Into<String>,
    ) {
        let line = at.and_then(|s| line_of_span(self.text, s.span()));
        self.issues.push(Issue {
            key: key.into(),
            line,
            message: message.into(),
            given_by: None,
        });
    }

    /// Parse a spanned string with `FromStr`, recording a problem on failure.
    fn parse<T: FromStr>(&mut self, key: &str, value: &Spanned<String>) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        match value.get_ref().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(key, Some(value), e.to_string());
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: &Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.push(
                    key,
                    Some(value),
                    format!(
                        "bad duration {:?}: {e} (e.g. \"25ms\", \"24h\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn addr(&mut self, key: &str, value: &Spanned<String>) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.push(
                    key,
                    Some(value),
                    format!(
                        "bad address {:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// The line of a span, or none for a value that came from defaults or the CLI.
fn line_of_span(text: &str, span: std::ops::Range<usize>) -> Option<usize> {
    (span != (0..0)).then(|| line_of(text, span.start))
}

pub(super) fn validate(raw: RawConfig, text: &str, ov: &Overrides) -> Result<Config, Vec<Issue>> {
    let mut c = Collector {
        text,
        issues: Vec::new(),
    };
    let mut raw = raw;
    apply_overrides(&mut raw, ov);

    // One function per section, each returning its part only when all of it
    // checked out; the sections are checked in the order of the file.
    let listeners = server(&mut c, &raw.server);
    let prefix = prefix(&mut c, &raw, ov);
    let redis = raw.redis.as_ref().and_then(|r| redis(&mut c, r));
    let client_ip = client_ip(&mut c, &raw.client_ip);
    let allowlist = list_section(&mut c, "allowlist", &raw.allowlist);
    let denylist = list_section(&mut c, "denylist", &raw.denylist);
    let overrides = list_section(&mut c, "overrides", &raw.overrides);
    // One state file per list: each file holds one list's table.
    if raw.denylist.state_file.is_some() && raw.denylist.state_file == raw.allowlist.state_file {
        c.push::<String>(
            "denylist.state_file",
            None,
            "is allowlist.state_file too; each list keeps its own file",
        );
    }
    let (ours, others) = (
        &raw.overrides.state_file,
        [&raw.allowlist.state_file, &raw.denylist.state_file],
    );
    if ours.is_some() && others.contains(&ours) {
        c.push::<String>(
            "overrides.state_file",
            None,
            "is another list's state_file too; each list keeps its own file",
        );
    }
    let (server_limits, api, local_store) = caps::validate(&mut c, &raw, ov);
    let rules = rules(&mut c, &raw, ov);
    let activity = activity::validate(&mut c, &raw);

    let (
        Some(listeners),
        Some(prefix),
        Some(client_ip),
        Some(allowlist),
        Some(denylist),
        Some(overrides),
        Some(activity),
    ) = (
        listeners, prefix, client_ip, allowlist, denylist, overrides, activity,
    )
    else {
        return Err(c.issues);
    };
    if !c.issues.is_empty() {
        return Err(c.issues);
    }
    Ok(Config {
        server: ServerConfig {
            listen: listeners.listen,
            admin_listen: listeners.admin_listen,
            admin_token_env: raw.server.admin_token_env,
            admin_token: ov.admin_token.clone(),
            shutdown_grace: listeners.shutdown_grace,
            grpc_listen: listeners.grpc_listen,
            grpc_ratelimit_headers: raw.server.grpc_ratelimit_headers,
            forwarded_request: listeners.forwarded_request,
            max_connections: server_limits.max_connections,
            request_timeout: server_limits.request_timeout,
            idle_timeout: server_limits.idle_timeout,
        },
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
    })
}

/// `[server]` but its connection limits (`caps.rs`): where to listen and how.
struct Listeners {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    shutdown_grace: Duration,
    grpc_listen: Option<SocketAddr>,
    forwarded_request: ForwardedRequest,
}

fn server(c: &mut Collector, s: &super::raw::RawServer) -> Option<Listeners> {
    let listen = c.addr("server.listen", &s.listen);
    let admin_listen = c.addr("server.admin_listen", &s.admin_listen);
    let shutdown_grace = c.duration("server.shutdown_grace", &s.shutdown_grace);
    let grpc_listen = s
        .grpc_listen
        .as_ref()
        .map(|a| c.addr("server.grpc_listen", a));
    let forwarded_request =
        c.parse::<ForwardedRequest>("server.forwarded_request", &s.forwarded_request);
    Some(Listeners {
        listen: listen?,
        admin_listen: admin_listen?,
        shutdown_grace: shutdown_grace?,
        // Given and unreadable: no config.
        grpc_listen: grpc_listen.map_or(Some(None), |a| a.map(Some))?,
        forwarded_request: forwarded_request?,
    })
}

/// The key prefix. It names the embedded store's keys too, so it applies
/// without `[redis]`.
fn prefix(c: &mut Collector, raw: &RawConfig, ov: &Overrides) -> Option<String> {
    let prefix = match (&ov.redis_prefix, &raw.redis) {
        (Some(p), _) => Spanned::new(0..0, p.clone()),
        (None, Some(r)) => r.prefix.clone(),
        (None, None) => Spanned::new(0..0, "tg".into()),
    };
    let prefix_ok = !prefix.get_ref().is_empty()
        && prefix
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !prefix_ok {
        c.push("redis.prefix", Some(&prefix), "must be non-empty letters, digits, '-', '_', '.' or ':' (no braces: tollgate builds the {hash tags})");
        return None;
    }
    Some(prefix.into_inner())
}

/// `[redis]`: one endpoint, its access and timeouts.
fn redis(c: &mut Collector, r: &super::raw::RawRedis) -> Option<RedisConfig> {
    let text = c.text;
    let timeout = c.duration("redis.timeout", &r.timeout);
    if timeout == Some(Duration::ZERO) {
        c.push("redis.timeout", Some(&r.timeout), "must be more than 0");
    }
    let fallback_replicas = fallback_replicas(c, &r.fallback_replicas);
    let endpoint = match (&r.url, &r.cluster, &r.sentinel) {
        (Some(url), None, None) => Some((
            "redis.url",
            line_of_span(text, url.span()),
            Topology::Single(url.get_ref().clone()),
        )),
        (None, Some(nodes), None) if nodes.get_ref().is_empty() => {
            c.push("redis.cluster", Some(nodes), "needs at least one node URL");
            None
        }
        (None, Some(nodes), None) => Some((
            "redis.cluster",
            line_of_span(text, nodes.span()),
            Topology::Cluster(nodes.get_ref().clone()),
        )),
        (None, None, Some(s)) if s.get_ref().nodes.is_empty() || s.get_ref().master.is_empty() => {
            c.push(
                "redis.sentinel",
                Some(s),
                "needs master = \"NAME\" and at least one node URL",
            );
            None
        }
        (None, None, Some(s)) => {
            let sentinel = s.get_ref();
            Some((
                "redis.sentinel",
                line_of_span(text, s.span()),
                Topology::Sentinel {
                    master: sentinel.master.clone(),
                    nodes: sentinel.nodes.clone(),
                },
            ))
        }
        (None, None, None) => {
            c.push::<()>("redis.url", None, "missing: [redis] needs url, cluster or sentinel (or set TOLLGATE_REDIS_URL / --redis); remove [redis] for the embedded store");
            None
        }
        _ => {
            c.push::<()>("redis", None, "give one of url, cluster and sentinel");
            None
        }
    };
    if let Some(old) = &r.deny_cache_size {
        c.push(
            "redis.deny_cache_size",
            Some(old),
            "replaced by redis.deny_cache_bytes: the deny cache is now bounded in bytes (default 16 MiB, some 50 000 denials)",
        );
    }
    let access = redis_access(c, r);
    if let Some((key, line, topology)) = endpoint {
        let endpoint = Endpoint::new(topology, access.clone().unwrap_or_default());
        if r.tls.is_some() && endpoint.validate().is_ok() && !endpoint.is_tls() {
            c.push::<()>(
                "redis.tls",
                None,
                format!("is set but {key} is not rediss:// (TLS needs rediss:// URLs)"),
            );
        }
        if let Err(e) = endpoint.validate() {
            c.issues.push(Issue {
                key: key.into(),
                line,
                message: e.to_string(),
                given_by: None,
            });
        } else if let (Some(timeout), Some(_)) = (timeout, access) {
            return Some(RedisConfig {
                endpoint,
                timeout,
                fallback_replicas: fallback_replicas?,
                deny_cache_bytes: r.deny_cache_bytes,
            });
        }
    }
    None
}

/// `redis.fallback_replicas`: `"auto"` or a fixed count of at least 1.
fn fallback_replicas(
    c: &mut Collector,
    v: &Spanned<super::raw::RawFallbackReplicas>,
) -> Option<super::FallbackReplicas> {
    use super::raw::RawFallbackReplicas::{Count, Other, Word};
    use super::FallbackReplicas;
    let given = match v.get_ref() {
        Word(w) if w == "auto" => return Some(FallbackReplicas::Auto),
        Count(n) if (1..=i64::from(u32::MAX)).contains(n) => {
            return Some(FallbackReplicas::Fixed(*n as u32))
        }
        Count(n) => n.to_string(),
        Word(w) => format!("{w:?}"),
        Other(x) => x.to_string(),
    };
    c.push(
        "redis.fallback_replicas",
        Some(v),
        format!("{given}: must be \"auto\" (the live replicas the fleet registry last saw) or a whole number of at least 1"),
    );
    None
}

/// `[client_ip]`: who may tell us the client's address.
fn client_ip(c: &mut Collector, ci: &super::raw::RawClientIp) -> Option<ClientIpConfig> {
    let before = c.issues.len();
    let mut trusted = Vec::new();
    for (i, t) in ci.trusted_proxies.iter().enumerate() {
        // The allowlist's parser: `::ffff:` networks are IPv4, like client addresses.
        match crate::net::parse_net(t.get_ref()) {
            Ok(net) => trusted.push(net),
            Err(e) => c.push(
                format!("client_ip.trusted_proxies[{i}]"),
                Some(t),
                e.to_string(),
            ),
        }
    }
    let v6 = *ci.ipv6_prefix.get_ref();
    if !(1..=128).contains(&v6) {
        c.push(
            "client_ip.ipv6_prefix",
            Some(&ci.ipv6_prefix),
            "must be between 1 and 128",
        );
    }
    (c.issues.len() == before).then_some(ClientIpConfig {
        trusted_proxies: trusted,
        ipv6_prefix: v6 as u8,
    })
}

/// `[allowlist]` or `[denylist]` (`section`): entry lifetimes, prefix
/// floors, the reaper and snapshots.
fn list_section(
    c: &mut Collector,
    section: &'static str,
    al: &super::raw::RawAllowlist,
) -> Option<AllowlistConfig> {
    let before = c.issues.len();
    let key = |name: &str| format!("{section}.{name}");
    let default_ttl = c.duration(&key("default_ttl"), &al.default_ttl);
    let max_ttl = c.duration(&key("max_ttl"), &al.max_ttl);
    // A TTL of 0 means "never expires" in the store: a default that rounds to
    // 0 ms would make every entry added without a ttl permanent, even with
    // allow_permanent = false. Permanent entries are asked for with "never".
    if default_ttl.is_some_and(|d| d < Duration::from_millis(1)) {
        c.push(
            key("default_ttl"),
            Some(&al.default_ttl),
            format!("must be at least 1ms (a permanent entry is added with ttl = \"never\", which needs {section}.allow_permanent = true)"),
        );
    }
    if max_ttl.is_some_and(|m| m < Duration::from_millis(1)) {
        c.push(key("max_ttl"), Some(&al.max_ttl), "must be at least 1ms");
    }
    if let (Some(d), Some(m)) = (default_ttl, max_ttl) {
        if d > m {
            c.push(
                key("default_ttl"),
                Some(&al.default_ttl),
                format!("is longer than {section}.max_ttl"),
            );
        }
    }

    for (key, value, max) in [
        (&key("min_prefix_v4"), &al.min_prefix_v4, 32),
        (&key("min_prefix_v6"), &al.min_prefix_v6, 128),
    ] {
        if !(1..=max).contains(value.get_ref()) {
            c.push(key, Some(value), format!("must be between 1 and {max}"));
        }
    }
    let reap_interval = c.duration(&key("reap_interval"), &al.reap_interval);
    if reap_interval == Some(Duration::ZERO) {
        c.push(
            key("reap_interval"),
            Some(&al.reap_interval),
            "must be more than 0",
        );
    }

    let pages = &al.snapshot_pages_per_second;
    let fleet_pages = &al.snapshot_fleet_pages_per_second;
    for (key, value) in [
        (&key("snapshot_pages_per_second"), pages),
        (&key("snapshot_fleet_pages_per_second"), fleet_pages),
    ] {
        if !(1..=100_000).contains(value.get_ref()) {
            c.push(key, Some(value), "must be between 1 and 100000");
        }
    }
    let jitter_max = c.duration(&key("snapshot_jitter_max"), &al.snapshot_jitter_max);
    if c.issues.len() != before {
        return None;
    }
    Some(AllowlistConfig {
        section,
        default_ttl: default_ttl?,
        max_ttl: max_ttl?,
        min_prefix_v4: *al.min_prefix_v4.get_ref() as u8,
        min_prefix_v6: *al.min_prefix_v6.get_ref() as u8,
        allow_permanent: al.allow_permanent,
        reap_interval: reap_interval?,
        state_file: al.state_file.clone().map(std::path::PathBuf::from),
        snapshot_pages_per_second: *pages.get_ref() as u32,
        snapshot_fleet_pages_per_second: *fleet_pages.get_ref() as u32,
        snapshot_jitter_max: jitter_max?,
    })
}

/// Every `[[rule]]`, names unique, descriptors not repeated.
fn rules(c: &mut Collector, raw: &RawConfig, ov: &Overrides) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.rule.iter().enumerate() {
        if let Some(rule) = validate_rule(ov.shadow, c, i, r, &mut names) {
            rules.push(rule);
        }
    }
    descriptor::duplicates(c, &raw.rule);
    rules
}

fn validate_rule(
    shadow_all: bool,
    c: &mut Collector<'_>,
    i: usize,
    r: &RawRule,
    names: &mut HashSet<String>,
) -> Option<Rule> {
    let at = |field: &str| format!("rule[{i}].{field}");
    let before = c.issues.len();
    let name = r.name.get_ref();
    if name.is_empty()
        || !name.starts_with(|ch: char| ch.is_ascii_alphabetic())
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        c.push(at("name"), Some(&r.name), format!("bad rule name {name:?}: use letters, digits, '_', '-', '.', starting with a letter"));
    } else if !names.insert(name.clone()) {
        c.push(
            at("name"),
            Some(&r.name),
            format!("duplicate rule name {name:?}"),
        );
    }
    let key = match KeyTemplate::parse(r.key.get_ref()) {
        Ok(k) => Some(k),
        Err(e) => {
            c.push(at("key"), Some(&r.key), e.to_string());
            None
        }
    };
    // Each parsed rate with its index in `limits`: an element that did not
    // parse is reported once, as a bad rate, and is in no later check.
    let mut parsed: Vec<(usize, Rate)> = Vec::new();
    for (j, spec) in r.limits.iter().enumerate() {
        if let Some(rate) = c.parse::<Rate>(&format!("rule[{i}].limits[{j}]"), spec) {
            parsed.push((j, rate));
        }
    }
    let algorithm = c.parse::<Algorithm>(&at("algorithm"), &r.algorithm);
    let allowlist = c.parse::<AllowlistMode>(&at("allowlist"), &r.allowlist);
    let on_redis_error = c.parse::<OnRedisError>(&at("on_redis_error"), &r.on_redis_error);
    let count = c.parse::<Count>(&at("count"), &r.count);
    if count == Some(Count::Reported) && r.limits.is_empty() {
        c.push(
            at("count"),
            Some(&r.count),
            "count = \"reported\" needs limits: reports charge a rule's limits".to_string(),
        );
    }
    let report_statuses = report::statuses(c, i, r, count);
    let descriptor = descriptor::validate(c, i, r);
    // With an unreadable `allowlist`, whether limits are needed is unknown:
    // report the root cause only.
    if r.limits.is_empty() && allowlist.is_some_and(|a| a != AllowlistMode::Require) {
        c.push(at("limits"), Some(&r.name), "at least one rate is required, e.g. [\"5/m\"] (a rule without limits must be a pure gate: allowlist = \"require\")");
    }
    let mut first_with_period = std::collections::HashMap::new();
    for (j, rate) in &parsed {
        let first = *first_with_period.entry(rate.period_ms).or_insert(*j);
        if first != *j {
            c.push(
                format!("rule[{i}].limits[{j}]"),
                r.limits.get(*j),
                format!(
                    "limits[{first}] and limits[{j}] have the same period ({}); keep the tighter one",
                    humantime::format_duration(rate.period())
                ),
            );
        }
    }
    let limits: Vec<Rate> = parsed.into_iter().map(|(_, rate)| rate).collect();
    let burst = validate_burst(c, i, r, algorithm, limits.len());
    let lease = validate_lease(c, i, r, algorithm, count);
    if algorithm == Some(Algorithm::Gcra) {
        // The script's arithmetic is exact only below 2^53 (`check/caps.rs`).
        for (j, rate) in limits.iter().enumerate() {
            let bucket = burst.unwrap_or(rate.limit);
            if !crate::check::caps::gcra_exact(bucket, rate.period_ms) {
                let message = crate::check::caps::gcra_range_message(bucket, rate.period_ms);
                match burst {
                    Some(_) => c.push(format!("rule[{i}].burst"), r.burst.as_ref(), message),
                    None => c.push(format!("rule[{i}].limits[{j}]"), r.limits.get(j), message),
                }
            }
        }
    }
    let track = activity::track(c, i, r);
    let ban = ban::ban(c, i, r, key.as_ref());
    let m = &r.matcher;
    for (field, value) in [
        ("path_prefix", &m.path_prefix),
        ("path", &m.path),
        ("path_starts_with", &m.path_starts_with),
    ] {
        if let Some(p) = value {
            if !p.get_ref().starts_with('/') {
                c.push(
                    at(&format!("match.{field}")),
                    Some(p),
                    format!("{:?} must start with '/'", p.get_ref()),
                );
            } else if let Err(e) = crate::path::check_configured(p.get_ref()) {
                let normal = match e {
                    crate::path::ConfiguredPathError::NotNormal(n) => n,
                    crate::path::ConfiguredPathError::Bad(b) => b.0,
                };
                // Requests are matched on normalised paths: this one could never match.
                c.push(
                    at(&format!("match.{field}")),
                    Some(p),
                    format!(
                        "{:?} is not a normalised path (requests are matched normalised); write {normal:?}",
                        p.get_ref()
                    ),
                );
            }
        }
    }
    if let Some(methods) = &m.methods {
        for (j, meth) in methods.iter().enumerate() {
            let name = meth.get_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) {
                c.push(
                    at(&format!("match.methods[{j}]")),
                    Some(meth),
                    format!("{name:?} is not an HTTP method"),
                );
            }
        }
    }
    if c.issues.len() > before {
        return None;
    }
    let limit_specs: Vec<String> = r
        .limits
        .iter()
        .map(|s| s.get_ref().trim().to_string())
        .collect();
    let item_names = (0..limit_specs.len())
        .map(|i| Rule::item_name(name, &limit_specs, i))
        .collect();
    Some(Rule {
        name: name.clone(),
        matcher: Matcher {
            path_prefix: m.path_prefix.as_ref().map(|p| {
                let p = p.get_ref();
                match p.strip_suffix('/') {
                    Some(bare) if !bare.is_empty() => bare.to_string(),
                    _ => p.clone(),
                }
            }),
            path_starts_with: m.path_starts_with.as_ref().map(|p| p.get_ref().clone()),
            path: m.path.as_ref().map(|p| {
                let p = p.get_ref();
                match p.strip_suffix('/') {
                    Some(bare) if !bare.is_empty() => bare.to_string(),
                    _ => p.clone(),
                }
            }),
            methods: m
                .methods
                .as_ref()
                .map(|v| v.iter().map(|s| s.get_ref().to_ascii_uppercase()).collect()),
            host: m.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
        },
        key: key?,
        limit_specs,
        item_names,
        counters: Default::default(),
        limits,
        algorithm: algorithm?,
        burst,
        allowlist: allowlist?,
        on_redis_error: on_redis_error?,
        count: count?,
        report_statuses,
        shadow: r.shadow || shadow_all,
        lease,
        descriptor,
        track,
        ban,
    })
}

/// `burst`: gcra's bucket size. One limit only: with several, each would need
/// its own (a short limit such as "50/5s" next to "10/s" is a burst already).
fn validate_burst(
    c: &mut Collector<'_>,
    i: usize,
    r: &RawRule,
    algorithm: Option<Algorithm>,
    n_limits: usize,
) -> Option<u64> {
    let b = r.burst.as_ref()?;
    let key = format!("rule[{i}].burst");
    if algorithm.is_some_and(|a| a != Algorithm::Gcra) {
        c.push(key, Some(b), "only the gcra algorithm takes a burst");
    } else if *b.get_ref() < 1 {
        c.push(key, Some(b), "must be a whole number of at least 1");
    } else if n_limits != 1 {
        c.push(
            key,
            Some(b),
            "a burst needs exactly one limit (for several, add a short limit instead, e.g. \"50/5s\")",
        );
    } else {
        return Some(*b.get_ref() as u64);
    }
    None
}

/// `lease`: slices of a hot key's quota, for fixed_window and one-limit gcra
/// rules that every request charges (see `limiter/lease.rs`).
fn validate_lease(
    c: &mut Collector<'_>,
    i: usize,
    r: &RawRule,
    algorithm: Option<Algorithm>,
    count: Option<Count>,
) -> Option<LeaseSize> {
    let l = r.lease.as_ref()?;
    let key = format!("rule[{i}].lease");
    let size = match l.get_ref() {
        RawLease::Word(w) if w == "auto" => Some(LeaseSize::Auto),
        RawLease::Size(n) if *n >= 1 => Some(LeaseSize::Fixed(*n as u64)),
        _ => None,
    };
    let why = match algorithm {
        Some(Algorithm::SlidingLog | Algorithm::SlidingWindow) => Some(
            "sliding_log and sliding_window take no lease: their windows slide, so a unit \
             handed out now would be counted at the moment it was taken, not when it is spent, \
             and no window end bounds how long a slice may be held; use fixed_window",
        ),
        Some(Algorithm::Gcra) if r.limits.len() != 1 => Some(
            "a gcra lease needs exactly one limit (a slice is a run of one bucket's emissions)",
        ),
        _ if count == Some(Count::Reported) => Some(
            "a rule with count = \"reported\" is charged by reports, not by its requests: \
             there is nothing for a slice to hand out",
        ),
        _ => None,
    };
    match (size, why) {
        (None, _) => c.push(
            key,
            Some(l),
            "must be \"auto\" or a whole number of at least 1 (units a slice holds at most)",
        ),
        (Some(_), Some(why)) => c.push(key, Some(l), why),
        (Some(size), None) => return Some(size),
    }
    None
}

/// Credentials and TLS files of `[redis]`, read now so a missing or bad
/// file is a config error naming its key. `None`: a problem was pushed.
fn redis_access(c: &mut Collector, r: &super::raw::RawRedis) -> Option<Access> {
    let before = c.issues.len();
    let path = |s: &Spanned<String>| std::path::PathBuf::from(s.get_ref());
    let password = match (&r.password_file, &r.password_env) {
        (Some(file), Some(_)) => {
            c.push(
                "redis.password_env",
                Some(file),
                "give one of password_file and password_env",
            );
            None
        }
        (Some(file), None) => match crate::redis_conn::read_password_file(&path(file)) {
            Ok(p) => Some(p),
            Err(e) => {
                c.push("redis.password_file", Some(file), e.to_string());
                None
            }
        },
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(p) if !p.is_empty() => Some(crate::secret::Secret::new(p)),
            _ => {
                c.push(
                    "redis.password_env",
                    Some(var),
                    format!(
                        "environment variable {} is not set (or empty)",
                        var.get_ref()
                    ),
                );
                None
            }
        },
        (None, None) => None,
    };
    if let Some(user) = &r.username {
        if user.get_ref().is_empty() {
            c.push("redis.username", Some(user), "must not be empty");
        }
    }
    let tls = r.tls.as_ref().and_then(|t| {
        let loaded = Tls::load(
            t.ca_file.as_ref().map(path).as_deref(),
            t.cert_file.as_ref().map(path).as_deref(),
            t.key_file.as_ref().map(path).as_deref(),
            t.insecure_skip_verify,
        );
        match loaded {
            Ok(tls) => Some(tls),
            Err(errors) => {
                for (key, message) in errors {
                    let at = match key {
                        "redis.tls.ca_file" => t.ca_file.as_ref(),
                        "redis.tls.cert_file" => t.cert_file.as_ref(),
                        _ => t.key_file.as_ref(),
                    };
                    c.push(key, at, message);
                }
                None
            }
        }
    });
    (c.issues.len() == before).then(|| Access {
        username: r.username.as_ref().map(|u| u.get_ref().clone()),
        password,
        tls,
    })
}

fn apply_overrides(raw: &mut RawConfig, ov: &Overrides) {
    let cli = |s: &String| Spanned::new(0..0, s.clone());
    if let Some(v) = &ov.listen {
        raw.server.listen = cli(v);
    }
    if let Some(v) = &ov.admin_listen {
        raw.server.admin_listen = cli(v);
    }
    if let Some(v) = &ov.redis_url {
        // The command line names one server: it replaces whatever the file says.
        let r = raw.redis.get_or_insert_with(Default::default);
        r.url = Some(cli(v));
        r.cluster = None;
        r.sentinel = None;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Overrides};
    use crate::redis_conn::Endpoint;

    fn issues(text: &str) -> Vec<String> {
        match parse("t.toml", text, &Overrides::default()) {
            Ok(_) => vec![],
            Err(e) => e
                .issues
                .iter()
                .map(|i| format!("{}@{:?}: {}", i.key, i.line, i.message))
                .collect(),
        }
    }

    #[test]
    fn every_problem_is_reported_with_key_and_line() {
        let text = r#"
[[rule]]
name = "a"
limits = ["5/x", "0/m"]
algorithm = "leaky"

[[rule]]
name = "a"
key = "ip+cookie:x"
limits = ["1/s"]
"#;
        let found = issues(text);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(
            found[0].starts_with("rule[0].limits[0]@Some(4)"),
            "{found:?}"
        );
        assert!(found[1].starts_with("rule[0].limits[1]@Some(4)"));
        assert!(found[2].starts_with("rule[0].algorithm@Some(5)"));
        assert!(found[3].starts_with("rule[1].name@Some(8): duplicate"));
        assert!(found[4].starts_with("rule[1].key@Some(9)"));
    }

    #[test]
    fn each_limit_sharing_a_period_names_the_first_with_it_and_bad_rates_are_not_compared() {
        let found =
            issues("[[rule]]\nname = \"r\"\nlimits = [\"5/m\", \"x\", \"10/60s\", \"20/1m\"]\n");
        assert_eq!(
            found,
            [
                "rule[0].limits[1]@Some(3): bad rate \"x\": expected COUNT/PERIOD, e.g. \"5/m\" or \"100/30s\"",
                "rule[0].limits[2]@Some(3): limits[0] and limits[2] have the same period (1m); keep the tighter one",
                "rule[0].limits[3]@Some(3): limits[0] and limits[3] have the same period (1m); keep the tighter one",
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let found = issues("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("lisen") && found[0].contains("Some(3)"),
            "{found:?}"
        );
    }

    #[test]
    fn overrides_beat_the_file() {
        let ov = Overrides {
            redis_url: Some("redis://127.0.0.1:1".into()),
            ..Default::default()
        };
        let cfg = parse("t", "[server]\nlisten = \"127.0.0.1:9\"\n", &ov).unwrap();
        assert_eq!(
            cfg.redis.unwrap().endpoint,
            Endpoint::single("redis://127.0.0.1:1")
        );
        assert_eq!(cfg.server.listen.port(), 9);
        let cfg = parse("t", "", &Overrides::default()).unwrap();
        assert!(cfg.redis.is_none(), "no [redis] means the embedded store");
    }

    #[test]
    fn the_denylist_section_is_checked_like_the_allowlist_and_keeps_its_own_state_file() {
        let found = issues("[denylist]\nmin_prefix_v4 = 0\nmax_ttl = \"0s\"\n");
        assert!(
            found[1].starts_with("denylist.max_ttl@Some(3)"),
            "{found:?}"
        );
        assert!(
            found[0].starts_with("denylist.min_prefix_v4@Some(2)"),
            "{found:?}"
        );
        let found =
            issues("[allowlist]\nstate_file = \"/s.json\"\n[denylist]\nstate_file = \"/s.json\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("denylist.state_file"), "{found:?}");
        let cfg = parse(
            "t",
            "[denylist]\nallow_permanent = true\n",
            &Overrides::default(),
        )
        .unwrap();
        assert!(cfg.denylist.allow_permanent && !cfg.allowlist.allow_permanent);
        assert_eq!(cfg.denylist.section, "denylist");
    }

    #[test]
    fn the_overrides_section_keeps_its_own_state_file() {
        let found =
            issues("[denylist]\nstate_file = \"/s.json\"\n[overrides]\nstate_file = \"/s.json\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("overrides.state_file"), "{found:?}");
        let found = issues("[overrides]\nmax_ttl = \"0s\"\n");
        assert!(
            found[0].starts_with("overrides.max_ttl@Some(2)"),
            "{found:?}"
        );
    }

    #[test]
    fn allowlist_prefix_floors_and_reap_interval_are_checked() {
        let found =
            issues("[allowlist]\nmin_prefix_v4 = 0\nmin_prefix_v6 = 129\nreap_interval = \"0s\"\n");
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("allowlist.min_prefix_v4@Some(2)"));
        assert!(found[1].starts_with("allowlist.min_prefix_v6@Some(3)"));
        assert!(found[2].starts_with("allowlist.reap_interval@Some(4)"));
        let cfg = parse("t", "", &Overrides::default()).unwrap().allowlist;
        assert_eq!((cfg.min_prefix_v4, cfg.min_prefix_v6), (8, 32));
        assert!(!cfg.allow_permanent);
    }

    #[test]
    fn snapshot_page_rates_are_checked_and_the_fleet_budget_defaults_to_400() {
        let found = issues(
            "[allowlist]\nsnapshot_fleet_pages_per_second = 0\nsnapshot_pages_per_second = 100001\n",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with(
                "allowlist.snapshot_fleet_pages_per_second@Some(2): must be between 1"
            ),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("allowlist.snapshot_pages_per_second@Some(3)"),
            "{found:?}"
        );
        let cfg = parse("t", "", &Overrides::default()).unwrap().allowlist;
        assert_eq!(
            (
                cfg.snapshot_pages_per_second,
                cfg.snapshot_fleet_pages_per_second
            ),
            (200, 400)
        );
    }

    #[test]
    fn a_zero_default_ttl_is_refused_since_it_would_make_entries_permanent() {
        for ttl in ["0s", "500us"] {
            let found = issues(&format!("[allowlist]\ndefault_ttl = \"{ttl}\"\n"));
            assert_eq!(found.len(), 1, "{found:#?}");
            assert!(
                found[0].starts_with("allowlist.default_ttl@Some(2)")
                    && found[0].contains("allow_permanent"),
                "{found:?}"
            );
        }
        let found = issues("[allowlist]\nmax_ttl = \"0s\"\n");
        assert!(
            found[0].starts_with("allowlist.max_ttl@Some(2)"),
            "{found:?}"
        );
    }

    #[test]
    fn cluster_and_sentinel_endpoints_parse_and_exclude_each_other() {
        let cfg = parse(
            "t",
            "[redis]\ncluster = [\"redis://127.0.0.1:7001\", \"redis://127.0.0.1:7002\"]\n",
            &Overrides::default(),
        )
        .unwrap();
        assert!(cfg.redis.unwrap().endpoint.is_cluster());
        let cfg = parse(
            "t",
            "[redis]\nsentinel = { master = \"m\", nodes = [\"redis://127.0.0.1:26379\"] }\n",
            &Overrides::default(),
        )
        .unwrap();
        assert!(cfg.redis.unwrap().endpoint.is_sentinel());
        let found = issues("[redis]\nurl = \"redis://a:1\"\ncluster = [\"redis://b:2\"]\n");
        assert!(
            found[0].starts_with("redis@") && found[0].contains("one of"),
            "{found:?}"
        );
        let found = issues("[redis]\ncluster = [\"nope\"]\n");
        assert!(found[0].starts_with("redis.cluster@Some(2)"), "{found:?}");
    }

    #[test]
    fn descriptor_rules_report_every_problem_with_its_key() {
        let text = r#"
[server]
grpc_listen = "nowhere"

[[rule]]
name = "a"
domain = "edge"
limits = ["1/s"]

[[rule]]
name = "b"
domain = "edge"
descriptor = [{ key = "" }, { key = "path", value = "" }]
key = "ip"
match = { path = "/x" }
allowlist = "require"
allow_override = true

[[rule]]
name = "c"
domain = "edge"
descriptor = [{ key = "remote_address" }]
limits = ["1/s"]
override_max = "5/s"

[[rule]]
name = "d"
domain = "edge"
descriptor = [{ key = "remote_address" }]
limits = ["1/s"]
allow_override = true
override_max = "5/x"
"#;
        let found = issues(text);
        let keys: Vec<&str> = found.iter().map(|f| f.split('@').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "server.grpc_listen",
                "rule[0].descriptor",
                "rule[1].descriptor[0].key",
                "rule[1].descriptor[1].value",
                "rule[1].match",
                "rule[1].override_max",
                "rule[1].key",
                "rule[1].allowlist",
                "rule[2].override_max",
                "rule[3].descriptor",
                "rule[3].override_max",
            ],
            "in line order: {found:#?}"
        );
        assert!(found[9].contains("rule[2] already"), "{found:#?}");
        assert!(found[5].contains("needs override_max"), "{found:#?}");
    }

    #[test]
    fn a_descriptor_rule_parses_with_its_override_cap() {
        let text = r#"
[server]
grpc_listen = "127.0.0.1:8082"

[[rule]]
name = "login"
domain = "edge"
descriptor = [{ key = "remote_address" }, { key = "path", value = "/login" }]
limits = ["5/m"]
allow_override = true
override_max = "100/s"
"#;
        let cfg = parse("t", text, &Overrides::default()).unwrap();
        assert_eq!(cfg.server.grpc_listen.unwrap().port(), 8082);
        assert!(cfg.server.grpc_ratelimit_headers);
        let d = cfg.rules[0].descriptor.as_ref().unwrap();
        assert_eq!(
            d.to_string(),
            "domain \"edge\": remote_address, path=/login"
        );
        assert_eq!(d.override_max.as_ref().unwrap().to_string(), "100/s");
        let cfg = parse("t", "", &Overrides::default()).unwrap();
        assert!(cfg.server.grpc_listen.is_none(), "off by default");
    }

    #[test]
    fn unnormalised_paths_and_unknown_header_families_are_named() {
        let found = issues(
            "[[rule]]\nname = \"a\"\nmatch = { path_prefix = \"/a//b\" }\nlimits = [\"1/s\"]\n",
        );
        assert!(
            found[0].starts_with("rule[0].match.path_prefix") && found[0].contains("\"/a/b\""),
            "{found:?}"
        );
        let found = issues("[server]\nforwarded_request = \"both\"\n");
        assert!(
            found[0].starts_with("server.forwarded_request@Some(2)")
                && found[0].contains("x-original"),
            "{found:?}"
        );
    }

    #[test]
    fn lease_is_for_fixed_window_and_one_limit_gcra_rules_charged_by_requests() {
        let rule = |alg: &str, extra: &str, lease: &str| {
            format!("[[rule]]\nname = \"r\"\nlimits = [\"2000/s\"]\nalgorithm = \"{alg}\"\n{extra}lease = {lease}\n")
        };
        let cfg = crate::config::parse(
            "t",
            &rule("fixed_window", "", "\"auto\""),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(cfg.rules[0].lease, Some(crate::limiter::LeaseSize::Auto));
        let cfg = crate::config::parse("t", &rule("fixed_window", "", "50"), &Default::default())
            .unwrap();
        assert_eq!(
            cfg.rules[0].lease,
            Some(crate::limiter::LeaseSize::Fixed(50))
        );
        assert!(cfg.rules[0].to_string().contains("(lease 50)"));
        for (alg, extra, lease, says) in [
            ("sliding_log", "", "\"auto\"", "their windows slide"),
            ("sliding_window", "", "50", "their windows slide"),
            (
                "fixed_window",
                "count = \"reported\"\n",
                "\"auto\"",
                "charged by reports",
            ),
            ("fixed_window", "", "0", "at least 1"),
            (
                "fixed_window",
                "",
                "\"often\"",
                "\"auto\" or a whole number",
            ),
        ] {
            let found = issues(&rule(alg, extra, lease));
            assert!(
                found.len() == 1
                    && found[0].starts_with("rule[0].lease@")
                    && found[0].contains(says),
                "{alg} {lease}: {found:#?}"
            );
        }
        let two = rule("gcra", "", "\"auto\"").replace("[\"2000/s\"]", "[\"2000/s\", \"5000/m\"]");
        let found = issues(&two);
        assert!(
            found.len() == 1
                && found[0].starts_with("rule[0].lease@")
                && found[0].contains("exactly one limit"),
            "{found:#?}"
        );
    }

    #[test]
    fn burst_is_for_gcra_with_one_limit_and_at_least_one() {
        let rule = |alg: &str, limits: &str, burst: &str| {
            format!("[[rule]]\nname = \"r\"\nlimits = [{limits}]\nalgorithm = \"{alg}\"\nburst = {burst}\n")
        };
        let found = issues(&rule("fixed_window", "\"10/s\"", "50"));
        assert!(
            found[0].starts_with("rule[0].burst@Some(5): only the gcra"),
            "{found:?}"
        );
        let found = issues(&rule("gcra", "\"10/s\", \"100/m\"", "50"));
        assert!(
            found[0].starts_with("rule[0].burst@Some(5): a burst needs exactly one limit"),
            "{found:?}"
        );
        let found = issues(&rule("gcra", "\"10/s\"", "0"));
        assert!(
            found[0].starts_with("rule[0].burst@Some(5): must be"),
            "{found:?}"
        );
        let cfg = parse("t", &rule("gcra", "\"10/s\"", "50"), &Overrides::default()).unwrap();
        assert_eq!(cfg.rules[0].burst, Some(50));
        let cfg = parse(
            "t",
            &rule("gcra", "\"10/s\"", "50").replace("burst = 50\n", ""),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.rules[0].burst, None, "default: the limit");
    }

    #[test]
    fn a_gcra_bucket_past_2_pow_53_microseconds_is_a_config_error_naming_its_key() {
        let rule = |limits: &str, burst: &str| {
            format!("[[rule]]\nname = \"r\"\nlimits = [{limits}]\nalgorithm = \"gcra\"\n{burst}")
        };
        let found = issues(&rule("\"1000/365d\"", ""));
        assert!(
            found[0].starts_with("rule[0].limits[0]") && found[0].contains("2^53"),
            "{found:?}"
        );
        let found = issues(&rule("\"10/d\"", "burst = 200000\n"));
        assert!(
            found[0].starts_with("rule[0].burst") && found[0].contains("2^53"),
            "{found:?}"
        );
        assert!(parse("t", &rule("\"100000/d\"", ""), &Overrides::default()).is_ok());
    }

    #[test]
    fn the_old_deny_cache_size_key_names_its_replacement() {
        let found = issues("[redis]\nurl = \"redis://127.0.0.1:1\"\ndeny_cache_size = 1000\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0]
                .starts_with("redis.deny_cache_size@Some(3): replaced by redis.deny_cache_bytes"),
            "{found:?}"
        );
    }

    #[test]
    fn host_bits_name_the_canonical_form() {
        let found = issues("[client_ip]\ntrusted_proxies = [\"10.0.0.1/8\"]\n");
        assert!(found[0].contains("10.0.0.0/8"), "{found:?}");
    }
}
