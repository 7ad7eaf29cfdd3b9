//! Counters in Redis: one Lua script call per decision, over one multiplexed
//! connection so concurrent decisions pipeline on the same socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use redis::{Cmd, ErrorKind, Script, ScriptInvocation, ServerErrorKind};

use super::{Algorithm, Call, Outcome};
use crate::keys::KeySpace;
use crate::redis_conn::{Endpoint, RedisConn, StoreError};

/// Scripts are built once; `Script` computes the SHA1 that EVALSHA uses.
/// Each algorithm names its own file: no table index that a reordered enum
/// could point at the wrong Lua.
fn script(algorithm: Algorithm) -> &'static Script {
    static FIXED_WINDOW: OnceLock<Script> = OnceLock::new();
    static SLIDING_WINDOW: OnceLock<Script> = OnceLock::new();
    static SLIDING_LOG: OnceLock<Script> = OnceLock::new();
    static GCRA: OnceLock<Script> = OnceLock::new();
    let (cell, source) = match algorithm {
        Algorithm::FixedWindow => (&FIXED_WINDOW, include_str!("../../lua/fixed_window.lua")),
        Algorithm::SlidingWindow => (
            &SLIDING_WINDOW,
            include_str!("../../lua/sliding_window.lua"),
        ),
        Algorithm::SlidingLog => (&SLIDING_LOG, include_str!("../../lua/sliding_log.lua")),
        Algorithm::Gcra => (&GCRA, include_str!("../../lua/gcra.lua")),
    };
    cell.get_or_init(|| Script::new(source))
}

pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
    Algorithm::SlidingLog,
    Algorithm::Gcra,
];

/// Limiter counters in Redis. The connection is made by `connect` (the
/// breaker's probe calls it), so a replica can start, and decide by
/// `on_redis_error`, while Redis is still away; and after a Sentinel failover
/// the probe's `connect` finds the new master.
pub struct RedisStore {
    endpoint: Endpoint,
    /// Shared with a reload's background reconnect.
    conn: Arc<ArcSwapOption<RedisConn>>,
    /// `redis.timeout` in nanoseconds; a reload may change it (`set_timeout`).
    timeout: AtomicU64,
}

