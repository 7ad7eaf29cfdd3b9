//! One `redis-server` child: the starter every test Redis goes through (plain,
//! persistent, Cluster node, replica, TLS, unix socket, ACL), and the one
//! shared by the whole test binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::isolation::{free_port, temp_dir};
use super::process::{die_with_parent, on_process_thread};
use super::wait::wait_for;

/// A redis-server child process in its own directory, killed on drop.
pub struct RedisServer {
    /// The port clients use (the TLS port for a TLS server, 0 for a unix socket).
    pub port: u16,
    /// Its `--dir`: a replica's full sync writes an RDB file even with saving
    /// off, and it must land here, never in the working tree.
    pub dir: PathBuf,
    /// Arguments after the defaults; kept so `restart` starts the same server.
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A plain server on a free port, empty, with saving off.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// The same with `extra` arguments, which come after the defaults and win
    /// (e.g. `--appendonly yes`, `--replicaof`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let server = Self::spawn(free_port(), temp_dir("redis"), extra);
        server.wait_ready();
        server
    }

    /// A redis-server on `port` in `dir` with `args`, not waited for (TLS
    /// and unix-socket servers are pinged with redis-cli instead).
    pub fn spawn(port: u16, dir: PathBuf, args: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port,
            dir,
            args,
            child: None,
        };
        server.respawn();
        server
    }

    fn respawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        self.child = Some(
            cmd.spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)"),
        );
    }

    /// A server already spawned by the caller (a sentinel, started from its
    /// config file), owned from now on.
    pub fn adopt(port: u16, dir: PathBuf, child: Child) -> RedisServer {
        RedisServer {
            port,
            dir,
            args: Vec::new(),
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// A connection, or `None` while the server does not answer (for use
    /// inside `eventually`, where a refused connection means "not yet").
    pub fn try_conn(&self) -> Option<redis::Connection> {
        self.client().get_connection().ok()
    }

    /// Until it answers PING on its TCP port.
    pub fn wait_ready(&self) {
        wait_for(
            &format!("redis-server on port {} starting", self.port),
            Duration::from_secs(10),
            || {
                self.try_conn()
                    .is_some_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
            },
        );
    }

    /// `redis-cli -p <port> args...` (plain TCP).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(["-p", &self.port.to_string()]).args(args);
        c
    }

    /// Kill the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again: same port, directory and arguments. Empty, unless its
    /// arguments persist data (AOF) or its Cluster `nodes.conf`.
    pub fn restart(&mut self) {
        self.kill();
        self.respawn();
        self.wait_ready();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One Redis for the whole test binary; tests isolate themselves by prefix.
pub fn shared_redis() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(|| on_process_thread(RedisServer::start))
}

/// Arguments for a server that keeps its data across a kill (AOF, fsync
/// always): `restart` brings the data back.
pub const PERSISTENT: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];
