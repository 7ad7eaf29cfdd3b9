//! Running tollgate: both listeners, the background tasks, and shutdown.
//! `run` takes the shutdown future as a parameter, so tests and the binary
//! drive it the same way. Connections are accepted (with their limits and
//! timeouts) in `server/accept.rs`; the config is reloaded (SIGHUP, or a new
//! version of the file) in `server/reload.rs`.

mod accept;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod reload;
mod resets;

pub use reload::{ConfigFile, Reloader};

use crate::allowlist;
use crate::app::App;
use crate::config::watch::{Loaded, Source};
use crate::http;
use crate::limiter::Store;

pub struct Listeners {
    pub decision: TcpListener,
    pub admin: TcpListener,
    /// Envoy's gRPC services (`server.grpc_listen`), when configured.
    pub grpc: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(decision: SocketAddr, admin: SocketAddr) -> std::io::Result<Listeners> {
        Ok(Listeners {
            decision: TcpListener::bind(decision).await?,
            admin: TcpListener::bind(admin).await?,
            grpc: None,
        })
    }

    /// Also bind the gRPC listener, when an address is given.
    pub async fn with_grpc(mut self, grpc: Option<SocketAddr>) -> std::io::Result<Listeners> {
        if let Some(addr) = grpc {
            self.grpc = Some(TcpListener::bind(addr).await?);
        }
        Ok(self)
    }
}

/// Serve until `shutdown` resolves; then stop accepting and give in-flight
/// requests `server.shutdown_grace` to finish.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    check_admin_exposure(listeners.admin.local_addr()?, &app.config.server)?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(probe_redis(app.clone(), stop.clone()));
    tasks.spawn(resets::follow(app.clone(), stop.clone()));
    tasks.spawn(sweep_local(app.clone(), stop.clone()));
    let rules = app.clone();
    tasks.spawn(crate::activity::flush::run(
        app.activity.clone(),
        move |name| {
            rules
                .rules
                .load()
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.track)
        },
        stop.clone(),
    ));
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

    let limits = accept::Limits {
        max_connections: app.config.server.max_connections,
        request_timeout: app.config.server.request_timeout,
        idle_timeout: app.config.server.idle_timeout,
    };
    let open = |listener| {
        app.metrics
            .open_connections
            .get_or_create(&crate::metrics::ListenerLabels { listener })
            .clone()
    };
    let decision = accept::serve(
        listeners.decision,
        http::decision_handler(app.clone()),
        limits,
        open("decision"),
        stop.clone(),
    );
    let admin = accept::serve(
        listeners.admin,
        http::admin_handler(app.clone()),
        limits,
        open("admin"),
        stop.clone(),
    );
    let grpc = listeners.grpc.map(|l| {
        let limits = crate::grpc::Limits {
            max_connections: limits.max_connections,
            call_timeout: limits.request_timeout,
            ..Default::default()
        };
        crate::grpc::serve(app.clone(), l, limits, open("grpc"), stop.clone())
    });
    let grpc = async move {
        match grpc {
            Some(serve) => serve.await,
            None => Ok(()),
        }
    };
    let servers = tokio::spawn(async move { tokio::try_join!(decision, admin, grpc) });

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
    // Background tasks exit on `stop`; waiting a moment lets the allowlist's
    // state file get its last write. Anything still running then is aborted.
    let drained = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.shutdown().await;
    }
    result
}

/// While the breaker is open (at start, and after Redis failed), probe Redis
/// with backoff; the node is ready once the scripts are loaded.
async fn probe_redis(app: Arc<App>, stop: CancellationToken) {
    let Store::Redis(redis) = &app.limiter.store else {
        return;
    };
    app.limiter
        .breaker
        .probe(redis, &stop, || app.ready.store(true, Ordering::Relaxed))
        .await;
}

/// Forget expired in-process counters, so memory follows the live keys only.
async fn sweep_local(app: Arc<App>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Store::Local(local) = &app.limiter.store {
            local.sweep();
        }
        app.limiter.fallback.sweep();
    }
}

/// An admin API without a token is allowed on loopback only.
pub fn check_admin_exposure(
    addr: SocketAddr,
    server: &crate::config::ServerConfig,
) -> std::io::Result<()> {
    if server.admin_token.is_some() {
        return Ok(());
    }
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "refusing to serve the admin API on {addr} without a token: set {} (or listen on a loopback address)",
            server.admin_token_env
        )));
    }
    tracing::warn!(admin_addr = %addr, "no admin token set ({}): the admin API is open to local users", server.admin_token_env);
    Ok(())
}

/// A Redis URL with its credentials replaced, fit for a log line.
pub use crate::redis_conn::redact_url;

/// What `tollgate serve` does once the config is valid: say which store is in
/// use (first log line), bind, and run until `shutdown`, reloading the config
/// on SIGHUP and when `file` changes (`server/reload.rs`).
pub async fn serve_config(
    config: crate::config::Config,
    file: Option<ConfigFile>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match &config.redis {
        None => tracing::info!("in-process store: one replica only (set redis.url or --redis for a distributed limiter)"),
        Some(r) => {
            tracing::info!(redis = %r.endpoint, prefix = %config.prefix, "Redis store, {}", r.endpoint.transport());
            if r.endpoint.transport().contains("NOT VERIFIED") {
                tracing::warn!("INSECURE: redis.tls.insecure_skip_verify is on: the Redis server's certificate is not checked, so anyone on the network path can read and change counters and the allowlist");
            }
        }
    }
    let listeners = Listeners::bind(config.server.listen, config.server.admin_listen)
        .await?
        .with_grpc(config.server.grpc_listen)
        .await?;
    tracing::info!(listen = %config.server.listen, admin_listen = %config.server.admin_listen, rules = config.rules.len(), "listening");
    let app = App::new(config);
    let stop = CancellationToken::new();
    let reloader = file.map(|f| {
        let start = Loaded::now(f.path.clone(), f.hash.clone(), Source::Start);
        app.loaded.store(Arc::new(start));
        tokio::spawn(reload::run(app.clone(), f, stop.clone()))
    });
    let result = run(app, listeners, shutdown).await;
    stop.cancel();
    if let Some(task) = reloader {
        let _ = task.await;
    }
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_open_admin_api_is_refused_off_loopback() {
        let mut server = crate::config::defaults(&Default::default()).unwrap().server;
        let public: std::net::SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let err = super::check_admin_exposure(public, &server).unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_ADMIN_TOKEN"), "{err}");
        assert!(super::check_admin_exposure(local, &server).is_ok());
        server.admin_token = Some(crate::secret::Secret::new("t"));
        assert!(super::check_admin_exposure(public, &server).is_ok());
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            super::redact_url("redis://:s3cret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(super::redact_url("redis://h:6379"), "redis://h:6379");
    }
}
