//! Running tollgate: both listeners, the background tasks, and shutdown.
//! `run` takes the shutdown future as a parameter, so tests and the binary
//! drive it the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::allowlist;
use crate::app::App;
use crate::http;
use crate::limiter::Store;

pub struct Listeners {
    pub decision: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(decision: SocketAddr, admin: SocketAddr) -> std::io::Result<Listeners> {
        Ok(Listeners {
            decision: TcpListener::bind(decision).await?,
            admin: TcpListener::bind(admin).await?,
        })
    }
}

/// Serve until `shutdown` resolves; then stop accepting and give in-flight
/// requests `server.shutdown_grace` to finish.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin_addr = listeners.admin.local_addr()?;
    if app.config.server.admin_token.is_none() {
        if !admin_addr.ip().is_loopback() {
            return Err(std::io::Error::other(format!(
                "refusing to serve the admin API on {admin_addr} without a token: set {} (or listen on a loopback address)",
                app.config.server.admin_token_env
            )));
        }
        tracing::warn!(%admin_addr, "no admin token set ({}): the admin API is open to local users", app.config.server.admin_token_env);
    }
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(load_scripts(app.clone(), stop.clone()));
    tasks.spawn(sweep_local(app.clone(), stop.clone()));
    tasks.spawn(allowlist::follower::run(
        app.allowlist.clone(),
        stop.clone(),
    ));
    let reap_every = app.config.allowlist.reap_interval;
    tasks.spawn(allowlist::reaper::run(
        app.allowlist.clone(),
        reap_every,
        stop.clone(),
    ));

    let decision = serve(
        listeners.decision,
        http::decision_router(app.clone()),
        stop.clone(),
    );
    let admin = serve(
        listeners.admin,
        http::admin_router(app.clone()),
        stop.clone(),
    );
    let servers = tokio::spawn(async move { tokio::try_join!(decision, admin) });

    shutdown.await;
    tracing::info!(grace = ?app.config.server.shutdown_grace, "shutting down: no new connections, draining in-flight requests");
    stop.cancel();
    let result = match tokio::time::timeout(app.config.server.shutdown_grace, servers).await {
        Ok(Ok(r)) => r.map(|_| ()),
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!("shutdown grace elapsed with requests still in flight");
            Ok(())
        }
    };
    tasks.shutdown().await;
    result
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        // Decisions are tiny request/response pairs: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

/// Load the Lua scripts until Redis answers; then the node is ready.
async fn load_scripts(app: Arc<App>, stop: CancellationToken) {
    let Store::Redis(redis) = &app.store else {
        return;
    };
    let mut delay = Duration::from_millis(50);
    loop {
        match redis.load_scripts().await {
            Ok(()) => {
                app.note_redis(Ok(()));
                app.ready.store(true, Ordering::Relaxed);
                tracing::info!("Redis answered and the limiter scripts are loaded: ready");
                return;
            }
            Err(e) => app.note_redis(Err(&e)),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Forget expired in-process counters, so memory follows the live keys only.
async fn sweep_local(app: Arc<App>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Store::Local(local) = &app.store {
            local.sweep();
        }
        app.fallback.sweep();
    }
}

/// A Redis URL with any password replaced, fit for a log line.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            super::redact_url("redis://:s3cret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(super::redact_url("redis://h:6379"), "redis://h:6379");
    }
}

/// What `tollgate serve` does once the config is valid: say which store is in
/// use (first log line), bind, and run until `shutdown`.
pub async fn serve_config(
    config: crate::config::Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match &config.redis {
        None => tracing::info!("in-process store: one replica only (set redis.url or --redis for a distributed limiter)"),
        Some(r) => tracing::info!(redis = %redact_url(&r.url), prefix = %config.prefix, "Redis store"),
    }
    let listeners = Listeners::bind(config.server.listen, config.server.admin_listen).await?;
    tracing::info!(listen = %config.server.listen, admin_listen = %config.server.admin_listen, rules = config.rules.len(), "listening");
    let app = App::new(config)?;
    run(app, listeners, shutdown).await?;
    Ok(())
}
