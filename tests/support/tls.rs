//! Hardened Redis for tests: redis-servers that speak only TLS, only a unix
//! socket, or only to an ACL user, a 3-node TLS Cluster and a TLS Sentinel.
//! All are `RedisServer`s (one starter, each in its own `--dir`); only how
//! they are pinged differs (redis-cli with TLS, a socket, a password).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cluster::{cluster_node_args, form_cluster};
use super::isolation::{free_port, temp_dir};
use super::redis::RedisServer;
use super::sentinel::spawn_sentinel;
use super::wait::wait_for;

pub use super::pki::Pki;

/// The name `redis_tls` tests use for a hardened server.
pub type Server = RedisServer;

/// Wait until `ping` (a redis-cli invocation) answers PONG.
fn wait_pong(what: &str, ping: impl Fn() -> Command) {
    wait_for(
        &format!("{what} answering PONG"),
        Duration::from_secs(10),
        || {
            ping()
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("PONG"))
        },
    );
}

impl RedisServer {
    /// TLS only (no plain port), certificates from `pki`; `mutual`: clients
    /// must present a certificate signed by the CA.
    pub fn tls(pki: &Pki, mutual: bool) -> RedisServer {
        let port = free_port();
        let server = RedisServer::spawn(port, temp_dir("redis-tls"), pki.server_args(port, mutual));
        wait_pong("TLS redis-server", || server.tls_cli(pki, &["PING"]));
        server
    }

    /// A unix socket only (no TCP port).
    pub fn unix() -> RedisServer {
        let dir = temp_dir("redis-unix");
        let sock = dir.join("redis.sock").display().to_string();
        let args = [
            "--port",
            "0",
            "--unixsocket",
            &sock,
            "--unixsocketperm",
            "700",
        ];
        let server = RedisServer::spawn(0, dir, args.map(String::from).to_vec());
        wait_pong("unix-socket redis-server", || {
            let mut c = Command::new("redis-cli");
            c.args(["-s", &sock, "PING"]);
            c
        });
        server
    }

    /// Plain TCP, where the default user is off and `user` logs in with `password`.
    pub fn acl(user: &str, password: &str) -> RedisServer {
        let port = free_port();
        let dir = temp_dir("redis-acl");
        let acl = dir.join("users.acl");
        std::fs::write(
            &acl,
            format!("user default off\nuser {user} on >{password} ~* &* +@all\n"),
        )
        .unwrap();
        let args = vec!["--aclfile".to_string(), acl.display().to_string()];
        let server = RedisServer::spawn(port, dir, args);
        wait_pong("ACL redis-server", || {
            server.cli(&[
                "--user",
                user,
                "--pass",
                password,
                "--no-auth-warning",
                "PING",
            ])
        });
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// redis-cli over TLS with the client certificate.
    pub fn tls_cli(&self, pki: &Pki, args: &[&str]) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(["-p", &self.port.to_string(), "--tls", "--cacert"])
            .arg(&pki.ca)
            .arg("--cert")
            .arg(&pki.client_cert)
            .arg("--key")
            .arg(&pki.client_key)
            .args(args);
        c
    }
}

/// Three TLS masters in a Cluster (`tls-cluster yes`: the bus and the
/// addresses CLUSTER SLOTS gives out are TLS too).
pub struct TlsCluster {
    pub nodes: Vec<RedisServer>,
}

impl TlsCluster {
    pub fn start(pki: &Pki) -> TlsCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let mut args = pki.server_args(port, false);
                args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
                args.extend(cluster_node_args());
                let node = RedisServer::spawn(port, temp_dir("redis-tls-cluster"), args);
                wait_pong("TLS cluster node", || node.tls_cli(pki, &["PING"]));
                node
            })
            .collect();
        form_cluster(&nodes, |n, args| n.tls_cli(pki, args));
        TlsCluster { nodes }
    }

    /// `[redis] cluster = [...]` over rediss://, with `[redis.tls]`.
    pub fn config_section(&self, pki: &Pki, timeout: &str) -> String {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.tls_url()))
            .collect();
        format!(
            "[redis]\ncluster = [{}]\ntimeout = \"{timeout}\"\n{}",
            list.join(", "),
            pki.tls_section(false)
        )
    }
}

/// A TLS master that needs `password`, and one TLS sentinel watching it as
/// "mymaster" (it reaches the master over TLS, with `auth-pass`).
pub struct TlsSentinel {
    pub master: RedisServer,
    pub sentinel: RedisServer,
}

impl TlsSentinel {
    pub fn start(pki: &Pki, password: &str) -> TlsSentinel {
        let mport = free_port();
        let mut args = pki.server_args(mport, false);
        args.extend(["--requirepass".to_string(), password.to_string()]);
        let master = RedisServer::spawn(mport, temp_dir("redis-tls-master"), args);
        wait_pong("TLS master", || {
            let mut c = master.tls_cli(pki, &["--pass", password, "--no-auth-warning", "PING"]);
            c.env_remove("REDISCLI_AUTH");
            c
        });
        let sport = free_port();
        let sdir = temp_dir("redis-tls-sentinel");
        let conf = sdir.join("sentinel.conf");
        let p = |p: &Path| p.display().to_string();
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {sport}\nbind 127.0.0.1\ndir {}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor mymaster 127.0.0.1 {mport} 1\nsentinel auth-pass mymaster {password}\n",
                p(&sdir),
                p(&pki.server_cert),
                p(&pki.server_key),
                p(&pki.ca),
            ),
        )
        .unwrap();
        let sentinel = spawn_sentinel(sport, sdir, &conf);
        wait_pong("TLS sentinel", || sentinel.tls_cli(pki, &["PING"]));
        TlsSentinel { master, sentinel }
    }
}
