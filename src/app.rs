//! The state every request handler shares: rules, stores, client-IP policy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::activity::Activity;
use crate::allowlist::kind::ListKind;
use crate::allowlist::Allowlist;
use crate::check::Limiter;
use crate::client_ip::ClientIpResolver;
use crate::config::diff::{self, Apply};
use crate::config::watch::{Loaded, ReloadMetrics, Source};
use crate::config::Config;
use crate::keys::KeySpace;
use crate::limiter::Store;
use crate::metrics::Metrics;
use crate::rule::Rule;

pub struct App {
    /// Swapped whole on reload; a request sees one consistent rule set.
    pub rules: ArcSwap<Vec<Rule>>,
    /// The config this process started with: restart-only settings
    /// (`config::diff::KEYS`) run as here until a restart. Live ones are read
    /// where a reload puts them: `rules`, `limiter.caps()`, `latest`, …
    pub config: Config,
    /// The config as last loaded (at start or by a reload).
    pub latest: ArcSwap<Config>,
    /// Where `latest` came from: the file's hash, when and how it was
    /// loaded (`GET /v1/status`: `config`). Swapped with it by a reload.
    pub loaded: ArcSwap<Loaded>,
    /// Reloads by source and result, and whether the last one was rejected.
    pub reloads: ReloadMetrics,
    /// The store with its deny cache, breakers and fallback (`check.rs`);
    /// `decide.rs` applies the rules through it.
    pub limiter: Limiter,
    pub keys: KeySpace,
    pub resolver: ClientIpResolver,
    /// Redis answered and the scripts are loaded (always true for the embedded store).
    pub ready: AtomicBool,
    pub metrics: Metrics,
    /// The IP allowlist: a lock-free table for lookups, and its store.
    pub allowlist: Arc<Allowlist>,
    /// The IP denylist: the same machinery (`allowlist::kind`), its own keys
    /// and stream; `decide.rs` refuses its members before any rule.
    pub denylist: Arc<Allowlist>,
    /// Per-client overrides: the same machinery, (rule, key) members
    /// (`crate::overrides`); the limiter looks them up (`check/overridden.rs`).
    pub overrides: Arc<crate::overrides::Overrides>,
    /// `tollgate_denied_requests_total`: requests refused because the
    /// client is on the denylist (no rule is charged or counted for them).
    pub denied_requests: prometheus_client::metrics::counter::Counter,
    /// Bans that follow from rules: the step's metrics and failure state (`ban.rs`).
    pub bans: crate::ban::Bans,
    /// Heartbeats, active days, tracked rules: counted here, flushed to Redis each second.
    pub activity: Arc<Activity>,
    /// When this node was built: its uptime in `GET /v1/status`.
    pub started: std::time::Instant,
    /// This replica in the fleet registry (`fleet.rs`): who else shares the
    /// Redis, and how many the `local` fallback divides by.
    pub fleet: Arc<crate::fleet::Fleet>,
}

impl App {
    pub fn new(config: Config) -> Arc<App> {
        let mut metrics = Metrics::new();
        let limiter = Limiter::new(&config, &metrics);
        let ready = limiter.store.is_local();
        let allowlist = Arc::new(Allowlist::new(&config));
        crate::allowlist::status::register(&allowlist, metrics.registry_mut());
        let denylist = Arc::new(Allowlist::of(&config, ListKind::Deny));
        crate::allowlist::status::register(&denylist, metrics.registry_mut());
        let overrides = limiter.overrides.clone();
        crate::allowlist::status::register(&overrides, metrics.registry_mut());
        crate::allowlist::status::register_apply_lag(
            &[
                (ListKind::Allow, allowlist.status()),
                (ListKind::Deny, denylist.status()),
                (ListKind::Override, overrides.status()),
            ],
            metrics.registry_mut(),
        );
        let denied_requests = prometheus_client::metrics::counter::Counter::default();
        metrics.registry_mut().register(
            "denied_requests",
            "Requests refused because the client address is on the denylist (before any rule)",
            denied_requests.clone(),
        );
        let bans = crate::ban::Bans::new(metrics.registry_mut());
        metrics.zero_decisions(config.rules.iter().map(|r| r.name.as_str()));
        let reloads = ReloadMetrics::default();
        reloads.register(metrics.registry_mut());
        let activity = Arc::new(Activity::new(
            config.activity.clone(),
            KeySpace::new(&config.prefix).activity(),
            config.redis.as_ref().map(|r| r.endpoint.clone()),
            metrics.registry_mut(),
        ));
        let fleet = Arc::new(crate::fleet::Fleet::new(
            config.redis.as_ref().map(|r| r.endpoint.clone()),
            KeySpace::new(&config.prefix).fleet(),
            limiter.live_replicas.clone(),
            metrics.registry_mut(),
        ));
        Arc::new(App {
            fleet,
            limiter,
            rules: ArcSwap::from_pointee(config.rules.clone()),
            keys: KeySpace::new(&config.prefix),
            resolver: ClientIpResolver::new(
                config.client_ip.trusted_proxies.clone(),
                config.client_ip.ipv6_prefix,
            ),
            latest: ArcSwap::from_pointee(config.clone()),
            // `serve` names the file and its hash (`server::reload`).
            loaded: ArcSwap::from_pointee(Loaded::now(None, None, Source::Start)),
            reloads,
            config,
            ready: AtomicBool::new(ready),
            metrics,
            allowlist,
            denylist,
            overrides,
            denied_requests,
            bans,
            activity,
            started: std::time::Instant::now(),
        })
    }

