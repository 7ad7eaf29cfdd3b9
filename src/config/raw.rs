//! The file's shapes, as serde reads them. Defaults are written once, here.
//! Leaf values that `validate` checks are `Spanned`, so errors can name a line.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub redis: Option<RawRedis>,
    pub client_ip: RawClientIp,
    pub allowlist: RawAllowlist,
    /// `[denylist]`: the same settings as `[allowlist]`, the same defaults.
    pub denylist: RawAllowlist,
    /// `[overrides]`: the same settings (`Config::overrides` says which apply).
    pub overrides: RawAllowlist,
    pub api: RawApi,
    pub local_store: RawLocalStore,
    pub activity: RawActivity,
    pub rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Spanned<String>,
    pub admin_listen: Spanned<String>,
    pub admin_token_env: String,
    pub shutdown_grace: Spanned<String>,
    /// Envoy's gRPC services (RLS, ext_authz, health); off unless set.
    pub grpc_listen: Option<Spanned<String>>,
    /// Whether RLS and ext_authz answers carry the RateLimit headers `/check` sends.
    pub grpc_ratelimit_headers: bool,
    /// The header family proxies describe the original request with.
    pub forwarded_request: Spanned<String>,
    pub max_connections: usize,
    pub request_timeout: Spanned<String>,
    pub idle_timeout: Spanned<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: unspanned("127.0.0.1:8080"),
            admin_listen: unspanned("127.0.0.1:8081"),
            admin_token_env: "TOLLGATE_ADMIN_TOKEN".into(),
            shutdown_grace: unspanned("10s"),
            grpc_listen: None,
            grpc_ratelimit_headers: true,
            forwarded_request: unspanned("x-forwarded"),
            max_connections: 10_000,
            request_timeout: unspanned("10s"),
            // Longer than proxies keep idle upstream connections (nginx: 60s), so
            // tollgate never closes a connection a proxy is about to reuse.
            idle_timeout: unspanned("75s"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    pub url: Option<Spanned<String>>,
    pub cluster: Option<Spanned<Vec<String>>>,
    pub sentinel: Option<Spanned<RawSentinel>>,
    pub prefix: Spanned<String>,
    pub timeout: Spanned<String>,
    pub fallback_replicas: Spanned<RawFallbackReplicas>,
    pub deny_cache_bytes: usize,
    /// Replaced by `deny_cache_bytes`; kept only to say so.
    pub deny_cache_size: Option<Spanned<i64>>,
    /// ACL user for every connection (wins over a URL's).
    pub username: Option<Spanned<String>>,
    /// A file holding the password (read at start and on SIGHUP).
    pub password_file: Option<Spanned<String>>,
    /// The name of an environment variable holding the password.
    pub password_env: Option<Spanned<String>>,
    pub tls: Option<RawRedisTls>,
}

/// `[redis.tls]`: files for `rediss://` connections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedisTls {
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub insecure_skip_verify: bool,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: None,
            cluster: None,
            sentinel: None,
            prefix: unspanned("tg"),
            timeout: unspanned("25ms"),
            fallback_replicas: Spanned::new(0..0, RawFallbackReplicas::Word("auto".into())),
            deny_cache_bytes: 16 << 20,
            deny_cache_size: None,
            username: None,
            password_file: None,
            password_env: None,
            tls: None,
        }
    }
}

/// `fallback_replicas = "auto"` or a number; `validate` says which words
/// and numbers are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawFallbackReplicas {
    Count(i64),
    Word(String),
    /// Anything else (a float, a list): refused by `validate` with the key named.
    Other(toml::Value),
}

/// `sentinel = { master = "mymaster", nodes = ["redis://h:26379"] }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: String,
    pub nodes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClientIp {
    pub trusted_proxies: Vec<Spanned<String>>,
    pub ipv6_prefix: Spanned<i64>,
}

impl Default for RawClientIp {
    fn default() -> Self {
        RawClientIp {
            trusted_proxies: vec![],
            ipv6_prefix: Spanned::new(0..0, 64),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAllowlist {
    pub default_ttl: Spanned<String>,
    pub max_ttl: Spanned<String>,
    pub min_prefix_v4: Spanned<i64>,
    pub min_prefix_v6: Spanned<i64>,
    pub allow_permanent: bool,
    pub reap_interval: Spanned<String>,
    pub state_file: Option<String>,
    pub snapshot_pages_per_second: Spanned<i64>,
    pub snapshot_fleet_pages_per_second: Spanned<i64>,
    pub snapshot_jitter_max: Spanned<String>,
}

impl Default for RawAllowlist {
    fn default() -> Self {
        RawAllowlist {
            default_ttl: unspanned("24h"),
            max_ttl: unspanned("30d"),
            min_prefix_v4: Spanned::new(0..0, 8),
            min_prefix_v6: Spanned::new(0..0, 32),
            allow_permanent: false,
            reap_interval: unspanned("1s"),
            state_file: None,
            snapshot_pages_per_second: Spanned::new(0..0, 200),
            // Twice one node's rate: a lone node is never slowed by it, and a
            // storm of any size costs Redis at most ~11 % of a core (bench/README).
            snapshot_fleet_pages_per_second: Spanned::new(0..0, 400),
            snapshot_jitter_max: unspanned("10s"),
        }
    }
}

/// Caps on `POST /v1/check` bodies (see `config/validate/caps.rs` for why
/// these defaults).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    pub max_key_bytes: usize,
    pub max_limits: usize,
    pub max_limit: u64,
    pub max_log_limit: u64,
    pub max_cost: u64,
    pub max_period: Spanned<String>,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            max_key_bytes: 512,
            max_limits: 4,
            max_limit: 1_000_000_000,
            max_log_limit: 25,
            max_cost: 1_000,
            max_period: unspanned("7d"),
        }
    }
}

