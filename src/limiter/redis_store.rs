//! Counters in Redis: one Lua script call per decision, over one multiplexed
//! connection so concurrent decisions pipeline on the same socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use redis::{Cmd, ErrorKind, Script, ScriptInvocation, ServerErrorKind};

use super::lease::Grant;
use super::{Algorithm, Call, Outcome};
use crate::keys::KeySpace;
use crate::rate::Rate;
use crate::redis_conn::{Endpoint, RedisConn, StoreError};

/// The algorithm modules, each defining one Lua table of functions
/// (`check`, `charge`, `reply`); the drivers below run them.
macro_rules! module {
    (fixed_window) => {
        include_str!("../../lua/fixed_window.lua")
    };
    (sliding_window) => {
        include_str!("../../lua/sliding_window.lua")
    };
    (sliding_log) => {
        include_str!("../../lua/sliding_log.lua")
    };
    (gcra) => {
        include_str!("../../lua/gcra.lua")
    };
}

/// One rule's call: its algorithm's module, then `lua/one_rule.lua` driving it.
macro_rules! one_rule {
    ($alg:ident) => {
        concat!(
            module!($alg),
            "\nlocal M = ",
            stringify!($alg),
            "\n",
            include_str!("../../lua/one_rule.lua")
        )
    };
}

/// The Lua source of one rule's call with `algorithm` (tests run it with
/// their own clock; see tests/script_clock.rs).
pub fn script_source(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => one_rule!(fixed_window),
        Algorithm::SlidingWindow => one_rule!(sliding_window),
        Algorithm::SlidingLog => one_rule!(sliding_log),
        Algorithm::Gcra => one_rule!(gcra),
    }
}

/// The Lua source of a request's rules decided together (`lua/all_rules.lua`).
pub fn all_rules_source() -> &'static str {
    concat!(
        module!(fixed_window),
        "\n",
        module!(sliding_window),
        "\n",
        module!(sliding_log),
        "\n",
        module!(gcra),
        "\n",
        include_str!("../../lua/all_rules.lua")
    )
}

/// Scripts are built once; `Script` computes the SHA1 that EVALSHA uses.
/// Each algorithm names its own module: no table index that a reordered enum
/// could point at the wrong Lua.
fn script(algorithm: Algorithm) -> &'static Script {
    static FIXED_WINDOW: OnceLock<Script> = OnceLock::new();
    static SLIDING_WINDOW: OnceLock<Script> = OnceLock::new();
    static SLIDING_LOG: OnceLock<Script> = OnceLock::new();
    static GCRA: OnceLock<Script> = OnceLock::new();
    let cell = match algorithm {
        Algorithm::FixedWindow => &FIXED_WINDOW,
        Algorithm::SlidingWindow => &SLIDING_WINDOW,
        Algorithm::SlidingLog => &SLIDING_LOG,
        Algorithm::Gcra => &GCRA,
    };
    cell.get_or_init(|| Script::new(script_source(algorithm)))
}

/// A lease's script (`lua/lease_<algorithm>.lua`), run after the module
/// whose keys it charges; `None`: the algorithm takes no lease.
pub fn lease_source(algorithm: Algorithm) -> Option<&'static str> {
    match algorithm {
        Algorithm::FixedWindow => Some(concat!(
            module!(fixed_window),
            "\n",
            include_str!("../../lua/lease_fixed_window.lua")
        )),
        Algorithm::Gcra => Some(concat!(
            module!(gcra),
            "\n",
            include_str!("../../lua/lease_gcra.lua")
        )),
        Algorithm::SlidingWindow | Algorithm::SlidingLog => None,
    }
}

fn lease_script(algorithm: Algorithm) -> Option<&'static Script> {
    static FIXED_WINDOW: OnceLock<Script> = OnceLock::new();
    static GCRA: OnceLock<Script> = OnceLock::new();
    let cell = match algorithm {
        Algorithm::FixedWindow => &FIXED_WINDOW,
        Algorithm::Gcra => &GCRA,
        Algorithm::SlidingWindow | Algorithm::SlidingLog => return None,
    };
    Some(cell.get_or_init(|| Script::new(lease_source(algorithm).expect("has a lease script"))))
}