    /// Apply a config that came from no file (an embedder's, a test's): as
    /// [`App::reload_from`] a `SIGHUP`, with no hash in the status.
    pub fn reload(&self, new: Config) {
        let path = self.loaded.load().path.clone();
        self.reload_from(new, Loaded::now(path, None, Source::Sighup));
    }

    /// Apply a reloaded config. Every live setting (`config::diff::KEYS`)
    /// applies to new requests at once; each restart-only one that changed
    /// is logged by its key and listed by `restart_pending` until a restart.
    /// What changed is logged in one line (`config reloaded: …`, see
    /// `diff::summary`), with where the config came from (`loaded`).
    pub fn reload_from(&self, new: Config, loaded: Loaded) {
        let previous = self.latest.load_full();
        let changes = diff::changes(&previous, &new);
        let changed = |key: &str| changes.iter().any(|c| c.key == key);
        self.apply_live(&new, &changed);
        let rules = crate::rule::Changes::between(&self.rules.load(), &new.rules);
        self.metrics
            .zero_decisions(new.rules.iter().map(|r| r.name.as_str()));
        self.rules.store(Arc::new(new.rules.clone()));
        // Cached denials were computed under the old limits.
        self.limiter.deny_cache.clear();
        let n = new.rules.len();
        self.latest.store(Arc::new(new));
        let (source, hash) = (loaded.source, loaded.hash.clone());
        self.loaded.store(Arc::new(loaded));

        let pending = self.restart_pending();
        for c in changes.iter().filter(|c| c.apply == Apply::Restart) {
            if pending.contains(&c.key) {
                tracing::warn!(
                    key = c.key,
                    "reload: {} changed; it takes effect after a restart",
                    c.key
                );
            } else {
                tracing::info!(
                    key = c.key,
                    "reload: {} is back to the value this process runs with",
                    c.key
                );
            }
        }
        let what = diff::summary(&changes, &rules, &pending);
        tracing::info!(
            source = source.as_str(),
            hash = hash.as_deref().unwrap_or("none"),
            rules = n,
            added = ?rules.added,
            removed = ?rules.removed,
            changed = ?rules.changed.iter().map(|c| &c.0).collect::<Vec<_>>(),
            restart_pending = ?pending,
            "config reloaded: {what}"
        );
        for (rule, before, after) in &rules.changed {
            // Keys hold the algorithm and each limit's period, not its count.
            tracing::info!(rule = %rule, %before, %after, "rule changed: counters of an unchanged algorithm and period carry over");
        }
    }

    /// Hand each live setting to the part that reads it. `changed` says
    /// which keys differ from the last load (only those with a cost — a new
    /// connection, an emptied cache — are applied only when changed).
    fn apply_live(&self, new: &Config, changed: &dyn Fn(&str) -> bool) {
        self.limiter.set_caps(new.api.clone());
        self.resolver.set_ipv6_prefix(new.client_ip.ipv6_prefix);
        self.activity.set_config(new.activity.clone());
        self.limiter
            .fallback
            .set_max_bytes(new.local_store.max_bytes);
        if let Store::Local(store) = &self.limiter.store {
            store.set_max_bytes(new.local_store.max_bytes);
        }
        // `[redis]` added or removed waits for a restart: nothing below applies.
        let (Some(r), Store::Redis(store)) = (&new.redis, &self.limiter.store) else {
            return;
        };
        self.limiter.set_fallback_replicas(r.fallback_replicas);
        if changed("redis.deny_cache_bytes") {
            self.limiter.deny_cache.resize(r.deny_cache_bytes);
        }
        let access = ["redis.username", "redis.password", "redis.tls"];
        if access.iter().any(|k| changed(k)) {
            self.reconnect_redis(r.endpoint.access().as_ref().clone());
        }
        if changed("redis.timeout") {
            store.set_timeout(r.timeout);
            // A cluster connection carries the timeout as its own.
            if store.endpoint().is_cluster() && tokio::runtime::Handle::try_current().is_ok() {
                store.reconnect_in_background();
            }
        }
    }

    /// The restart-only settings the loaded file sets differently from what
    /// this process runs with (`GET /v1/status`: `restart_pending`).
    pub fn restart_pending(&self) -> Vec<&'static str> {
        diff::changes(&self.config, &self.latest.load())
            .into_iter()
            .filter(|c| c.apply == Apply::Restart)
            .map(|c| c.key)
            .collect()
    }

    /// New Redis credentials or TLS files (a reload): every component's
    /// endpoint shares them at once; the limiter's and the allowlist writer's
    /// connections are replaced now (the old ones serve until the new one is
    /// up), the allowlist follower and the reset channel use them when they
    /// next connect (their open connections stay authenticated).
    fn reconnect_redis(&self, access: crate::redis_conn::Access) {
        let Store::Redis(store) = &self.limiter.store else {
            return;
        };
        store.endpoint().set_access(access);
        for list in [&self.allowlist, &self.denylist] {
            if let Some(writer) = list.redis() {
                writer.forget_connection();
            }
        }
        if let Some(writer) = self.overrides.redis() {
            writer.forget_connection();
        }
        tracing::info!(redis = %store.endpoint(), "reload: Redis credentials or TLS files changed, reconnecting");
        if tokio::runtime::Handle::try_current().is_ok() {
            store.reconnect_in_background();
        }
    }

    /// The IP list of `kind` (one of `ListKind::ALL`, the only kinds the
    /// IP list routes and commands are made for).
    pub fn list(&self, kind: ListKind) -> &Arc<Allowlist> {
        match kind {
            ListKind::Allow => &self.allowlist,
            ListKind::Deny => &self.denylist,
            ListKind::Override => unreachable!("overrides are not an IP list"),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
