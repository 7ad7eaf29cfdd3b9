//! The allowlist seen from outside: its Redis keys (from `tollgate::keys`),
//! the `/admin` gate, admin API writes and listings, a node's own table, its
//! state file, its stream and its resync counters.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::streams::StreamRangeReply;
use serde_json::{json, Value};
use tollgate::keys::{AllowKeys, KeySpace};
use tollgate::App;

use super::metrics::{metric, scrape};
use super::server::TestServer;

/// The allowlist's keys under `prefix`, built where tollgate builds them.
pub fn allow_keys(prefix: &str) -> AllowKeys {
    KeySpace::new(prefix).allowlist()
}

/// A pure gate: only allowlisted clients pass `/admin`; `state_file` if given.
pub fn gate_config(reap_interval: &str, state_file: Option<&Path>) -> String {
    let state = state_file
        .map(|p| format!("state_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    format!(
        r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[allowlist]
reap_interval = "{reap_interval}"
{state}
[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"
"#
    )
}

/// Wall-clock milliseconds, the unit of an entry's `expires_at`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Redis's own clock (`TIME`), in milliseconds: what expiries are measured on.
pub fn redis_now_ms(conn: &mut redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    s * 1000 + us / 1000
}

/// What `/check` answers at `addr` for a client at `ip` asking for `/admin`
/// (a path the allowlist gates); 0 when nothing answers.
pub async fn gate_at(addr: SocketAddr, ip: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/check"))
        .header("x-forwarded-uri", "/admin")
        .header("x-forwarded-for", ip)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Every node answers `status` for `ip` at the gate.
pub async fn all_answer(nodes: &[impl Borrow<TestServer>], ip: &str, status: u16) -> bool {
    for n in nodes {
        if gate_at(n.borrow().addr, ip).await != status {
            return false;
        }
    }
    true
}

/// `POST /v1/allowlist` of `cidr` for `ttl`; it must answer 201. The entry.
pub async fn add_entry(s: &TestServer, cidr: &str, ttl: &str) -> Value {
    let r = s
        .admin_client()
        .post(s.admin_url("/v1/allowlist"))
        .json(&json!({"cidr": cidr, "ttl": ttl}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// `DELETE /v1/allowlist/<cidr>` (`/` written `%2F`); it must answer 200.
pub async fn remove_entry(s: &TestServer, cidr: &str) {
    let r = s
        .admin_client()
        .delete(s.admin_url(&format!("/v1/allowlist/{cidr}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An allowlist as epoch, seq and the live `(cidr, expires_at)` pairs.
pub type View = (String, u64, BTreeSet<(String, u64)>);

/// `GET /v1/allowlist`, every page.
pub async fn listing(s: &TestServer) -> View {
    try_listing(s).await.expect("GET /v1/allowlist")
}

/// The same, or `None` while the admin API cannot reach Redis. Follows the
/// pages; epoch and seq are those of the last page.
pub async fn try_listing(s: &TestServer) -> Option<View> {
    let (epoch, seq, raw) = all_pages(s).await?;
    let entries = raw
        .iter()
        .map(|e| {
            (
                e["cidr"].as_str().unwrap().to_string(),
                e["expires_at"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Some((epoch, seq, entries))
}

/// Every page of `GET /v1/allowlist`: the last page's epoch and seq, and
/// every entry as the API shows it; `None` while the API cannot answer.
async fn all_pages(s: &TestServer) -> Option<(String, u64, Vec<Value>)> {
    let mut entries = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let r = s
            .admin_client()
            .get(s.admin_url(&format!("/v1/allowlist?cursor={cursor}&count=1000")))
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        entries.extend(v["entries"].as_array()?.iter().cloned());
        match v["cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => {
                return Some((
                    v["epoch"].as_str()?.to_string(),
                    v["seq"].as_u64()?,
                    entries,
                ))
            }
        }
    }
}

/// This node's own table, the same shape as `listing`.
pub fn table_of(app: &App) -> View {
    let t = app.allowlist.table();
    let live = t.live_entries(t.clock.now_ms());
    (
        t.epoch.clone(),
        t.seq,
        live.iter().map(|(n, e)| (n.to_string(), *e)).collect(),
    )
}

/// A state file's epoch, seq and live entries; `None` until it is written.
pub fn state_file(path: &Path) -> Option<View> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let entries = v["entries"]
        .as_array()?
        .iter()
        .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_u64().unwrap()))
        .collect();
    Some((
        v["epoch"].as_str()?.to_string(),
        v["seq"].as_u64()?,
        entries,
    ))
}

/// Every event in the allowlist's stream under `prefix`, as field maps.
pub fn stream_events(conn: &mut redis::Connection, prefix: &str) -> Vec<HashMap<String, String>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(allow_keys(prefix).events)
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    reply
        .ids
        .iter()
        .map(|id| {
            id.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                .collect()
        })
        .collect()
}

/// `tollgate_allowlist_resyncs_total{reason}` on a node.
pub async fn resyncs(s: &TestServer, reason: &str) -> f64 {
    metric(
        &scrape(s).await,
        "tollgate_allowlist_resyncs_total",
        &[("reason", reason)],
    )
}

/// Resyncs no healthy run has: a gap, a new epoch, Redis gone backwards, an
/// unknown event.
pub async fn unplanned_resyncs(s: &TestServer) -> f64 {
    let text = scrape(s).await;
    ["gap", "epoch", "backwards", "unknown_event"]
        .iter()
        .map(|r| metric(&text, "tollgate_allowlist_resyncs_total", &[("reason", r)]))
        .sum()
}

/// `GET /v1/allowlist`, every page, each entry whole (cidr, expires_at,
/// note, actor, created_at) and sorted; with the epoch. `None` while the
/// admin API cannot answer.
pub async fn whole_listing(s: &TestServer) -> Option<(String, Vec<Value>)> {
    let (epoch, _, raw) = all_pages(s).await?;
    let mut entries: Vec<Value> = raw
        .iter()
        .map(|e| {
            json!({"cidr": e["cidr"], "expires_at": e["expires_at"], "note": e["note"],
                   "actor": e["actor"], "created_at": e["created_at"]})
        })
        .collect();
    entries.sort_by_key(|e| e["cidr"].as_str().unwrap_or_default().to_string());
    Some((epoch, entries))
}

/// Empty Redis and take the fleet restore's election lock in one step
/// (`MULTI`), as if a node were restoring: the fleet waits (serving its
/// tables) until `release_restore_lock`.
pub fn flush_holding_the_restore_lock(conn: &mut redis::Connection, prefix: &str) {
    let _: () = redis::pipe()
        .atomic()
        .cmd("FLUSHALL")
        .ignore()
        .cmd("SET")
        .arg(allow_keys(prefix).restore_lock)
        .arg("held-by-the-test")
        .ignore()
        .query(conn)
        .unwrap();
}

pub fn release_restore_lock(conn: &mut redis::Connection, prefix: &str) {
    let _: () = redis::cmd("DEL")
        .arg(allow_keys(prefix).restore_lock)
        .query(conn)
        .unwrap();
}

/// The `restore` events in the stream, as field maps.
pub fn restore_events(conn: &mut redis::Connection, prefix: &str) -> Vec<HashMap<String, String>> {
    stream_events(conn, prefix)
        .into_iter()
        .filter(|e| e.get("op").map(String::as_str) == Some("restore"))
        .collect()
}
