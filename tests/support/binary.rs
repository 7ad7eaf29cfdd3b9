//! The `tollgate` binary as a child process: one-shot commands (`allow`,
//! `config check`, `follow`) and a real `tollgate serve` with its own config
//! file and log in the test's temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::isolation::free_port;
use super::process::{exited_within, signal};
use super::server::{readyz, ADMIN_TOKEN};
use super::wait::eventually;

/// `tollgate args...`, with the environment that would configure it
/// (`TOLLGATE_CONFIG`, `TOLLGATE_REDIS_URL`) removed: a test says what it means.
pub fn tollgate_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_REDIS_URL");
    cmd
}

/// Run `tollgate args...` to the end.
pub fn tollgate(args: &[&str]) -> Output {
    tollgate_cmd(args).output().unwrap()
}

/// stdout then stderr, for assertions and failure messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A real `tollgate serve` process (its config file and its log, stderr, in
/// the test's dir), killed on drop.
pub struct Serve {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The config file: rewrite it, then SIGHUP.
    pub config: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Start `tollgate serve` with `config_text` and `extra` arguments (e.g.
    /// `--redis`, `--prefix`) and wait until `/readyz` says ready.
    pub async fn start(dir: &Path, config_text: &str, extra: &[&str]) -> Serve {
        Serve::start_env(dir, config_text, extra, &[]).await
    }

    /// `start`, with `env` set after the default admin token (so it may replace it).
    pub async fn start_env(
        dir: &Path,
        config_text: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Serve {
        let config = dir.join("tollgate.toml");
        std::fs::write(&config, config_text).unwrap();
        Serve::start_at_env(&config, &dir.join("serve.log"), extra, env).await
    }

    /// Start `tollgate serve --config CONFIG` on a file that already exists
    /// (a ConfigMap's symlink, a file two replicas share), logging to `log`.
    pub async fn start_at(config: &Path, log: &Path, extra: &[&str]) -> Serve {
        Serve::start_at_env(config, log, extra, &[]).await
    }

    /// `start_at`, with `env` set after the default admin token.
    pub async fn start_at_env(
        config: &Path,
        log: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Serve {
        let (config, log) = (config.to_path_buf(), log.to_path_buf());
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = tollgate_cmd(&["serve", "--config", config.to_str().unwrap()])
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin_addr.to_string()])
            .args(extra)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Serve {
            child,
            addr,
            admin_addr,
            config,
            log,
        };
        eventually(Duration::from_secs(10), || async {
            readyz(s.admin_addr).await.0 == 200
        })
        .await;
        s
    }

    /// The status of `GET /check<uri>`.
    pub async fn status(&self, uri: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("http://{}/check{uri}", self.addr))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn signal(&self, sig: libc::c_int) {
        signal(&self.child, sig);
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /v1/status` with the admin token.
    pub async fn node_status(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}/v1/status", self.admin_addr))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log has a line containing `text`; that line.
    pub async fn log_line(&self, text: &str) -> String {
        eventually(Duration::from_secs(5), || async {
            self.log().contains(text)
        })
        .await;
        self.log()
            .lines()
            .find(|l| l.contains(text))
            .unwrap()
            .to_string()
    }

    /// Its exit code, once it has exited; fails the test after `deadline`.
    pub async fn exit_code(&mut self, deadline: Duration) -> Option<i32> {
        exited_within(&mut self.child, deadline)
            .await
            .unwrap_or_else(|| panic!("still running {deadline:?} later"))
            .code()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
