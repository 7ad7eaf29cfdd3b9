//! An allowlist that never silently diverges: each failure injected against
//! real redis-servers (trim while a real `tollgate serve` is SIGSTOPped,
//! FLUSHALL, SHUTDOWN NOSAVE, a killed Redis, a node restarted from its
//! state file, duplicates, unknown events, a Redis gone backwards), then
//! `allow export` / `restore` with 10 000 entries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tollgate::App;

use crate::support::{
    eventually, free_port, metric, scrape, shared_redis, temp_dir, unique_prefix, RedisServer,
    TestServer, ADMIN_TOKEN,
};

/// A pure gate: only allowlisted clients pass `/admin`.
fn config(reap_interval: &str, state_file: Option<&Path>) -> String {
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What `/check` answers for a client at `ip` on `/admin`, at `addr`.
async fn gate_at(addr: std::net::SocketAddr, ip: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/check"))
        .header("x-forwarded-uri", "/admin")
        .header("x-forwarded-for", ip)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn all_answer(nodes: &[&TestServer], ip: &str, status: u16) -> bool {
    for n in nodes {
        if gate_at(n.addr, ip).await != status {
            return false;
        }
    }
    true
}

async fn add(s: &TestServer, cidr: &str, ttl: &str) -> Value {
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

async fn remove(s: &TestServer, cidr: &str) {
    let r = s
        .admin_client()
        .delete(s.admin_url(&format!("/v1/allowlist/{cidr}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

type View = (String, u64, BTreeSet<(String, u64)>);

/// `GET /v1/allowlist`: epoch, seq and the live `(cidr, expires_at)` pairs.
async fn listing(s: &TestServer) -> View {
    try_listing(s).await.expect("GET /v1/allowlist")
}

/// The same, or `None` while the admin API cannot reach Redis.
async fn try_listing(s: &TestServer) -> Option<View> {
    let r = s
        .admin_client()
        .get(s.admin_url("/v1/allowlist"))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    let entries = v["entries"]
        .as_array()?
        .iter()
        .map(|e| {
            (
                e["cidr"].as_str().unwrap().to_string(),
                e["expires_at"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Some((
        v["epoch"].as_str()?.to_string(),
        v["seq"].as_u64()?,
        entries,
    ))
}

/// This node's own table, the same shape as `listing`.
fn table_of(app: &App) -> View {
    let t = app.allowlist.table();
    let live = t.live_entries(t.clock.now_ms());
    (
        t.epoch.clone(),
        t.seq,
        live.iter().map(|(n, e)| (n.to_string(), *e)).collect(),
    )
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

async fn resyncs(s: &TestServer, reason: &str) -> f64 {
    metric(
        &scrape(s).await,
        "tollgate_allowlist_resyncs_total",
        &[("reason", reason)],
    )
}

async fn unplanned_resyncs(s: &TestServer) -> f64 {
    let text = scrape(s).await;
    ["gap", "epoch", "backwards", "unknown_event"]
        .iter()
        .map(|r| metric(&text, "tollgate_allowlist_resyncs_total", &[("reason", r)]))
        .sum()
}

fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}:{{{prefix}:allow}}:{name}")
}

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_REDIS_URL")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A redis-server that keeps its data across a kill (AOF, fsync always), in
/// its own directory.
struct PersistentRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PersistentRedis {
    fn start(name: &str) -> PersistentRedis {
        let mut r = PersistentRedis {
            port: free_port(),
            dir: temp_dir(name),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real `tollgate serve` process, killed on drop.
struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
}

impl Serve {
    async fn start(dir: &Path, config_text: &str, url: &str, prefix: &str) -> Serve {
        let file = dir.join("tollgate.toml");
        std::fs::write(&file, config_text).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin_addr.to_string()])
            .args(["--redis", url, "--prefix", prefix])
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Serve {
            child,
            addr,
            admin_addr,
        };
        eventually(Duration::from_secs(10), || async {
            readyz(s.admin_addr).await.0 == 200
        })
        .await;
        s
    }

    fn signal(&self, sig: libc::c_int) {
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A state file's epoch, seq and live entries.
fn state_file(path: &Path) -> Option<View> {
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

#[tokio::test]
async fn a_paused_follower_whose_events_were_trimmed_resyncs_on_the_gap_and_matches_the_listing() {
    let prefix = unique_prefix("resync");
    let url = shared_redis().url();
    let admin = TestServer::start(&config("1h", None), Some(&url), &prefix).await;
    let dir = temp_dir("sigstop");
    let state = dir.join("state.json");
    let node = Serve::start(&dir, &config("1h", Some(&state)), &url, &prefix).await;

    add(&admin, "192.0.2.1", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(node.addr, "192.0.2.1").await == 200
    })
    .await;

    node.signal(libc::SIGSTOP);
    for i in 10..20 {
        add(&admin, &format!("198.51.100.{i}"), "1h").await;
    }
    remove(&admin, "192.0.2.1%2F32").await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(key(&prefix, "events"))
        .arg("MAXLEN")
        .arg(0)
        .query(&mut shared_redis().conn())
        .unwrap();
    node.signal(libc::SIGCONT);

    eventually(Duration::from_secs(5), || async {
        metric(
            &node.metrics().await,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "gap")],
        ) >= 1.0
    })
    .await;
    assert_eq!(gate_at(node.addr, "192.0.2.1").await, 403, "the removal");
    for i in 10..20 {
        assert_eq!(gate_at(node.addr, &format!("198.51.100.{i}")).await, 200);
    }
    // The node's table, as its state file shows it, is the listing exactly.
    let truth = listing(&admin).await;
    assert_eq!(truth.2.len(), 10);
    eventually(Duration::from_secs(3), || async {
        state_file(&state).as_ref() == Some(&truth)
    })
    .await;
    let body = readyz(node.admin_addr).await.1;
    assert!(body.contains("allowlist in sync"), "{body}");
}

#[tokio::test]
async fn flushall_keeps_the_old_table_serving_reports_source_lost_and_an_admin_write_converges_all()
{
    let redis = RedisServer::start();
    let prefix = unique_prefix("flush");
    let n0 = TestServer::start(&config("1s", None), Some(&redis.url()), &prefix).await;
    let n1 = TestServer::start(&config("1s", None), Some(&redis.url()), &prefix).await;
    let nodes = [&n0, &n1];
    add(&n0, "192.0.2.1", "1h").await;
    add(&n0, "192.0.2.2", "1h").await;
    eventually(Duration::from_secs(2), || {
        all_answer(&nodes, "192.0.2.2", 200)
    })
    .await;
    let old_epoch = n0.app.allowlist.table().epoch.clone();

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    for n in nodes {
        eventually(Duration::from_secs(3), || async {
            let (status, body) = readyz(n.admin_addr).await;
            status == 200 && body.contains("source_lost")
        })
        .await;
        assert_eq!(
            metric(&scrape(n).await, "tollgate_allowlist_source_lost", &[]),
            1.0
        );
    }
    assert!(
        all_answer(&nodes, "192.0.2.1", 200).await,
        "the old table still serves"
    );
    assert!(all_answer(&nodes, "192.0.2.2", 200).await);

    add(&n1, "192.0.2.3", "1h").await;
    eventually(Duration::from_secs(3), || async {
        all_answer(&nodes, "192.0.2.3", 200).await && all_answer(&nodes, "192.0.2.1", 403).await
    })
    .await;
    for n in nodes {
        let (epoch, seq, entries) = table_of(&n.app);
        assert_ne!(epoch, old_epoch);
        assert_eq!((seq, entries), (listing(&n0).await.1, listing(&n0).await.2));
        let text = scrape(n).await;
        assert_eq!(metric(&text, "tollgate_allowlist_source_lost", &[]), 0.0);
        assert!(
            metric(
                &text,
                "tollgate_allowlist_resyncs_total",
                &[("reason", "epoch")]
            ) >= 1.0
        );
        assert!(readyz(n.admin_addr).await.1.contains("in sync"));
    }
}

#[tokio::test]
async fn a_redis_restarted_empty_keeps_the_old_table_serving_and_a_restore_converges_every_node() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique_prefix("nosave");
    let n0 = TestServer::start(&config("1s", None), Some(&url), &prefix).await;
    let n1 = TestServer::start(&config("1s", None), Some(&url), &prefix).await;
    let nodes = [&n0, &n1];
    add(&n0, "203.0.113.0/24", "1h").await;
    add(&n0, "2001:db8::/48", "1h").await;
    eventually(Duration::from_secs(2), || {
        all_answer(&nodes, "2001:db8::7", 200)
    })
    .await;
    let before = listing(&n0).await;
    let dir = temp_dir("nosave");
    let export = dir.join("allowlist.json");
    let o = tollgate(&[
        "allow",
        "export",
        "--output",
        export.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query::<()>(&mut redis.conn());
    redis.restart();
    for n in nodes {
        eventually(Duration::from_secs(5), || async {
            readyz(n.admin_addr).await.1.contains("source_lost")
        })
        .await;
    }
    assert!(all_answer(&nodes, "203.0.113.9", 200).await, "fail-static");

    let o = tollgate(&[
        "allow",
        "restore",
        export.to_str().unwrap(),
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("restored 2 entries"), "{}", text(&o));
    eventually(Duration::from_secs(3), || async {
        try_listing(&n0).await.is_some()
    })
    .await;
    let after = listing(&n0).await;
    assert_ne!(after.0, before.0, "a restore is a new epoch");
    assert_eq!(after.2, before.2, "with the same entries and expiries");
    for n in nodes {
        eventually(Duration::from_secs(3), || async {
            table_of(&n.app) == after && readyz(n.admin_addr).await.1.contains("in sync")
        })
        .await;
    }
}

#[tokio::test]
async fn an_entry_expires_on_every_node_while_redis_is_down_and_state_converges_after() {
    let mut redis = PersistentRedis::start("killed");
    let url = redis.url();
    let prefix = unique_prefix("down");
    let n0 = TestServer::start(&config("200ms", None), Some(&url), &prefix).await;
    let n1 = TestServer::start(&config("200ms", None), Some(&url), &prefix).await;
    let nodes = [&n0, &n1];
    let short = add(&n0, "192.0.2.10", "4s").await;
    add(&n0, "192.0.2.20", "1h").await;
    let expires_at = short["expires_at"].as_u64().unwrap();
    eventually(Duration::from_secs(2), || {
        all_answer(&nodes, "192.0.2.10", 200)
    })
    .await;

    redis.kill();
    for n in nodes {
        eventually(Duration::from_secs(5), || async {
            let (status, body) = readyz(n.admin_addr).await;
            status == 200 && body.contains("stale")
        })
        .await;
    }
    eventually(Duration::from_secs(6), || {
        all_answer(&nodes, "192.0.2.10", 403)
    })
    .await;
    assert!(
        now_ms() + 100 >= expires_at,
        "stopped matching {} ms before its expiry",
        expires_at - now_ms()
    );
    assert!(all_answer(&nodes, "192.0.2.20", 200).await);
    for n in nodes {
        let age = metric(
            &scrape(n).await,
            "tollgate_allowlist_last_sync_age_seconds",
            &[],
        );
        assert!(age >= 1.0, "sync age {age}");
    }

    redis.spawn();
    // The reaper's expire event reaches every node through the tail: no resync.
    eventually(Duration::from_secs(8), || async {
        let Some(t) = try_listing(&n0).await else {
            return false;
        };
        t.1 == 3 && t.2.len() == 1 && nodes.iter().all(|n| table_of(&n.app) == t)
    })
    .await;
    for n in nodes {
        assert_eq!(unplanned_resyncs(n).await, 0.0, "{}", scrape(n).await);
        let body = readyz(n.admin_addr).await.1;
        assert!(body.contains("in sync"), "{body}");
    }
}

#[tokio::test]
async fn a_node_restarted_while_redis_is_down_serves_its_state_file_at_once_without_expired_entries(
) {
    let mut redis = PersistentRedis::start("restart");
    let url = redis.url();
    let prefix = unique_prefix("state");
    let dir = temp_dir("state");
    let state = dir.join("node.state");
    let cfg = config("200ms", Some(&state));
    let node = TestServer::launch(&cfg, Some(&url), &prefix).await;
    let admin = TestServer::start(&config("1h", None), Some(&url), &prefix).await;
    add(&admin, "198.51.100.0/24", "1h").await;
    let short = add(&admin, "203.0.113.5", "2s").await;
    let expires_at = short["expires_at"].as_u64().unwrap();
    eventually(Duration::from_secs(3), || async {
        state_file(&state).is_some_and(|s| s.1 == 2 && s.2.len() == 2)
    })
    .await;
    node.stop().await;
    admin.stop().await;
    redis.kill();
    eventually(Duration::from_secs(5), || async {
        now_ms() > expires_at + 100
    })
    .await;

    let node = TestServer::launch(&cfg, Some(&url), &prefix).await;
    assert_eq!(
        gate_at(node.addr, "198.51.100.7").await,
        200,
        "served at once"
    );
    assert_eq!(
        gate_at(node.addr, "203.0.113.5").await,
        403,
        "expired meanwhile"
    );
    eventually(Duration::from_secs(3), || async {
        readyz(node.admin_addr).await.1.contains("stale")
    })
    .await;

    redis.spawn();
    let admin = TestServer::start(&config("1h", None), Some(&url), &prefix).await;
    // The node resumes its tail: the reaper's expire event arrives, no snapshot.
    eventually(Duration::from_secs(8), || async {
        try_listing(&admin)
            .await
            .is_some_and(|t| t.1 == 3 && table_of(&node.app) == t)
    })
    .await;
    add(&admin, "192.0.2.99", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(node.addr, "192.0.2.99").await == 200
    })
    .await;
    let text = reqwest::get(format!("http://{}/metrics", node.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["start", "gap", "epoch", "backwards", "unknown_event"] {
        assert_eq!(
            metric(
                &text,
                "tollgate_allowlist_resyncs_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn old_events_appearing_after_the_node_position_make_it_resync_as_history_was_rewritten() {
    let prefix = unique_prefix("dup");
    let url = shared_redis().url();
    let n = TestServer::start(&config("1h", None), Some(&url), &prefix).await;
    add(&n, "192.0.2.1", "1h").await;
    remove(&n, "192.0.2.1").await;
    add(&n, "192.0.2.2", "1h").await;
    eventually(Duration::from_secs(2), || async {
        n.app.allowlist.table().seq == 3
    })
    .await;
    let before = table_of(&n.app);

    // Events 1 (upsert .1) and 2 (remove .1) once more after the node's
    // position, as a failover to a replica with another history would show them.
    let mut conn = shared_redis().conn();
    let old: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key(&prefix, "events"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    for id in old.ids.iter().take(2) {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(key(&prefix, "events")).arg("*");
        for (k, v) in &id.map {
            xadd.arg(k)
                .arg(redis::from_redis_value_ref::<String>(v).unwrap());
        }
        let new_id: String = xadd.query(&mut conn).unwrap();
        // meta and stream agree, as they would on the rewritten side.
        let _: () = redis::cmd("HSET")
            .arg(key(&prefix, "meta"))
            .arg("last_id")
            .arg(new_id)
            .query(&mut conn)
            .unwrap();
    }
    eventually(Duration::from_secs(3), || async {
        resyncs(&n, "backwards").await == 1.0
    })
    .await;
    // The snapshot is Redis's own list: the re-delivered upsert of .1 is not in it.
    assert_eq!(table_of(&n.app), before);
    assert_eq!(table_of(&n.app), listing(&n).await);
    assert_eq!(gate_at(n.addr, "192.0.2.1").await, 403);
    add(&n, "192.0.2.3", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(n.addr, "192.0.2.3").await == 200
    })
    .await;
    assert_eq!(unplanned_resyncs(&n).await, 1.0, "one resync, backwards");
}

#[tokio::test]
async fn an_event_of_an_unknown_version_is_not_applied_and_the_node_resyncs() {
    let prefix = unique_prefix("ver");
    let url = shared_redis().url();
    let n = TestServer::start(&config("1h", None), Some(&url), &prefix).await;
    let first = add(&n, "192.0.2.1", "1h").await;
    eventually(Duration::from_secs(2), || async {
        n.app.allowlist.table().seq == 1
    })
    .await;
    let epoch = n.app.allowlist.table().epoch.clone();
    let _: String = redis::cmd("XADD")
        .arg(key(&prefix, "events"))
        .arg("*")
        .arg(&[
            ("epoch", epoch.as_str()),
            ("seq", "2"),
            ("op", "upsert"),
            ("cidr", "192.0.2.66/32"),
            ("expires_at", "0"),
            ("note", ""),
            ("actor", "future"),
            ("ver", "2"),
        ])
        .query(&mut shared_redis().conn())
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        resyncs(&n, "unknown_event").await == 1.0
    })
    .await;
    assert_eq!(gate_at(n.addr, "192.0.2.66").await, 403, "never applied");
    assert_eq!(table_of(&n.app), listing(&n).await);
    assert_eq!(first["seq"], 1);
}

#[tokio::test]
async fn a_redis_that_went_backwards_makes_the_node_resync_to_it() {
    let prefix = unique_prefix("back");
    let url = shared_redis().url();
    let n = TestServer::start(&config("1h", None), Some(&url), &prefix).await;
    add(&n, "192.0.2.1", "1h").await;
    add(&n, "192.0.2.2", "1h").await;
    eventually(Duration::from_secs(2), || async {
        n.app.allowlist.table().seq == 2
    })
    .await;
    // As after a failover to a replica that had not seen the second write.
    let mut conn = shared_redis().conn();
    let _: () = redis::cmd("HSET")
        .arg(key(&prefix, "meta"))
        .arg("seq")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(key(&prefix, "entries"))
        .arg("192.0.2.2/32")
        .query(&mut conn)
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        resyncs(&n, "backwards").await == 1.0
    })
    .await;
    assert_eq!(gate_at(n.addr, "192.0.2.2").await, 403);
    assert_eq!(table_of(&n.app), listing(&n).await);
    add(&n, "192.0.2.3", "1h").await;
    eventually(Duration::from_secs(2), || async {
        gate_at(n.addr, "192.0.2.3").await == 200
    })
    .await;
}

#[tokio::test]
async fn export_and_restore_round_trip_10000_entries_and_followers_take_the_new_epoch() {
    let url = shared_redis().url();
    let (p1, p2) = (unique_prefix("rt1"), unique_prefix("rt2"));
    let node = TestServer::start(&config("1h", None), Some(&url), &p1).await;
    let dir = temp_dir("roundtrip");
    let soon = now_ms() + 3_600_000;
    let mut entries = Vec::new();
    for i in 0..10_000u32 {
        let cidr = format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255);
        let expires_at = match i % 3 {
            0 => Value::Null,
            _ => json!(soon + u64::from(i)),
        };
        entries.push(json!({"cidr": cidr, "expires_at": expires_at,
            "note": format!("n{i}"), "created_at": 1_700_000_000_000u64 + u64::from(i), "actor": "test"}));
    }
    // Five that had already expired: dropped by the restore.
    for i in 0..5 {
        entries.push(json!({"cidr": format!("172.16.0.{i}/32"), "expires_at": 1_000}));
    }
    let doc = json!({"format": "tollgate-allowlist", "version": 1, "entries": entries});
    let file = dir.join("in.json");
    std::fs::write(&file, doc.to_string()).unwrap();

    let restore = |file: &Path, prefix: &str| {
        tollgate(&[
            "allow",
            "restore",
            file.to_str().unwrap(),
            "--redis",
            &url,
            "--prefix",
            prefix,
        ])
    };
    let export = |prefix: &str| {
        let o = tollgate(&["allow", "export", "--redis", &url, "--prefix", prefix]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v
    };
    let o = restore(&file, &p1);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("restored 10000 entries") && text(&o).contains("5 had expired"),
        "{}",
        text(&o)
    );
    let first = export(&p1);
    let sorted = |v: &Value| {
        let mut e = v["entries"].as_array().unwrap().clone();
        e.sort_by_key(|e| e["cidr"].as_str().unwrap().to_string());
        e
    };
    let mut expected = entries[..10_000].to_vec();
    expected.sort_by_key(|e| e["cidr"].as_str().unwrap().to_string());
    assert_eq!(sorted(&first), expected);
    eventually(Duration::from_secs(5), || async {
        let t = node.app.allowlist.table();
        t.epoch == first["epoch"].as_str().unwrap() && t.len() == 10_000
    })
    .await;
    let m = scrape(&node).await;
    assert_eq!(metric(&m, "tollgate_allowlist_entries", &[]), 10_000.0);
    assert_eq!(metric(&m, "tollgate_allowlist_seq_lag", &[]), 0.0);
    assert_eq!(
        metric(
            &m,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "epoch")]
        ),
        1.0
    );
    assert!(metric(&m, "tollgate_allowlist_apply_seconds_count", &[]) >= 2.0);

    let again = dir.join("again.json");
    std::fs::write(&again, first.to_string()).unwrap();
    let o = restore(&again, &p2);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sorted(&export(&p2)), expected);

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"format":"tollgate-allowlist","version":1,"entries":[{"cidr":"10.0.0.1/8","expires_at":null}]}"#).unwrap();
    let o = restore(&bad, &p2);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("entries[0].cidr"), "{}", text(&o));
    assert_eq!(sorted(&export(&p2)).len(), 10_000, "nothing written");
}
