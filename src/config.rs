//! The config file (TOML), read through one seam: [`load`] turns text plus the
//! CLI/env overrides into a validated [`Config`], or into every problem at once.
//!
//! `raw` holds the serde shapes (defaults written once, unknown keys refused);
//! `validate` turns them into the effective types the rest of the code uses;
//! `diff` names the settings two configs differ in, and which a reload applies;
//! `watch` names the file version that runs and notices a new one.

pub mod diff;
mod raw;
mod shape;
mod validate;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::redis_conn::Endpoint;
use crate::request::forwarded::ForwardedRequest;
use crate::rule::Rule;
use crate::secret::Secret;

pub use raw::RawConfig;

impl Config {
    /// The settings of one list (`[allowlist]`, `[denylist]`).
    pub fn list(&self, kind: crate::allowlist::kind::ListKind) -> &AllowlistConfig {
        match kind {
            crate::allowlist::kind::ListKind::Allow => &self.allowlist,
            crate::allowlist::kind::ListKind::Deny => &self.denylist,
            crate::allowlist::kind::ListKind::Override => &self.overrides,
        }
    }
}

/// The effective, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    /// `None`: the embedded in-process store (one replica only).
    pub redis: Option<RedisConfig>,
    /// Prefix of every key tollgate writes (also used by the embedded store's key names).
    pub prefix: String,
    pub client_ip: ClientIpConfig,
    pub allowlist: AllowlistConfig,
    /// `[denylist]`: the same settings, for the denylist.
    pub denylist: AllowlistConfig,
    /// `[overrides]`: the same settings; an override uses `max_ttl`,
    /// `reap_interval`, `state_file` and the snapshot pacing (no TTL given:
    /// permanent; the prefix settings do not apply).
    pub overrides: AllowlistConfig,
    pub api: ApiConfig,
    pub local_store: LocalStoreConfig,
    pub activity: ActivityConfig,
    pub rules: Vec<Rule>,
}

/// Default `track_paths`: distinct paths a tracked rule counts per hour.
pub const DEFAULT_TRACK_PATHS: u32 = 100;

/// `[activity]`: retention and bounds of the activity counters (Redis only).
#[derive(Clone, Debug)]
pub struct ActivityConfig {
    /// Day HyperLogLogs and a tracked rule's hourly keys expire after this many days.
    pub retention_days: u32,
    /// The longest `within` of an online query; older presence is trimmed.
    pub online_window: Duration,
    /// Most clients kept in the presence set (oldest trimmed first).
    pub max_online: u64,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Name of the environment variable holding the admin bearer token (never the token).
    pub admin_token_env: String,
    /// The admin bearer token, read from `admin_token_env` by the binary.
    /// `None`: the admin API is open, which is allowed on loopback only.
    pub admin_token: Option<Secret>,
    pub shutdown_grace: Duration,
    /// Envoy's gRPC services (RLS, ext_authz, health); `None`: not served.
    pub grpc_listen: Option<SocketAddr>,
    /// RLS `response_headers_to_add` and ext_authz answers carry the RateLimit headers.
    pub grpc_ratelimit_headers: bool,
    /// Which header family describes the original request (read from trusted proxies only).
    pub forwarded_request: ForwardedRequest,
    /// Open connections per listener; beyond it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// From a request's first byte to its answer (head and body read, handled).
    pub request_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One server (`url`), a cluster (`cluster`) or a Sentinel master (`sentinel`).
    pub endpoint: Endpoint,
    /// Bounds every limiter call; past it the rule's `on_redis_error` applies.
    pub timeout: Duration,
    /// With `on_redis_error = "local"`, what each replica divides a limit by.
    pub fallback_replicas: FallbackReplicas,
    /// Bytes of denials remembered per replica until their retry_after (0: off).
    pub deny_cache_bytes: usize,
}

/// `redis.fallback_replicas`: how many replicas share a limit while Redis is
/// away (`on_redis_error = "local"` enforces `max(1, floor(limit / n))` each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FallbackReplicas {
    /// `"auto"` (the default): the live replicas last seen in the fleet
    /// registry (`fleet.rs`), 1 until this replica has seen it once.
    #[default]
    Auto,
    /// A number (at least 1): a fixed count, whatever the registry says.
    Fixed(u32),
}

