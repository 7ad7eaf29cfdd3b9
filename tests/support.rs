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

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

    /// A connection, or `None` while the server does not answer (for use
    /// inside `eventually`, where a refused connection means "not yet").
    pub fn try_conn(&self) -> Option<redis::Connection> {
        self.client().get_connection().ok()
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

/// If the test process dies, so does the child (no stray servers).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn spawn_redis(port: u16) -> Child {
    spawn_redis_with(port, &[])
}

fn spawn_redis_with(port: u16, extra: &[String]) -> Child {
    // Its own directory: a replica's full sync writes an RDB file even with
    // saving off, and it must not land in the working tree. (A `--dir` in
    // `extra` comes later and wins.)
    let dir = std::env::temp_dir().join(format!("tollgate-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
        "--dir",
    ])
    .arg(&dir)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
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
    /// Envoy's gRPC services, when the config sets `server.grpc_listen`.
    pub grpc_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Start with a config text and wait until `/readyz` says ready;
    /// `redis_url` None means the embedded store (or the file's `[redis]`).
    pub async fn start(config_text: &str, redis_url: Option<&str>, prefix: &str) -> TestServer {
        let server = Self::launch(config_text, redis_url, prefix).await;
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

    /// Start without waiting to be ready (Redis may be down on purpose).
    pub async fn launch(config_text: &str, redis_url: Option<&str>, prefix: &str) -> TestServer {
        // Most tests are about answers, not about on_redis_error: on a busy
        // 2-core machine the 25 ms default would turn some Redis calls into
        // fallbacks. Tests of the timeout path write their own [redis] table.
        let generous;
        let config_text = if redis_url.is_some() && !config_text.contains("[redis]") {
            generous = format!("[redis]\ntimeout = \"2s\"\n{config_text}");
            generous.as_str()
        } else {
            config_text
        };
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
            .unwrap()
            .with_grpc(cfg.server.grpc_listen)
            .await
            .unwrap();
        let addr = listeners.decision.local_addr().unwrap();
        let admin_addr = listeners.admin.local_addr().unwrap();
        let grpc_addr = listeners.grpc.as_ref().map(|l| l.local_addr().unwrap());
        let app = App::new(cfg);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tollgate::run(app.clone(), listeners, async move {
            let _ = rx.await;
        }));
        TestServer {
            app,
            addr,
            admin_addr,
            grpc_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// `GET /check` with one header set (e.g. `x-forwarded-for`); the status.
    pub async fn check_with(&self, header: &str, value: &str) -> u16 {
        self.check_response(header, value).await.status().as_u16()
    }

    /// `GET /check` with one header set; the whole answer.
    pub async fn check_response(&self, header: &str, value: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url("/check"))
            .header(header, value)
            .send()
            .await
            .unwrap()
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
    let app = App::new(cfg);
    if let tollgate::limiter::Store::Redis(r) = &app.store {
        // As the server's probe does: a busy machine can miss redis.timeout once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = r.load_scripts().await {
            assert!(Instant::now() < deadline, "scripts not loaded: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// Run `make` on a thread that lives as long as the test process, so
/// PDEATHSIG ties the servers it spawns to the process, not to a test thread.
fn on_process_thread<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(make()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// A 3-master Redis Cluster on loopback (no replicas). `cluster-require-full-coverage
/// no`, as tollgate's README asks: the other masters keep serving while one is down.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let child = spawn_redis_with(port, &Self::node_args(&dir, port));
            let node = RedisServer {
                port,
                child: Some(child),
            };
            node.wait_ready();
            nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes, dir };
        cluster.wait_ok();
        cluster
    }

    fn node_args(dir: &std::path::Path, port: u16) -> Vec<String> {
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &dir.join(format!("nodes-{port}.conf")).display().to_string(),
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Every node says the cluster is ok.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &self.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.conn())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
        let port = self.nodes[i].port;
        self.nodes[i].kill();
        self.nodes[i].child = Some(spawn_redis_with(port, &Self::node_args(&self.dir, port)));
        self.nodes[i].wait_ready();
        self.wait_ok();
    }
}

/// One cluster for the tests that only read and write it.
pub fn shared_cluster() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(|| on_process_thread(RedisCluster::start))
}

/// A master, a replica of it, and one sentinel watching them as "mymaster".
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let master = RedisServer::start();
        let rport = free_port();
        let replica = RedisServer {
            port: rport,
            child: Some(spawn_redis_with(
                rport,
                &[
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    master.port.to_string(),
                ],
            )),
        };
        replica.wait_ready();
        let sport = free_port();
        let dir =
            std::env::temp_dir().join(format!("tollgate-sentinel-{}-{sport}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let sentinel = RedisServer {
            port: sport,
            child: Some(cmd.spawn().unwrap()),
        };
        sentinel.wait_ready();
        // The sentinel learns of the replica from the master's INFO, then must
        // hear from the replica itself (link ok) before it would promote it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let replicas: redis::Value = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg("mymaster")
                .query(&mut sentinel.conn())
                .unwrap();
            let text = format!("{replicas:?}");
            if text.contains("master-link-status")
                && text.contains("\"ok\"")
                && !text.contains("disconnected")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sentinel never saw a healthy replica: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        SentinelSet {
            master,
            replica,
            sentinel,
        }
    }

    /// `[redis] sentinel = {...}` for this set.
    pub fn config_section(&self, timeout: &str) -> String {
        format!(
            "[redis]\nsentinel = {{ master = \"mymaster\", nodes = [\"{}\"] }}\ntimeout = \"{timeout}\"\n",
            self.sentinel.url()
        )
    }
}
