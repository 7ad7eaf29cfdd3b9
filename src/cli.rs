//! The command line. Every flag has a `TOLLGATE_*` variable; CLI beats env
//! beats file. Exit codes: 0 ok, 2 bad usage or config, 1 other failure.

pub mod activity;
pub mod allow;
pub mod follow;
mod from_node;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod limits;

use crate::config::{self, Config, ConfigError, Overrides};
use crate::secret::Secret;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "Exact distributed rate limits and an IP allowlist for reverse proxies"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the decision API and the admin API.
    Serve(ServeArgs),
    /// Only follow the allowlist, keeping a file equal to it (no HTTP server).
    Follow(follow::FollowArgs),
    /// Work with config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect or reset one client's counters (straight to Redis).
    #[command(subcommand)]
    Limits(limits::LimitsCommand),
    /// Change or read the IP allowlist in Redis directly (no server needed).
    #[command(subcommand)]
    Allow(allow::AllowCommand),
    /// Read the activity counters in Redis: online, active days, tracked rules.
    #[command(subcommand)]
    Activity(activity::ActivityCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file and print the effective rules (exit 2 on errors).
    Check {
        file: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Config file (TOML). Without one: defaults, the embedded store, no rules.
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Args, Debug, Clone, Default)]
pub struct OverrideArgs {
    /// Decision API address (server.listen).
    #[arg(long, env = "TOLLGATE_LISTEN")]
    pub listen: Option<String>,
    /// Admin API address (server.admin_listen).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Redis URL (redis.url); without Redis the embedded in-process store is used.
    #[arg(long = "redis", env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix (redis.prefix).
    #[arg(long = "prefix", env = "TOLLGATE_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Every rule counts and reports but never denies.
    #[arg(long, env = "TOLLGATE_SHADOW")]
    pub shadow: bool,
}

impl From<&OverrideArgs> for Overrides {
    fn from(a: &OverrideArgs) -> Self {
        Overrides {
            listen: a.listen.clone(),
            admin_listen: a.admin_listen.clone(),
            redis_url: a.redis_url.clone(),
            redis_prefix: a.redis_prefix.clone(),
            admin_token: None,
            shadow: a.shadow,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Exit 2: bad usage or config.
pub(crate) fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Exit 1: any other failure.
pub(crate) fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

/// What a command's runtime runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// A long-running process (`serve`, `follow`): every core.
    Service,
    /// One command against Redis (`limits`, `allow`): one thread is plenty.
    OneShot,
}

/// The one place a command's tokio runtime is built.
pub fn runtime(work: Work) -> std::io::Result<tokio::runtime::Runtime> {
    match work {
        Work::Service => tokio::runtime::Runtime::new(),
        Work::OneShot => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
}

/// Load the config a command names (or the defaults).
pub fn load_config(
    file: Option<&PathBuf>,
    overrides: &OverrideArgs,
) -> Result<Config, ConfigError> {
    let ov = Overrides::from(overrides);
    let mut cfg = match file {
        Some(path) => config::load_file(path, &ov)?,
        None => config::defaults(&ov)?,
    };
    // The variable's name comes from the file, so the token is read after it.
    cfg.server.admin_token = std::env::var(&cfg.server.admin_token_env)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Ok(cfg)
}

/// `tollgate config check`: the effective config, or every problem.
pub fn config_check(file: &PathBuf, overrides: &OverrideArgs) -> ExitCode {
    let cfg = match load_config(Some(file), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}: ok", file.display());
    print!("{}", describe(&cfg));
    ExitCode::SUCCESS
}

/// Human summary of an effective config (no secrets: URLs are redacted).
pub fn describe(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    match &cfg.redis {
        Some(r) => {
            let _ = writeln!(
                s,
                "store: redis {} (prefix {:?}, timeout {:?})",
                r.endpoint, cfg.prefix, r.timeout
            );
        }
        None => {
            let _ = writeln!(s, "store: in-process (one replica only)");
        }
    }
    let _ = writeln!(
        s,
        "listen: {}  admin_listen: {}",
        cfg.server.listen, cfg.server.admin_listen
    );
    let trusted: Vec<String> = cfg
        .client_ip
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    let _ = writeln!(
        s,
        "trusted_proxies: [{}]  ipv6_prefix: /{}",
        trusted.join(", "),
        cfg.client_ip.ipv6_prefix
    );
    let _ = writeln!(
        s,
        "rules ({}, evaluated in order, all must pass):",
        cfg.rules.len()
    );
    for r in &cfg.rules {
        let _ = writeln!(s, "  {}: {}", r.name, r);
    }
    s
}
