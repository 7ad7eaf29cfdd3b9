//! The state every request handler shares: rules, stores, client-IP policy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::activity::Activity;
use crate::allowlist::Allowlist;
use crate::check::Limiter;
use crate::client_ip::ClientIpResolver;
use crate::config::Config;
use crate::keys::KeySpace;
use crate::limiter::Store;
use crate::metrics::Metrics;
use crate::rule::Rule;

pub struct App {
    /// Swapped whole on reload; a request sees one consistent rule set.
    pub rules: ArcSwap<Vec<Rule>>,
    pub config: Config,
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
    /// Heartbeats, active days, tracked rules: counted here, flushed to Redis each second.
    pub activity: Arc<Activity>,
    /// When this node was built: its uptime in `GET /v1/status`.
    pub started: std::time::Instant,
}

impl App {
    pub fn new(config: Config) -> Arc<App> {
        let mut metrics = Metrics::new();
        let limiter = Limiter::new(&config, &metrics);
        let ready = limiter.store.is_local();
        let allowlist = Arc::new(Allowlist::new(&config));
        crate::allowlist::status::register(&allowlist, metrics.registry_mut());
        metrics.zero_decisions(config.rules.iter().map(|r| r.name.as_str()));
        let activity = Arc::new(Activity::new(
            config.activity.clone(),
            KeySpace::new(&config.prefix).activity(),
            config.redis.as_ref().map(|r| r.endpoint.clone()),
            metrics.registry_mut(),
        ));
        Arc::new(App {
            limiter,
            rules: ArcSwap::from_pointee(config.rules.clone()),
            keys: KeySpace::new(&config.prefix),
            resolver: ClientIpResolver::new(
                config.client_ip.trusted_proxies.clone(),
                config.client_ip.ipv6_prefix,
            ),
            config,
            ready: AtomicBool::new(ready),
            metrics,
            allowlist,
            activity,
            started: std::time::Instant::now(),
        })
    }

    /// Apply a reloaded config: the new rules apply to new requests. Settings
    /// that live in sockets and connections need a restart; say so.
    pub fn reload(&self, new: Config) {
        let old = &self.config;
        let old_redis = old.redis.as_ref().map(|r| &r.endpoint);
        let new_redis = new.redis.as_ref().map(|r| &r.endpoint);
        if new.server.listen != old.server.listen
            || new.server.admin_listen != old.server.admin_listen
            || new.server.grpc_listen != old.server.grpc_listen
            || new_redis.map(|e| e.topology()) != old_redis.map(|e| e.topology())
            || new.prefix != old.prefix
            || new.client_ip.trusted_proxies != old.client_ip.trusted_proxies
            || new.server.forwarded_request != old.server.forwarded_request
        {
            tracing::warn!("reload: listen addresses (grpc_listen too), Redis URLs, prefix, trusted proxies and server.forwarded_request take effect only after a restart");
        }
        if let (Some(old_e), Some(new_e)) = (old_redis, new_redis) {
            if old_e.topology() == new_e.topology() && old_e.access() != new_e.access() {
                self.reconnect_redis(new_e.access().as_ref().clone());
            }
        }
        let n = new.rules.len();
        self.metrics
            .zero_decisions(new.rules.iter().map(|r| r.name.as_str()));
        let changes = crate::rule::Changes::between(&self.rules.load(), &new.rules);
        self.rules.store(Arc::new(new.rules));
        // Cached denials were computed under the old limits.
        self.limiter.deny_cache.clear();
        tracing::info!(
            rules = n,
            added = ?changes.added,
            removed = ?changes.removed,
            changed = ?changes.changed.iter().map(|c| &c.0).collect::<Vec<_>>(),
            "config reloaded: new rules apply to new requests"
        );
        for (rule, before, after) in &changes.changed {
            // Keys hold the algorithm and each limit's period, not its count.
            tracing::info!(rule = %rule, %before, %after, "rule changed: counters of an unchanged algorithm and period carry over");
        }
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
        if let Some(writer) = self.allowlist.redis() {
            writer.forget_connection();
        }
        tracing::info!(redis = %store.endpoint(), "reload: Redis credentials or TLS files changed, reconnecting");
        if tokio::runtime::Handle::try_current().is_ok() {
            store.reconnect_in_background();
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