/// The in-process store (embedded, and the `on_redis_error = "local"` fallback).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLocalStore {
    pub max_bytes: usize,
}

impl Default for RawLocalStore {
    fn default() -> Self {
        RawLocalStore {
            max_bytes: 64 << 20,
        }
    }
}

/// Activity counters: heartbeats, active days, tracked rules (`src/activity/`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawActivity {
    /// Days the day and hour counters are kept (key TTLs).
    pub retention_days: Spanned<i64>,
    /// The longest `within` an online query may ask for; presence older than it is trimmed.
    pub online_window: Spanned<String>,
    /// Most clients the presence set holds (the oldest go first).
    pub max_online: Spanned<i64>,
}

impl Default for RawActivity {
    fn default() -> Self {
        RawActivity {
            retention_days: Spanned::new(0..0, 30),
            online_window: unspanned("1h"),
            max_online: Spanned::new(0..0, 1_000_000),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Spanned<String>,
    #[serde(default, rename = "match")]
    pub matcher: RawMatch,
    #[serde(default = "default_key")]
    pub key: Spanned<String>,
    #[serde(default)]
    pub limits: Vec<Spanned<String>>,
    #[serde(default = "default_algorithm")]
    pub algorithm: Spanned<String>,
    #[serde(default = "default_allowlist")]
    pub allowlist: Spanned<String>,
    #[serde(default = "default_on_redis_error")]
    pub on_redis_error: Spanned<String>,
    /// `requests` (default) or `reported` (see `Rule::count`).
    #[serde(default = "default_count")]
    pub count: Spanned<String>,
    /// `count = "reported"` only: the upstream statuses a proxy's report
    /// charges the rule for (default `rule::DEFAULT_REPORT_STATUSES`).
    #[serde(default)]
    pub report_statuses: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(default)]
    pub shadow: bool,
    /// RLS rules: `domain = "edge"` and `descriptor = [{ key = "remote_address" }]`.
    #[serde(default)]
    pub domain: Option<Spanned<String>>,
    #[serde(default)]
    pub descriptor: Option<Spanned<Vec<RawDescriptorEntry>>>,
    /// Honour a descriptor's own `limit` (RateLimitOverride), up to `override_max`.
    #[serde(default)]
    pub allow_override: bool,
    #[serde(default)]
    pub override_max: Option<Spanned<String>>,
    /// gcra only: bucket size; default the limit.
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
    /// fixed_window only: `"auto"` or a slice size (see `Rule::lease`).
    #[serde(default)]
    pub lease: Option<Spanned<RawLease>>,
    /// Count this rule's requests, clients and paths per hour (`src/activity/`).
    #[serde(default)]
    pub track: Option<Spanned<bool>>,
    /// Tracked rules: most distinct paths per hour, across replicas (the rest: `other`).
    #[serde(default)]
    pub track_paths: Option<Spanned<i64>>,
    /// Ban the client address after repeated limits (`rule::Ban`).
    #[serde(default)]
    pub ban: Option<Spanned<RawBan>>,
}

/// `ban = { after = 10, within = "10m", for = "15m", factor = 4, max = "7d", remember = "30d" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBan {
    pub after: Spanned<i64>,
    pub within: Spanned<String>,
    #[serde(rename = "for")]
    pub duration: Spanned<String>,
    #[serde(default)]
    pub factor: Option<Spanned<i64>>,
    #[serde(default)]
    pub max: Option<Spanned<String>>,
    #[serde(default)]
    pub remember: Option<Spanned<String>>,
}

/// `lease = "auto"` or `lease = 50`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawLease {
    Size(i64),
    Word(String),
}

/// One entry of a rule's descriptor: `{ key = "path", value = "/login" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDescriptorEntry {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path_prefix: Option<Spanned<String>>,
    pub path_starts_with: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub host: Option<Spanned<String>>,
}

fn default_key() -> Spanned<String> {
    unspanned("ip")
}
fn default_algorithm() -> Spanned<String> {
    unspanned("fixed_window")
}
fn default_allowlist() -> Spanned<String> {
    unspanned("ignore")
}
fn default_count() -> Spanned<String> {
    unspanned("requests")
}

fn default_on_redis_error() -> Spanned<String> {
    unspanned("local")
}

/// A default value has no place in the file; span 0..0 means "no line".
fn unspanned(s: &str) -> Spanned<String> {
    Spanned::new(0..0, s.to_string())
}
