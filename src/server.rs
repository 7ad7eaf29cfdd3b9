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
    pub async fn bind(decision: SocketAddr, admin: SocketAddr) -> Result<Listeners, BindError> {
        Ok(Listeners {
            decision: bind("server.listen", decision).await?,
            admin: bind("server.admin_listen", admin).await?,
            grpc: None,
        })
    }

    /// Also bind the gRPC listener, when an address is given.
    pub async fn with_grpc(mut self, grpc: Option<SocketAddr>) -> Result<Listeners, BindError> {
        if let Some(addr) = grpc {
            self.grpc = Some(bind("server.grpc_listen", addr).await?);
        }
        Ok(self)
    }
}

/// A listener that could not be bound, named by its config key:
/// `server.listen 127.0.0.1:8080: address already in use`.
#[derive(Debug, thiserror::Error)]
#[error("{key} {addr}: {reason}")]
pub struct BindError {
    pub key: &'static str,
    pub addr: SocketAddr,
    pub reason: String,
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| {
        use std::io::ErrorKind;
        let reason = match e.kind() {
            ErrorKind::AddrInUse => "address already in use (another process listens there)".into(),
            ErrorKind::AddrNotAvailable => {
                "address not available (no interface has this IP)".into()
            }
            ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".into()
            }
            _ => e.to_string(),
        };
        BindError { key, addr, reason }
    })
}

/// Why `tollgate serve` stopped or never served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Refused before binding anything, like a bad config (the binary exits 2).
    #[error("{0}")]
    Refused(String),
    /// A listener could not be bound: the config is fine, the machine is
    /// not (the binary exits 1).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serve until `shutdown` resolves; then stop accepting and give in-flight
/// requests `server.shutdown_grace` to finish.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin_addr = listeners.admin.local_addr()?;
    check_admin_exposure(admin_addr, &app.config.server)?;
    if app.config.server.admin_token.is_none() {
        tracing::warn!(admin_addr = %admin_addr, "no admin token set ({}): the admin API is open to local users", app.config.server.admin_token_env);
    }
    let decision_addr = listeners.decision.local_addr()?;
    let grpc_addr = listeners
        .grpc
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
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
    for list in [&app.allowlist, &app.denylist] {
        tasks.spawn(allowlist::follower::run(list.clone(), stop.clone()));
    }
    tasks.spawn(allowlist::follower::run(
        app.overrides.clone(),
        stop.clone(),
    ));
    let latest = app.clone();
    tasks.spawn(crate::fleet::beat::run(
        app.fleet.clone(),
        listeners.decision.local_addr()?.to_string(),
        move || crate::fleet::config_hash(&latest.latest.load()),
        stop.clone(),
    ));
    for list in [&app.allowlist, &app.denylist] {
        let reap_every = app.config.list(list.kind()).reap_interval;
        tasks.spawn(allowlist::reaper::run(
            list.clone(),
            reap_every,
            stop.clone(),
        ));
    }
    tasks.spawn(allowlist::reaper::run(
        app.overrides.clone(),
        app.config.overrides.reap_interval,
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
    // Only now: bound, checked, and the accept loops running.
    let grpc_listen = grpc_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(listen = %decision_addr, admin_listen = %admin_addr, grpc_listen = %grpc_listen, rules = app.rules.load().len(), "listening");

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

/// An admin API without a token is allowed on loopback only. Checked on the
/// configured address before anything is bound, and again on the bound one.
pub fn check_admin_exposure(
    addr: SocketAddr,
    server: &crate::config::ServerConfig,
) -> std::io::Result<()> {
    if server.admin_token.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "refusing to serve the admin API on {addr} (server.admin_listen) without a token: set {} (or listen on a loopback address)",
            server.admin_token_env
        )));
    }
    Ok(())
}

/// A Redis URL with its credentials replaced, fit for a log line.
pub use crate::redis_conn::redact_url;

/// What `tollgate serve` does once the config is valid: refuse what the
/// config must not do, say which store is in use (first log line), bind,
/// and run until `shutdown`, reloading the config on SIGHUP and when `file`
/// changes (`server/reload.rs`).
pub async fn serve_config(
    config: crate::config::Config,
    file: Option<ConfigFile>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    check_admin_exposure(config.server.admin_listen, &config.server)
        .map_err(|e| ServeError::Refused(e.to_string()))?;
    match &config.redis {
        None => tracing::info!("in-process store: one replica only (set redis.url or --redis for a distributed limiter)"),
        Some(r) => {
            // The endpoint's text names its transport ("Redis over plain TCP").
            tracing::info!(redis = %r.endpoint, prefix = %config.prefix, "Redis store");
            if r.endpoint.transport().contains("NOT VERIFIED") {
                tracing::warn!("INSECURE: redis.tls.insecure_skip_verify is on: the Redis server's certificate is not checked, so anyone on the network path can read and change counters and the allowlist");
            }
        }
    }
    let listeners = Listeners::bind(config.server.listen, config.server.admin_listen)
        .await?
        .with_grpc(config.server.grpc_listen)
        .await?;
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
    Ok(result?)
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
