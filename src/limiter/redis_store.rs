//! Counters in Redis: one Lua script call per decision, over one multiplexed
//! connection so concurrent decisions pipeline on the same socket.

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use super::{Algorithm, Call, Outcome, StoreError};
use crate::keys::KeySpace;

/// Scripts are built once; `Script` computes the SHA1 that EVALSHA uses.
fn script(algorithm: Algorithm) -> &'static Script {
    static SCRIPTS: OnceLock<[Script; 4]> = OnceLock::new();
    let all = SCRIPTS.get_or_init(|| {
        [
            Script::new(include_str!("../../lua/fixed_window.lua")),
            Script::new(include_str!("../../lua/sliding_window.lua")),
            Script::new(include_str!("../../lua/sliding_log.lua")),
            Script::new(include_str!("../../lua/gcra.lua")),
        ]
    });
    &all[algorithm as usize]
}

pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
    Algorithm::SlidingLog,
    Algorithm::Gcra,
];

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
}

impl RedisStore {
    /// A lazy connection: nothing is dialled until the first call, so a replica
    /// can start (and decide by `on_redis_error`) while Redis is still away.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Server(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        Ok(RedisStore { conn, timeout })
    }

    /// Load every script (SCRIPT LOAD), so the hot path is EVALSHA from the start.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for alg in ALGORITHMS {
            let load = script(alg).load_async(&mut conn);
            tokio::time::timeout(Duration::from_secs(2), load)
                .await
                .map_err(|_| StoreError::Timeout(Duration::from_secs(2)))?
                .map_err(classify)?;
        }
        Ok(())
    }

    pub async fn check(&self, call: Call<'_>) -> Result<Outcome, StoreError> {
        let mut inv = script(call.algorithm).prepare_invoke();
        for rate in call.limits {
            inv.key(KeySpace::limit_key(call.base, rate.period_ms));
        }
        inv.arg(call.cost);
        for rate in call.limits {
            inv.arg(rate.limit).arg(rate.period_ms);
        }
        let mut conn = self.conn.clone();
        // EVALSHA, and on NOSCRIPT one EVAL (which loads it): never a blind retry,
        // since after a timeout the increment may already have happened.
        let reply: Vec<i64> = tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(classify)?;
        Outcome::from_reply(&reply, call.limits)
            .ok_or_else(|| StoreError::Server(format!("unexpected script reply {reply:?}")))
    }

    pub async fn reset(
        &self,
        base: &str,
        limits: &[crate::rate::Rate],
        channel: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        let keys: Vec<String> = limits
            .iter()
            .map(|r| KeySpace::limit_key(base, r.period_ms))
            .collect();
        pipe.del(&keys).ignore().publish(channel, base).ignore();
        let admin_timeout = self.timeout.max(Duration::from_secs(2));
        tokio::time::timeout(admin_timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(admin_timeout))?
            .map_err(classify)
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

pub(crate) fn classify(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(Duration::ZERO)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unreachable(e.to_string())
    } else {
        StoreError::Server(e.to_string())
    }
}