impl std::fmt::Display for FallbackReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FallbackReplicas::Auto => f.write_str("auto"),
            FallbackReplicas::Fixed(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientIpConfig {
    pub trusted_proxies: Vec<IpNet>,
    pub ipv6_prefix: u8,
}

#[derive(Clone, Debug)]
pub struct AllowlistConfig {
    /// `allowlist` or `denylist`: the section these came from, to name a
    /// setting in a message (`denylist.max_ttl`).
    pub section: &'static str,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Shortest prefix an entry may have (`/0` is never accepted).
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// Whether `"ttl": "never"` is accepted.
    pub allow_permanent: bool,
    /// How often each `serve` runs the expiry reaper.
    pub reap_interval: Duration,
    /// Where the follower keeps its table across restarts (`None`: nowhere).
    pub state_file: Option<std::path::PathBuf>,
    /// The follower reads its snapshot in pages of `redis_store::SNAPSHOT_PAGE`
    /// entries, at most this many a second (spreads resyncs: no Redis stall).
    pub snapshot_pages_per_second: u32,
    /// And all the nodes sharing the Redis together at most this many (a
    /// budget kept in Redis: `lua/allow_snapshot_take.lua`).
    pub snapshot_fleet_pages_per_second: u32,
    /// Before a snapshot a node waits a random time up to what the snapshot
    /// will take at that rate, and at most this long.
    pub snapshot_jitter_max: Duration,
}

/// Caps on `POST /v1/check`: what one call may cost Redis and memory.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub max_key_bytes: usize,
    pub max_limits: usize,
    /// The count of any one limit (fixed_window, sliding_window, gcra: O(1) per call).
    pub max_limit: u64,
    /// The count of a sliding_log limit: its script's work and memory grow with it.
    pub max_log_limit: u64,
    pub max_cost: u64,
    pub max_period: Duration,
    /// `--shadow`: ad-hoc limits never deny either.
    pub shadow: bool,
}

#[derive(Clone, Debug)]
pub struct LocalStoreConfig {
    /// Estimated bytes of counters; past it new keys are refused (answered as limited).
    pub max_bytes: usize,
}

/// CLI flags and `TOLLGATE_*` variables; they beat the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub admin_token: Option<Secret>,
    /// `--shadow`: every rule counts and reports but never denies.
    pub shadow: bool,
}

/// One problem found in a config, with the key it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path of the key, e.g. `rule[1].limits[0]` or `redis.timeout`.
    pub key: String,
    /// 1-based line in the file, when the problem sits at a known place.
    pub line: Option<usize>,
    pub message: String,
    /// The flag or variable that gave the value (`--redis`,
    /// `TOLLGATE_REDIS_URL`), named instead of the file, which does not hold it.
    pub given_by: Option<String>,
}

/// Every problem found in a config file; nothing is applied while there is one.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<Issue>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problems = crate::plural::count(self.issues.len() as u64, "problem", "problems");
        // Problems with flags and variables only: the file is not to blame.
        if self.issues.iter().all(|i| i.given_by.is_some()) {
            write!(f, "{problems}")?;
        } else {
            write!(f, "{}: {problems}", self.file)?;
        }
        for issue in &self.issues {
            if let Some(given_by) = &issue.given_by {
                write!(f, "\n  {given_by}: {}", issue.message)?;
                continue;
            }
            write!(f, "\n  {}", self.file)?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": {}: {}", issue.key, issue.message)?;
        }
        Ok(())
    }
}

/// Read and validate a config file.
pub fn load_file(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    load_file_hashed(path, overrides).map(|(config, _)| config)
}

/// [`load_file`], with the [`watch::hash`] of the bytes it parsed: read once,
/// so the hash names exactly the text the config came from.
pub fn load_file_hashed(
    path: &Path,
    overrides: &Overrides,
) -> Result<(Config, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        issues: vec![Issue {
            key: "(file)".into(),
            line: None,
            message: format!("cannot read: {e}"),
            given_by: None,
        }],
    })?;
    let hash = watch::hash(text.as_bytes());
    parse(&file, &text, overrides).map(|config| (config, hash))
}

/// Parse and validate config text; `file` only names it in messages.
/// Every problem is reported at once: shape problems (unknown keys, wrong
/// types) first, then value problems of the keys that had the right shape.
pub fn parse(file: &str, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    let shapes = shape::read(text);
    let mut issues = shapes.issues;
    let checked = shapes
        .raw
        .map(|raw| validate::validate(raw, text, overrides));
    match checked {
        Some(Ok(config)) if issues.is_empty() => return Ok(config),
        Some(Err(found)) => issues.extend(
            found
                .into_iter()
                .filter(|i| !shape::is_knock_on(&i.key, &shapes.dropped)),
        ),
        _ => {}
    }
    // Found in two passes, in serde's order: a reader wants the file's.
    issues.sort_by_key(|i| (i.line.is_none(), i.line));
    Err(ConfigError {
        file: file.into(),
        issues,
    })
}

/// The config used when no file is given: embedded store, no rules.
pub fn defaults(overrides: &Overrides) -> Result<Config, ConfigError> {
    parse("(defaults)", "", overrides)
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}
