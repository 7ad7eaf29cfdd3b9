//! A 3-master Redis Cluster on loopback (no replicas), and the forming and
//! waiting that the plain and the TLS Cluster share.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::isolation::{free_port, temp_dir};
use super::process::on_process_thread;
use super::redis::RedisServer;
use super::wait::wait_for;

/// redis-server arguments of a Cluster node: `nodes.conf` in its own
/// `--dir`, so a restarted node rejoins with its slots. `cluster-require-full-coverage
/// no`, as tollgate's README asks: the other masters keep serving while one is down.
pub fn cluster_node_args() -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--cluster-require-full-coverage",
        "no",
    ]
    .map(String::from)
    .to_vec()
}

/// `redis-cli --cluster create` over `nodes` (with `cli` speaking to a node,
/// plain or TLS), then wait until every node says the cluster is ok.
pub fn form_cluster(nodes: &[RedisServer], cli: impl Fn(&RedisServer, &[&str]) -> Command) {
    let mut create = cli(&nodes[0], &["--cluster", "create"]);
    for n in nodes {
        create.arg(format!("127.0.0.1:{}", n.port));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_cluster_ok(nodes, cli);
}

/// Every node says `cluster_state:ok` with all 16384 slots served.
pub fn wait_cluster_ok(nodes: &[RedisServer], cli: impl Fn(&RedisServer, &[&str]) -> Command) {
    for n in nodes {
        wait_for(
            &format!("cluster ok on node {}", n.port),
            Duration::from_secs(20),
            || {
                let out = cli(n, &["CLUSTER", "INFO"]).output().unwrap();
                let info = String::from_utf8_lossy(&out.stdout);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            },
        );
    }
}

/// Three plain masters in a Cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let node =
                    RedisServer::spawn(free_port(), temp_dir("redis-cluster"), cluster_node_args());
                node.wait_ready();
                node
            })
            .collect();
        form_cluster(&nodes, RedisServer::cli);
        RedisCluster { nodes }
    }

    /// Every node says the cluster is ok.
    pub fn wait_ok(&self) {
        wait_cluster_ok(&self.nodes, RedisServer::cli);
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// `[redis] cluster = [...]` for these nodes.
    pub fn config_section(&self, timeout: &str) -> String {
        let list: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[redis]\ncluster = [{}]\ntimeout = \"{timeout}\"\n",
            list.join(", ")
        )
    }

    /// Which node serves a key's slot (index into `nodes`).
    pub fn node_of(&self, key: &str) -> usize {
        let slot = tollgate::limiter::slot_breaker::slot(key) as i64;
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.nodes[0].conn())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for r in ranges {
            let redis::Value::Array(r) = r else { continue };
            let (redis::Value::Int(lo), redis::Value::Int(hi)) = (&r[0], &r[1]) else {
                continue;
            };
            if (*lo..=*hi).contains(&slot) {
                let redis::Value::Array(master) = &r[2] else {
                    continue;
                };
                let redis::Value::Int(port) = master[1] else {
                    continue;
                };
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port as i64 == port)
                    .unwrap();
            }
        }
        panic!("slot {slot} unassigned")
    }

    /// Start a killed node again, same port and nodes.conf: it rejoins with its slots.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_ok();
    }
}

/// One cluster for the tests that only read and write it.
pub fn shared_cluster() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(|| on_process_thread(RedisCluster::start))
}
