//! The bounds that keep one client from hurting Redis or the process:
//! connections and timeouts (`[server]`), `POST /v1/check` caps (`[api]`) and
//! the in-process store's memory (`[local_store]`).
//!
//! Why the `[api]` defaults: a `sliding_log` call prunes up to `limit` members
//! and adds `cost` members per limit, so its script's work is
//! `max_limits × (max_log_limit + cost)`. With 4 limits of 25 and a cost of 25
//! the worst case measured 0.33 ms (min) / 0.48 ms (median) with
//! `scripts/lua_worst_case.sh` (EVALSHA, SLOWLOG) on a 2-core machine at load
//! average 10, where a trivial call took 0.1 ms; 4 × 50 took 0.65 / 1.08 ms.
//! The other algorithms do O(1) work per limit whatever the numbers.

use std::time::Duration;

use super::Collector;
use crate::config::raw::RawConfig;
use crate::config::{ApiConfig, LocalStoreConfig, Overrides};

pub(super) struct ServerLimits {
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

pub(super) fn validate(
    c: &mut Collector<'_>,
    raw: &RawConfig,
    ov: &Overrides,
) -> (ServerLimits, ApiConfig, LocalStoreConfig) {
    let s = &raw.server;
    if s.max_connections == 0 {
        c.push::<()>("server.max_connections", None, "must be at least 1");
    }
    let positive = |c: &mut Collector<'_>, key: &str, value| {
        let d = c.duration(key, value);
        if d == Some(Duration::ZERO) {
            c.push(key, Some(value), "must be more than 0");
        }
        d.unwrap_or(Duration::from_secs(1))
    };
    let server = ServerLimits {
        max_connections: s.max_connections.max(1),
        request_timeout: positive(c, "server.request_timeout", &s.request_timeout),
        idle_timeout: positive(c, "server.idle_timeout", &s.idle_timeout),
    };

    let a = &raw.api;
    for (key, value) in [
        ("api.max_key_bytes", a.max_key_bytes as u64),
        ("api.max_limits", a.max_limits as u64),
        ("api.max_limit", a.max_limit),
        ("api.max_log_limit", a.max_log_limit),
        ("api.max_cost", a.max_cost),
    ] {
        if value == 0 {
            c.push::<()>(key, None, "must be at least 1");
        }
    }
    let max_period = positive(c, "api.max_period", &a.max_period);
    let api = ApiConfig {
        max_key_bytes: a.max_key_bytes,
        max_limits: a.max_limits,
        max_limit: a.max_limit,
        max_log_limit: a.max_log_limit,
        max_cost: a.max_cost,
        max_period,
        shadow: ov.shadow,
    };
    let local_store = LocalStoreConfig {
        max_bytes: raw.local_store.max_bytes,
    };
    (server, api, local_store)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Overrides};

    #[test]
    fn caps_have_defaults_and_zero_is_refused_with_its_key() {
        let cfg = parse("t", "", &Overrides::default()).unwrap();
        assert_eq!(cfg.api.max_key_bytes, 512);
        assert_eq!(cfg.api.max_limits, 4);
        assert_eq!(cfg.api.max_log_limit, 25);
        assert_eq!(cfg.api.max_period.as_secs(), 7 * 86_400);
        assert_eq!(cfg.server.max_connections, 10_000);
        assert_eq!(cfg.server.idle_timeout.as_secs(), 75);
        assert_eq!(cfg.local_store.max_bytes, 64 << 20);
        let err = parse(
            "t",
            "[server]\nmax_connections = 0\nidle_timeout = \"0s\"\n[api]\nmax_cost = 0\n",
            &Overrides::default(),
        )
        .unwrap_err();
        let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
        // In file order; the counts carry no line, so they come after.
        assert_eq!(
            keys,
            [
                "server.idle_timeout",
                "server.max_connections",
                "api.max_cost"
            ]
        );
    }
}
