//! `tollgate follow --export FILE [--list allow|deny] --format plain|nginx-geo|json|nft [--reload-cmd CMD]`:
//! only one list's follower (the same code `serve` runs, no HTTP server),
//! keeping FILE equal to the live allowlist (or denylist) for proxies and
//! firewalls that read a file.
//!
//! Needs Redis (exit 2 without). SIGTERM/SIGINT: exit 0, the file untouched.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{failure, load_config, runtime, usage, LogFormat, OverrideArgs, Work};
use crate::allowlist::export_file::{self, ExportOptions, Format};
use crate::allowlist::kind::ListKind;
use crate::allowlist::{follower, Allowlist};

#[derive(Args, Debug)]
pub struct FollowArgs {
    /// Which list: `allow` (the allowlist) or `deny` (the denylist).
    #[arg(long, env = "TOLLGATE_LIST", default_value = "allow", value_parser = parse_list)]
    pub list: ListKind,
    /// The file to keep equal to the live list (written atomically).
    #[arg(long, env = "TOLLGATE_EXPORT")]
    pub export: PathBuf,
    #[arg(long, env = "TOLLGATE_EXPORT_FORMAT", value_enum, default_value_t = Format::Plain)]
    pub format: Format,
    /// Run with `sh -c` after each change of the file, e.g. "nginx -s reload".
    #[arg(long, env = "TOLLGATE_RELOAD_CMD")]
    pub reload_cmd: Option<String>,
    /// Changes closer together than this are written (and reloaded) once.
    #[arg(long, env = "TOLLGATE_DEBOUNCE", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Write metrics here (node_exporter textfile format), refreshed every few seconds.
    #[arg(long, env = "TOLLGATE_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Keep the follower's table here across restarts (the list's state_file).
    #[arg(long, env = "TOLLGATE_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Config file (TOML): [redis] and [allowlist] / [denylist] are read from it.
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL (redis.url).
    #[arg(long = "redis", env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix (redis.prefix).
    #[arg(long = "prefix", env = "TOLLGATE_PREFIX")]
    pub redis_prefix: Option<String>,
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Follow until `shutdown`; the exit code.
pub fn run(args: FollowArgs, shutdown: impl Future<Output = ()>) -> ExitCode {
    let overrides = OverrideArgs {
        redis_url: args.redis_url.clone(),
        redis_prefix: args.redis_prefix.clone(),
        ..Default::default()
    };
    let mut cfg = match load_config(args.config.as_ref(), &overrides) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let Some(redis) = &cfg.redis else {
        return usage(format!("`tollgate follow` follows the {} in Redis: set --redis or TOLLGATE_REDIS_URL (or [redis] url in --config)", args.list));
    };
    let dir = match args.export.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return usage(format!(
            "--export {}: the directory {} does not exist",
            args.export.display(),
            dir.display()
        ));
    }
    let kind = args.list;
    if args.state_file.is_some() {
        match kind {
            ListKind::Allow => cfg.allowlist.state_file = args.state_file.clone(),
            ListKind::Deny => cfg.denylist.state_file = args.state_file.clone(),
            ListKind::Override => cfg.overrides.state_file = args.state_file.clone(),
        }
    }
    tracing::info!(
        redis = %redis.endpoint,
        prefix = %cfg.prefix,
        export = %args.export.display(),
        format = ?args.format,
        "following the {kind} (no HTTP server)"
    );
    let opts = ExportOptions {
        path: args.export,
        format: args.format,
        reload_cmd: args.reload_cmd,
        debounce: args.debounce,
        metrics_file: args.metrics_file,
    };
    let runtime = match runtime(Work::Service) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    runtime.block_on(async move {
        // The Redis client needs the runtime, even before it dials.
        let list = Arc::new(Allowlist::of(&cfg, kind));
        let stop = CancellationToken::new();
        let follower = tokio::spawn(follower::run(list.clone(), stop.clone()));
        let exporter = tokio::spawn(export_file::keep(list, opts, stop.clone()));
        shutdown.await;
        tracing::info!("shutting down; the export file keeps the last known list");
        stop.cancel();
        let _ = tokio::join!(follower, exporter);
        ExitCode::SUCCESS
    })
}

fn parse_list(text: &str) -> Result<ListKind, String> {
    ListKind::parse(text).ok_or_else(|| format!("{text:?}: expected allow or deny"))
}
