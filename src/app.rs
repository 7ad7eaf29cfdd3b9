//! The state every request handler shares: rules, stores, client-IP policy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::allowlist::Allowlist;
use crate::client_ip::ClientIpResolver;
use crate::config::Config;
use crate::keys::KeySpace;
use crate::limiter::{LocalStore, RedisStore, Store, StoreError};
use crate::metrics::Metrics;
use crate::rule::Rule;

pub struct App {
    /// Swapped whole on reload; a request sees one consistent rule set.
    pub rules: ArcSwap<Vec<Rule>>,
    pub config: Config,
    pub store: Store,
    /// Per-replica limiter for `on_redis_error = "local"` while Redis is away.
    pub fallback: LocalStore,
    pub keys: KeySpace,
    pub resolver: ClientIpResolver,
    /// Redis answered and the scripts are loaded (always true for the embedded store).
    pub ready: AtomicBool,
    /// Last known Redis state, so transitions are logged once each way.
    pub redis_up: AtomicBool,
    pub metrics: Metrics,
    /// The IP allowlist: a lock-free table for lookups, and its store.
    pub allowlist: Arc<Allowlist>,
}

impl App {
    pub fn new(config: Config) -> Result<Arc<App>, StoreError> {
        let store = match &config.redis {
            Some(r) => Store::Redis(RedisStore::new(&r.url, r.timeout)?),
            None => Store::Local(LocalStore::new()),
        };
        let ready = store.is_local();
        let allowlist = Arc::new(Allowlist::new(&config)?);
        Ok(Arc::new(App {
            rules: ArcSwap::from_pointee(config.rules.clone()),
            keys: KeySpace::new(&config.prefix),
            resolver: ClientIpResolver::new(
                config.client_ip.trusted_proxies.clone(),
                config.client_ip.ipv6_prefix,
            ),
            fallback: LocalStore::new(),
            store,
            config,
            ready: AtomicBool::new(ready),
            redis_up: AtomicBool::new(true),
            metrics: Metrics::new(),
            allowlist,
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Record the outcome of a Redis call; logs only on a change of state.
    pub fn note_redis(&self, result: Result<(), &StoreError>) {
        match result {
            Ok(()) => {
                if !self.redis_up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis back: decisions use Redis again");
                }
            }
            Err(e) => {
                if self.redis_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis unreachable: rules apply their on_redis_error");
                }
            }
        }
    }
}
