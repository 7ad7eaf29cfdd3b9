//! The two stores a limiter test must hold on (embedded and Redis), and an
//! `App` without listeners over either, for library-level tests.

use std::sync::Arc;
use std::time::Duration;

use tollgate::config::{self, Overrides};
use tollgate::App;

use super::redis::shared_redis;
use super::server::generous_redis_timeout;
use super::wait::eventually_explained;

/// Both stores, for tests that must hold on each.
#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Embedded,
    Redis,
}

pub const BOTH_STORES: [StoreKind; 2] = [StoreKind::Embedded, StoreKind::Redis];

impl StoreKind {
    pub fn redis_url(self) -> Option<String> {
        match self {
            StoreKind::Embedded => None,
            StoreKind::Redis => Some(shared_redis().url()),
        }
    }
}

/// An app (no listeners) over the given store, for library-level tests.
pub async fn app_for(kind: StoreKind, prefix: &str, config_text: &str) -> Arc<App> {
    let ov = Overrides {
        redis_url: kind.redis_url(),
        redis_prefix: Some(prefix.into()),
        ..Default::default()
    };
    let config_text = generous_redis_timeout(config_text, ov.redis_url.is_some());
    let cfg = config::parse("test.toml", &config_text, &ov).unwrap_or_else(|e| panic!("{e}"));
    let app = App::new(cfg);
    if let tollgate::limiter::Store::Redis(r) = &app.limiter.store {
        // As the server's probe does: a busy machine can miss redis.timeout once.
        eventually_explained(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                r.load_scripts()
                    .await
                    .map_err(|e| format!("scripts not loaded: {e}"))
            },
        )
        .await;
    }
    app
}
