//! Reloading the config: on `SIGHUP`, and when the file changes
//! (`config::watch`, unless `--no-watch`). Both go through [`reload`] in one
//! task, so two reloads never interleave, and both end in `App::reload_from`.
//!
//! A file that fails validation is logged with every problem (as `config
//! check` prints them) and the running config stays;
//! `tollgate_config_reload_rejected` is 1 until a version applies (or the
//! file is back to the running one). The watch re-reads a file once per
//! change and applies it only when its hash differs from the running
//! config's: a `touch` reloads nothing. `SIGHUP` always reloads: it also
//! re-reads what the file points to (password and TLS files).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::watch::{Loaded, Look, Source, Watch, POLL};
use crate::config::{Config, ConfigError};

/// Re-reads the config file (with the same CLI/env overrides): the config
/// and the hash of the bytes it was parsed from (`None`: the defaults).
pub type Reloader = Box<dyn Fn() -> Result<(Config, Option<String>), ConfigError> + Send + Sync>;

/// The config file `serve` runs and how to follow it.
pub struct ConfigFile {
    /// As named by `--config` (`None`: the defaults; nothing to watch).
    pub path: Option<PathBuf>,
    /// Hash of the bytes the config `serve` started with was parsed from.
    pub hash: Option<String>,
    pub read: Reloader,
    /// Poll the file for changes (off with `--no-watch`).
    pub watch: bool,
}

/// Record the start version, then reload on `SIGHUP` and on a change of
/// the file until `stop`.
pub(super) async fn run(app: Arc<App>, file: ConfigFile, stop: CancellationToken) {
    let mut watch = match (&file.path, file.watch) {
        (Some(path), true) => {
            tracing::info!(path = %path.display(), poll = ?POLL, "watching the config file: a change applies within about half a second (--no-watch turns this off)");
            Some(Watch::new(path.clone()))
        }
        (Some(path), false) => {
            tracing::info!(path = %path.display(), "not watching the config file (--no-watch): reload with SIGHUP");
            None
        }
        (None, _) => None,
    };
    let mut hup = hangup();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(()) = next_hangup(&mut hup) => reload(&app, &file, Source::Sighup),
            _ = tick.tick(), if watch.is_some() => match watch.as_mut().map(Watch::poll) {
                Some(Look::Changed) => reload(&app, &file, Source::Watch),
                Some(Look::Recheck) => recheck(&app, &file),
                Some(Look::Same) | None => {}
            }
        }
    }
}

/// Read the file and apply it, or report why not (the running config stays).
fn reload(app: &App, file: &ConfigFile, source: Source) {
    let metrics = &app.reloads;
    let (config, hash) = match (file.read)() {
        Ok(read) => read,
        Err(e) => {
            metrics.count(source, "rejected");
            metrics.rejected.set(1);
            tracing::error!(
                source = source.as_str(),
                "config reload rejected, running config kept: {e}"
            );
            return;
        }
    };
    let running = app.loaded.load();
    if source == Source::Watch && hash.is_some() && hash == running.hash {
        // A `touch`, the same bytes swapped in again, or the version that
        // runs put back after a rejected one.
        metrics.count(source, "unchanged");
        if metrics.rejected.get() == 1 {
            metrics.rejected.set(0);
            tracing::info!(
                hash = hash.as_deref(),
                "config file is back to the running version: nothing to reload"
            );
        } else {
            tracing::debug!(
                hash = hash.as_deref(),
                "config file touched, content unchanged: nothing to reload"
            );
        }
        return;
    }
    metrics.count(source, "applied");
    metrics.rejected.set(0);
    app.reload_from(config, Loaded::now(file.path.clone(), hash, source));
}

/// A version read too soon after its write, read once more: applied if its
/// bytes differ, silently left alone if not (see `config::watch::RACY`).
fn recheck(app: &App, file: &ConfigFile) {
    if let Ok((_, hash)) = (file.read)() {
        if hash.is_some() && hash == app.loaded.load().hash {
            return;
        }
    }
    reload(app, file, Source::Watch);
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// The `SIGHUP` stream (`None`: none on this platform, or it cannot be had).
fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP: reload by editing the file");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// The next `SIGHUP`; never, without a stream.
async fn next_hangup(hup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(h) = hup {
        return h.recv().await;
    }
    let _ = hup;
    std::future::pending().await
}