impl RedisStore {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        RedisStore {
            endpoint,
            conn: Arc::new(ArcSwapOption::empty()),
            timeout: AtomicU64::new(timeout.as_nanos() as u64),
        }
    }

    /// `redis.timeout`: the bound of every limiter call.
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout.load(Ordering::Relaxed))
    }

    /// A reload's new `redis.timeout`: calls made from now on are bounded by
    /// it. A cluster connection carries it as its response timeout, so the
    /// caller reconnects (`reconnect_in_background`) to apply it there too.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout
            .store(timeout.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// (Re)connect: a fresh connection replaces the old one. Single servers and
    /// clusters keep theirs (they reconnect and follow MOVED by themselves);
    /// a Sentinel endpoint always asks who the master is now.
    pub async fn connect(&self) -> Result<(), StoreError> {
        let keep = self.conn.load().is_some() && !self.endpoint.is_sentinel();
        if keep {
            return Ok(());
        }
        let timeout = self.timeout();
        let bound = timeout.max(Duration::from_secs(1));
        // Every call on this connection is wrapped in a timeout of its own.
        let conn = tokio::time::timeout(bound, self.endpoint.connect_bounded_by_caller(timeout))
            .await
            .map_err(|_| StoreError::Timeout(bound))?
            .map_err(StoreError::from)?;
        self.conn.store(Some(Arc::new(conn)));
        Ok(())
    }

    /// A fresh connection with the endpoint's current settings (a reload
    /// changed credentials or TLS files), made in the background: the old one
    /// serves until the new one is up; on failure the breaker's probe retries.
    pub fn reconnect_in_background(&self) -> tokio::task::JoinHandle<()> {
        let (endpoint, cell, timeout) = (self.endpoint.clone(), self.conn.clone(), self.timeout());
        tokio::spawn(async move {
            let bound = timeout.max(Duration::from_secs(1));
            match tokio::time::timeout(bound, endpoint.connect_bounded_by_caller(timeout)).await {
                Ok(Ok(conn)) => {
                    cell.store(Some(Arc::new(conn)));
                    tracing::info!("reload: reconnected to Redis with the new settings");
                }
                Ok(Err(e)) => tracing::error!(error = %StoreError::from(e), "reload: cannot reconnect to Redis with the new settings; the old connection stays"),
                Err(_) => tracing::error!("reload: Redis did not answer within {bound:?} with the new settings; the old connection stays"),
            }
        })
    }

    /// The current connection, if one was made.
    pub fn connection(&self) -> Result<RedisConn, StoreError> {
        self.conn
            .load()
            .as_deref()
            .cloned()
            .ok_or(StoreError::NotConnected)
    }

    /// Connect if needed and load every script (SCRIPT LOAD; on a cluster, on
    /// every master), so the hot path is EVALSHA from the start.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        self.connect().await?;
        let mut conn = self.connection()?;
        for alg in ALGORITHMS {
            let load = script(alg).load_async(&mut conn);
            tokio::time::timeout(Duration::from_secs(2), load)
                .await
                .map_err(|_| StoreError::Timeout(Duration::from_secs(2)))?
                .map_err(StoreError::from)?;
        }
        Ok(())
    }

    pub async fn check(&self, call: Call<'_>) -> Result<Outcome, StoreError> {
        let mut conn = self.connection()?;
        // EVALSHA built in one buffer; on NOSCRIPT (Redis lost its scripts, so
        // this call did not run) once more through `Script`, whose EVAL loads
        // it. Never a blind retry: after a timeout the increment may have happened.
        let ask = async {
            match evalsha(call).query_async::<Vec<i64>>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    invocation(call).invoke_async(&mut conn).await
                }
                r => r,
            }
        };
        let timeout = self.timeout();
        let reply: Vec<i64> = tokio::time::timeout(timeout, ask)
            .await
            .map_err(|_| StoreError::Timeout(timeout))?
            .map_err(StoreError::from)?;
        Outcome::from_reply(&reply, call.limits)
            .ok_or_else(|| StoreError::Reply(format!("script reply {reply:?}")))
    }

    pub async fn reset(
        &self,
        base: &str,
        limits: &[crate::rate::Rate],
        channel: &str,
    ) -> Result<(), StoreError> {
        self.connect().await?;
        let mut conn = self.connection()?;
        let keys: Vec<String> = limits
            .iter()
            .map(|r| KeySpace::limit_key(base, r.period_ms))
            .collect();
        let admin_timeout = self.timeout().max(Duration::from_secs(2));
        // DEL stays in the call's slot (one hash tag); PUBLISH reaches every
        // node of a cluster. Two commands: a pipeline must not span slots.
        let del = redis::cmd("DEL").arg(&keys).to_owned();
        let publish = redis::cmd("PUBLISH").arg(channel).arg(base).to_owned();
        for cmd in [del, publish] {
            tokio::time::timeout(admin_timeout, cmd.query_async::<()>(&mut conn))
                .await
                .map_err(|_| StoreError::Timeout(admin_timeout))?
                .map_err(StoreError::from)?;
        }
        Ok(())
    }
}

/// A call's script arguments, in the order of `lua/*.lua`: a key per limit;
/// then the cost and, per limit, its units and period (and burst, for gcra).
fn arguments(call: Call<'_>, mut key: impl FnMut(String), mut arg: impl FnMut(u64)) {
    for rate in call.limits {
        key(KeySpace::limit_key(call.base, rate.period_ms));
    }
    arg(call.cost);
    for rate in call.limits {
        arg(rate.limit);
        arg(rate.period_ms);
        if call.algorithm == Algorithm::Gcra {
            arg(call.burst.unwrap_or(rate.limit));
        }
    }
}

/// The call as one EVALSHA command: every argument in one buffer (a
/// `ScriptInvocation` allocates per argument, then copies them into one).
fn evalsha(call: Call<'_>) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script(call.algorithm).get_hash())
        .arg(call.limits.len());
    let mut args = Vec::with_capacity(1 + 3 * call.limits.len());
    arguments(
        call,
        |k| {
            cmd.arg(k);
        },
        |a| args.push(a),
    );
    for a in args {
        cmd.arg(a);
    }
    cmd
}

/// The call through `Script`, which loads the script when Redis lacks it.
fn invocation(call: Call<'_>) -> ScriptInvocation<'static> {
    let mut inv = script(call.algorithm).prepare_invoke();
    let mut args = Vec::new();
    arguments(
        call,
        |k| {
            inv.key(k);
        },
        |a| args.push(a),
    );
    for a in args {
        inv.arg(a);
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_algorithm_runs_the_lua_file_named_after_it() {
        for alg in ALGORITHMS {
            let path = format!("{}/lua/{alg}.lua", env!("CARGO_MANIFEST_DIR"));
            let source = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                script(alg).get_hash(),
                Script::new(&source).get_hash(),
                "{alg}"
            );
        }
    }
}
