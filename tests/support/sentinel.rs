//! A master, a replica of it, and one sentinel watching them as "mymaster".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::isolation::{free_port, temp_dir};
use super::process::die_with_parent;
use super::redis::RedisServer;
use super::wait::{eventually, wait_explained};

/// `redis-server <conf> --sentinel`, listening on `port`, owning `dir` (a
/// sentinel rewrites its config file, so it lives in the test's dir).
pub fn spawn_sentinel(port: u16, dir: PathBuf, conf: &Path) -> RedisServer {
    let mut cmd = Command::new("redis-server");
    cmd.arg(conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    RedisServer::adopt(port, dir, cmd.spawn().unwrap())
}

pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let sport = free_port();
        let dir = temp_dir("sentinel");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sport}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
                dir.display(),
                master.port
            ),
        )
        .unwrap();
        let sentinel = spawn_sentinel(sport, dir, &conf);
        sentinel.wait_ready();
        // The sentinel learns of the replica from the master's INFO, then must
        // hear from the replica itself (link ok) before it would promote it.
        wait_explained(
            "the sentinel seeing a healthy replica",
            Duration::from_secs(30),
            || {
                let replicas: redis::Value = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg("mymaster")
                    .query(&mut sentinel.conn())
                    .unwrap();
                let text = format!("{replicas:?}");
                let healthy = text.contains("master-link-status")
                    && text.contains("\"ok\"")
                    && !text.contains("disconnected");
                healthy.then_some(()).ok_or(text)
            },
        );
        SentinelSet {
            master,
            replica,
            sentinel,
        }
    }

    /// Have the sentinel fail over, and wait until the replica is the
    /// master (the old master becomes its replica: writes there fail).
    pub async fn fail_over(&self) {
        // Retried: right after start the sentinel may still answer NOGOODSLAVE.
        eventually(Duration::from_secs(20), || async {
            self.sentinel.try_conn().is_some_and(|mut c| {
                redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg("mymaster")
                    .query::<()>(&mut c)
                    .is_ok()
            })
        })
        .await;
        eventually(Duration::from_secs(20), || async {
            let role: Vec<redis::Value> = self
                .replica
                .try_conn()
                .and_then(|mut c| redis::cmd("ROLE").query(&mut c).ok())
                .unwrap_or_default();
            matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
        })
        .await;
    }

    /// `[redis] sentinel = {...}` for this set.
    pub fn config_section(&self, timeout: &str) -> String {
        format!(
            "[redis]\nsentinel = {{ master = \"mymaster\", nodes = [\"{}\"] }}\ntimeout = \"{timeout}\"\n",
            self.sentinel.url()
        )
    }
}
