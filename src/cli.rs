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
pub mod overrides;

use crate::config::{self, Config, ConfigError, Issue, Overrides};
use crate::secret;

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
    /// Change or read the IP denylist in Redis directly (the same commands as `allow`).
    #[command(subcommand)]
    Deny(allow::AllowCommand),
    /// Per-client overrides of a rule's limits, in Redis directly (no server needed).
    #[command(subcommand)]
    Override(overrides::OverrideCommand),
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
    /// Do not poll the config file for changes (reload with SIGHUP only).
    #[arg(long, env = "TOLLGATE_NO_WATCH")]
    pub no_watch: bool,
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
pub fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Exit 1: any other failure.
pub fn failure(message: impl std::fmt::Display) -> ExitCode {
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

/// Load the config a command names (or the defaults), then the admin token
/// from the variable the config names. A problem with a value a flag or a
/// variable gave is blamed on that flag or variable, not on the file.
pub fn load_config(
    file: Option<&PathBuf>,
    overrides: &OverrideArgs,
) -> Result<Config, ConfigError> {
    load_config_hashed(file, overrides).map(|(cfg, _)| cfg)
}

/// [`load_config`], with the hash of the file's bytes (`None`: the defaults).
pub fn load_config_hashed(
    file: Option<&PathBuf>,
    overrides: &OverrideArgs,
) -> Result<(Config, Option<String>), ConfigError> {
    let ov = Overrides::from(overrides);
    let (loaded, hash) = match file {
        Some(path) => match config::load_file_hashed(path, &ov) {
            Ok((c, h)) => (Ok(c), Some(h)),
            Err(e) => (Err(e), None),
        },
        None => (config::defaults(&ov), None),
    };
    let mut cfg = loaded.map_err(|mut e| {
        for issue in &mut e.issues {
            issue.given_by = overrides.given_by(&issue.key);
        }
        e
    })?;
    // The variable's name comes from the file, so the token is read after it.
    let var = &cfg.server.admin_token_env;
    cfg.server.admin_token =
        secret::admin_token(var, std::env::var_os(var)).map_err(|e| ConfigError {
            file: file.map_or("(defaults)".into(), |f| f.display().to_string()),
            issues: vec![Issue {
                key: "server.admin_token_env".into(),
                line: None,
                message: e.problem.to_string(),
                given_by: Some(e.var),
            }],
        })?;
    Ok((cfg, hash))
}

impl OverrideArgs {
    /// The flag or variable that gave config key `key`, when one did.
    fn given_by(&self, key: &str) -> Option<String> {
        let (value, flag, var) = match key {
            "server.listen" => (&self.listen, "--listen", "TOLLGATE_LISTEN"),
            "server.admin_listen" => (
                &self.admin_listen,
                "--admin-listen",
                "TOLLGATE_ADMIN_LISTEN",
            ),
            "redis.url" => (&self.redis_url, "--redis", "TOLLGATE_REDIS_URL"),
            "redis.prefix" => (&self.redis_prefix, "--prefix", "TOLLGATE_PREFIX"),
            _ => return None,
        };
        value.as_ref()?;
        // clap reads the variable only when the flag is not on the command line.
        let on_command_line = std::env::args_os().any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        });
        Some(if on_command_line { flag } else { var }.to_string())
    }
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
