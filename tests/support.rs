//! Real parts for tests: a `redis-server` on a free port, tollgate servers
//! bound to loopback, unique key prefixes, and waiting with a deadline.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tollgate::config::{self, Overrides};
use tollgate::secret::Secret;
use tollgate::{App, Listeners};

/// The admin bearer token of every `TestServer`.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A free loopback port (bound, then released for the caller).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A key prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A redis-server child process, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let child = spawn_redis(port);
        let server = RedisServer {
            port,
            child: Some(child),
        };
        server.wait_ready();
        server
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

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.client().get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn_redis(self.port));
        self.wait_ready();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(port: u16) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        // If the test process dies, so does its Redis.
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .expect("redis-server must be installed (scripts/test.sh installs it)")
}

/// One Redis for the whole test binary; tests isolate themselves by prefix.
/// It is started from a thread that lives as long as the process, because
/// PDEATHSIG fires when the spawning thread ends.
pub fn shared_redis() -> &'static RedisServer {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(RedisServer::start()).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    })
}

/// A tollgate server running in this process on loopback ports.
pub struct TestServer {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Start with a config text; `redis_url` None means the embedded store.
    pub async fn start(config_text: &str, redis_url: Option<&str>, prefix: &str) -> TestServer {
        let ov = Overrides {
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            redis_url: redis_url.map(str::to_string),
            redis_prefix: Some(prefix.to_string()),
            admin_token: Some(Secret::new(ADMIN_TOKEN)),
            shadow: false,
        };
        let cfg = config::parse("test.toml", config_text, &ov).unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners::bind(cfg.server.listen, cfg.server.admin_listen)
            .await
            .unwrap();
        let addr = listeners.decision.local_addr().unwrap();
        let admin_addr = listeners.admin.local_addr().unwrap();
        let app = App::new(cfg).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tollgate::run(app.clone(), listeners, async move {
            let _ = rx.await;
        }));
        let server = TestServer {
            app,
            addr,
            admin_addr,
            stop: Some(tx),
            task: Some(task),
        };
        let ready = server.admin_url("/readyz");
        eventually(Duration::from_secs(5), || {
            let url = ready.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false)
            }
        })
        .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// A client that sends the admin bearer token.
    pub fn admin_client(&self) -> reqwest::Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
        );
        reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Wait until `check` holds, polling; fail the test at the deadline.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Both stores, for tests that must hold on each.
#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Embedded,
    Redis,
}

pub const BOTH_STORES: [StoreKind; 2] = [StoreKind::Embedded, StoreKind::Redis];

impl StoreKind {
    pub fn redis_url(self) -> Option<String> {
        match self {
            StoreKind::Embedded => None,
            StoreKind::Redis => Some(shared_redis().url()),
        }
    }
}

/// An app (no listeners) over the given store, for library-level tests.
pub async fn app_for(kind: StoreKind, prefix: &str, config_text: &str) -> Arc<App> {
    let ov = Overrides {
        redis_url: kind.redis_url(),
        redis_prefix: Some(prefix.into()),
        ..Default::default()
    };
    let cfg = config::parse("test.toml", config_text, &ov).unwrap_or_else(|e| panic!("{e}"));
    let app = App::new(cfg).unwrap();
    if let tollgate::limiter::Store::Redis(r) = &app.store {
        r.load_scripts().await.unwrap();
    }
    app
}

/// Fetch `/metrics` from a server's admin listener.
pub async fn scrape(s: &TestServer) -> String {
    reqwest::get(s.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample, e.g. `metric(&text, "tollgate_redis_up", &[])` or
/// `metric(&text, "tollgate_decisions_total", &[("rule", "a"), ("outcome", "allowed")])`;
/// 0 when absent. Panics on a line that is not valid exposition format.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (metric_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            metric_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if metric_name != name {
            continue;
        }
        let found: Vec<(String, String)> = if label_text.is_empty() {
            vec![]
        } else {
            label_text
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect()
        };
        if labels
            .iter()
            .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
            && found.len() == labels.len()
        {
            return value;
        }
    }
    0.0
}
