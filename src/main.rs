//! `tollgate`: parse the CLI, load the config, set up logging, run.

use std::process::ExitCode;

/// Every decision allocates a little (headers, keys, futures); glibc's malloc
/// showed up at ~8 % of a profile of the deny path. See bench/README.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use tollgate::cli::{self, Cli, Command, ConfigCommand, LogFormat, ServeArgs};
use tollgate::server::ServeError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check { file, overrides }) => {
            cli::config_check(&file, &overrides)
        }
        Command::Serve(args) => serve(args),
        Command::Follow(args) => {
            init_tracing(args.log_format);
            // Installed on first poll, inside follow's runtime, before its tasks run.
            cli::follow::run(args, async { shutdown_signal().await })
        }
        Command::Limits(cmd) => cli::limits::run(cmd),
        Command::Allow(cmd) => cli::allow::run(tollgate::allowlist::kind::ListKind::Allow, cmd),
        Command::Deny(cmd) => cli::allow::run(tollgate::allowlist::kind::ListKind::Deny, cmd),
        Command::Override(cmd) => cli::overrides::run(cmd),
        Command::Activity(cmd) => cli::activity::run(cmd),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (config, hash) = match cli::load_config_hashed(args.config.as_ref(), &args.overrides) {
        Ok(c) => c,
        Err(e) => return cli::usage(e),
    };
    init_tracing(args.log_format);
    let runtime = match cli::runtime(cli::Work::Service) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let (path, overrides) = (args.config.clone(), args.overrides.clone());
    let file = tollgate::server::ConfigFile {
        path: args.config,
        hash,
        read: Box::new(move || cli::load_config_hashed(path.as_ref(), &overrides)),
        watch: !args.no_watch,
    };
    // The handlers are installed before anything is bound: a SIGTERM that
    // arrives as the first request is answered still shuts down gracefully
    // (a handler installed on the future's first poll left a window in which
    // the default action killed the process).
    let served = runtime.block_on(async {
        let shutdown = shutdown_signal();
        tollgate::server::serve_config(config, Some(file), shutdown).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        // Config-shaped: exit 2, like a bad config file.
        Err(e @ ServeError::Refused(_)) => cli::usage(e),
        Err(e) => fail(&e),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM or SIGINT. The handlers are installed when this is called (inside
/// the runtime), not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Print the whole error chain; exit 1.
fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let mut msg = format!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        // An error that already quotes its cause (`Redis unreachable: {cause}`) is not repeated.
        let text = s.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::from(1)
}
