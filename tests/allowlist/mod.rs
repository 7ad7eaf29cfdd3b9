//! The distributed allowlist: tollgate servers sharing one redis-server. The
//! helpers here (a config with a gate and a bypass rule, servers, admin
//! requests, the stream, key dumps) serve every file below.

/// The admin API: bad input is a 400 naming the field, the embedded store, readyz.
mod api;
/// `tollgate allow` against the same Redis: round trip, bad input, no Redis.
mod cli;
/// Who matches: longest prefix, IPv4-mapped and IPv6 clients, untrusted peers, bypass rules.
mod matching;
/// Changes reaching every node: adds, removes, TTL expiry, re-adds, new epochs and gaps.
mod sync;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::allowlist::{self, all_answer, allow_keys, gate_at, stream_events};
use crate::support::{
    eventually, free_port, metric, scrape, shared_redis, unique_prefix, TestServer,
};

/// `admin` is a pure gate; `login` lets members skip its limit.
fn config(reap_interval: &str, trusted: &str) -> String {
    format!(
        r#"
[client_ip]
trusted_proxies = [{trusted}]

[allowlist]
reap_interval = "{reap_interval}"

[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"

[[rule]]
name = "login"
match = {{ path_prefix = "/login" }}
limits = ["1/m"]
allowlist = "bypass"
"#
    )
}

const TRUSTED: &str = r#""127.0.0.1/32""#;

async fn servers(n: usize, reap_interval: &str) -> (String, Vec<TestServer>) {
    let prefix = unique_prefix("allow");
    let url = shared_redis().url();
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TestServer::start(&config(reap_interval, TRUSTED), Some(&url), &prefix).await);
    }
    (prefix, all)
}

/// The status `/check` (or `/check/nginx`) answers for a client at `ip` on `path`.
async fn ask(s: &TestServer, check: &str, path: &str, ip: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(s.url(check))
        .header("x-forwarded-uri", path)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

/// The status `/check` answers for a client at `ip` on `/admin`.
async fn gate(s: &TestServer, ip: &str) -> u16 {
    gate_at(s.addr, ip).await
}

async fn add(s: &TestServer, body: Value) -> (u16, Value) {
    s.admin_json(reqwest::Method::POST, "/v1/allowlist", &body)
        .await
}

async fn admin(s: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    s.admin(method, path).await
}

async fn check_ip(s: &TestServer, ip: &str) -> (u16, Value) {
    let path = format!("/v1/allowlist/check?ip={ip}");
    admin(s, reqwest::Method::GET, &path).await
}

/// Every event in the stream, as field maps.
fn events(prefix: &str) -> Vec<HashMap<String, String>> {
    stream_events(&mut shared_redis().conn(), prefix)
}

fn ops(prefix: &str, op: &str, cidr: &str) -> usize {
    events(prefix)
        .iter()
        .filter(|e| e["op"] == op && e["cidr"] == cidr)
        .count()
}

/// `DUMP` of the four keys: byte-for-byte state.
fn dump(prefix: &str) -> Vec<Option<Vec<u8>>> {
    let mut conn = shared_redis().conn();
    allow_keys(prefix)
        .all()
        .iter()
        .map(|key| redis::cmd("DUMP").arg(key).query(&mut conn).unwrap())
        .collect()
}

fn redis_now_ms() -> u64 {
    allowlist::redis_now_ms(&mut shared_redis().conn())
}