fn all_rules_script() -> &'static Script {
    static ALL: OnceLock<Script> = OnceLock::new();
    ALL.get_or_init(|| Script::new(all_rules_source()))
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

    /// Forget the connection, so the next `connect` makes a fresh one. For a
    /// refused AUTH: redis-rs's ConnectionManager reconnects by itself after
    /// a dropped connection, but once that reconnect's AUTH was refused (a
    /// password rotated under it) it keeps answering with that failure, even
    /// after the password works again; only a new connection tries it anew.
    pub fn forget_connection(&self) {
        self.conn.store(None);
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
        let scripts = ALGORITHMS.map(script);
        for s in scripts
            .iter()
            .copied()
            .chain([all_rules_script()])
            .chain(ALGORITHMS.iter().filter_map(|&a| lease_script(a)))
        {
            within(Duration::from_secs(2), s.load_async(&mut conn)).await?;
        }
        Ok(())
    }

    /// `PING` on the limiter's own connection, bounded by `bound`.
    pub async fn ping(&self, bound: Duration) -> Result<(), StoreError> {
        let mut conn = self.connection()?;
        within(bound, redis::cmd("PING").query_async::<()>(&mut conn)).await
    }

    pub async fn check(&self, call: Call<'_>) -> Result<Outcome, StoreError> {
        let reply = self.run(script(call.algorithm), call, &[]).await?;
        Outcome::from_reply(&reply, call.limits)
            .ok_or_else(|| StoreError::Reply(format!("script reply {reply:?}")))
    }

    /// A slice of a call's remaining quota, at least its cost
    /// (`lua/lease_<algorithm>.lua`): at most `room / divisor`, and at most
    /// `cap` units unless `cap` is 0.
    pub async fn lease(&self, call: Call<'_>, divisor: u64, cap: u64) -> Result<Grant, StoreError> {
        let script = lease_script(call.algorithm)
            .ok_or_else(|| StoreError::Reply(format!("{} takes no lease", call.algorithm)))?;
        let extra = [divisor as i64, cap as i64];
        let reply = self.run(script, call, &extra).await?;
        Grant::from_reply(&reply, call.limits)
            .ok_or_else(|| StoreError::Reply(format!("lease reply {reply:?}")))
    }

    /// One script call for `call` (its arguments, then `extra`), bounded by
    /// `redis.timeout`. EVALSHA built in one buffer; on NOSCRIPT (Redis lost
    /// its scripts, so this call did not run) once more through `Script`,
    /// whose EVAL loads it. Never a blind retry: after a timeout the
    /// increment may have happened.
    async fn run(
        &self,
        script: &Script,
        call: Call<'_>,
        extra: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.connection()?;
        let ask = async {
            match evalsha(script, call, extra)
                .query_async::<Vec<i64>>(&mut conn)
                .await
            {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    invocation(script, call, extra)
                        .invoke_async(&mut conn)
                        .await
                }
                r => r,
            }
        };
        within(self.timeout(), ask).await
    }

    /// A request's rules decided together (`lua/all_rules.lua`): each call
    /// with whether it decides (a shadow rule does not). Nothing is charged
    /// unless every deciding call passes. One Redis only: the calls' keys may
    /// lie in different cluster slots.
    pub async fn check_all(&self, calls: &[(Call<'_>, bool)]) -> Result<Vec<Outcome>, StoreError> {
        let mut conn = self.connection()?;
        let ask = async {
            match evalsha_all(calls).query_async::<Vec<i64>>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    // Redis lost its scripts: load this one, then ask once more.
                    all_rules_script().load_async(&mut conn).await?;
                    evalsha_all(calls).query_async(&mut conn).await
                }
                r => r,
            }
        };
        let reply: Vec<i64> = within(self.timeout(), ask).await?;
        split_reply(&reply, calls.iter().map(|(c, _)| c.limits))
            .ok_or_else(|| StoreError::Reply(format!("all_rules reply {reply:?}")))
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
            within(admin_timeout, cmd.query_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }
}

/// `ask` bounded by `bound`: every Redis call of the limiter is, so a stalled
/// Redis costs a request at most that (then the breaker takes over).
async fn within<T>(
    bound: Duration,
    ask: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(bound, ask)
        .await
        .map_err(|_| StoreError::Timeout(bound))?
        .map_err(StoreError::from)
}

/// A call's script arguments, in the order of `lua/*.lua`: a key per limit;
/// then the cost (negated for a call that only checks: `Call::charge`) and,
/// per limit, its units and period (and burst, for gcra).
fn arguments(call: Call<'_>, mut key: impl FnMut(String), mut arg: impl FnMut(i64)) {
    for rate in call.limits {
        key(KeySpace::limit_key(call.base, rate.period_ms));
    }
    // Every number is far below 2^63: the caps bound costs and limits.
    let cost = call.cost as i64;
    arg(if call.charge { cost } else { -cost });
    for rate in call.limits {
        arg(rate.limit as i64);
        arg(rate.period_ms as i64);
        if call.algorithm == Algorithm::Gcra {
            arg(call.burst.unwrap_or(rate.limit) as i64);
        }
    }
}

/// The call as one EVALSHA command of `script` (its arguments, then
/// `extra`): every argument in one buffer (a `ScriptInvocation` allocates
/// per argument, then copies them into one).
fn evalsha(script: &Script, call: Call<'_>, extra: &[i64]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(call.limits.len());
    let mut args = Vec::with_capacity(1 + 3 * call.limits.len());
    arguments(
        call,
        |k| {
            cmd.arg(k);
        },
        |a| args.push(a),
    );
    for a in args.into_iter().chain(extra.iter().copied()) {
        cmd.arg(a);
    }
    cmd
}

/// The call through `Script`, which loads the script when Redis lacks it.
fn invocation<'s>(script: &'s Script, call: Call<'_>, extra: &[i64]) -> ScriptInvocation<'s> {
    let mut inv = script.prepare_invoke();
    let mut args = Vec::new();
    arguments(
        call,
        |k| {
            inv.key(k);
        },
        |a| args.push(a),
    );
    for a in args.into_iter().chain(extra.iter().copied()) {
        inv.arg(a);
    }
    inv
}

/// A request's rules as one EVALSHA of `lua/all_rules.lua`: every key, then
/// the rule count and, per rule, its tag, limit count, cost, whether it
/// decides, and its numbers.
fn evalsha_all(calls: &[(Call<'_>, bool)]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    let keys: usize = calls.iter().map(|(c, _)| c.limits.len()).sum();
    cmd.arg(all_rules_script().get_hash()).arg(keys);
    let mut args: Vec<(Option<&'static str>, i64)> = vec![(None, calls.len() as i64)];
    for (call, decides) in calls {
        args.push((Some(call.algorithm.tag()), 0));
        args.push((None, call.limits.len() as i64));
        let mut first = true;
        arguments(
            *call,
            |k| {
                cmd.arg(k);
            },
            |a| {
                args.push((None, a));
                if first {
                    // After the cost: whether this rule decides.
                    args.push((None, i64::from(*decides)));
                    first = false;
                }
            },
        );
    }
    for a in args {
        match a {
            (Some(tag), _) => cmd.arg(tag),
            (None, n) => cmd.arg(n),
        };
    }
    cmd
}

/// `all_rules`' flat reply cut into one outcome per rule.
fn split_reply<'a>(reply: &[i64], rules: impl Iterator<Item = &'a [Rate]>) -> Option<Vec<Outcome>> {
    let mut rest = reply;
    let mut out = Vec::new();
    for limits in rules {
        let len = 2 + 2 * limits.len();
        if rest.len() < len {
            return None;
        }
        out.push(Outcome::from_reply(&rest[..len], limits)?);
        rest = &rest[len..];
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_algorithm_runs_the_lua_file_named_after_it() {
        for alg in ALGORITHMS {
            let path = format!("{}/lua/{alg}.lua", env!("CARGO_MANIFEST_DIR"));
            let module = std::fs::read_to_string(&path).unwrap();
            let source = script_source(alg);
            assert!(source.starts_with(&module), "{alg}");
            assert!(source.contains(&format!("\nlocal M = {alg}\n")), "{alg}");
            assert!(all_rules_source().contains(&module), "{alg}");
        }
    }

    #[test]
    fn all_rules_arguments_describe_each_rule_then_its_numbers() {
        let login = [Rate {
            limit: 2,
            period_ms: 60_000,
        }];
        let api = [Rate {
            limit: 100,
            period_ms: 60_000,
        }];
        let calls = [
            Call {
                algorithm: Algorithm::FixedWindow,
                base: "b1",
                limits: &login,
                cost: 1,
                burst: None,
                charge: true,
            },
            Call {
                algorithm: Algorithm::Gcra,
                base: "b2",
                limits: &api,
                cost: 1,
                burst: None,
                charge: true,
            },
        ];
        let cmd = evalsha_all(&[(calls[0], true), (calls[1], false)]);
        let args: Vec<String> = cmd
            .args_iter()
            .skip(2)
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                _ => unreachable!("no cursor in EVALSHA"),
            })
            .collect();
        assert_eq!(
            args,
            [
                "2", "b1:60000", "b2:60000", "2", "fw", "1", "1", "1", "2", "60000", "gc", "1",
                "1", "0", "100", "60000", "100"
            ]
        );
    }
}
