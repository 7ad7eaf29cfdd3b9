//! The stack a proxy test runs against: Redis, two tollgate replicas, an
//! upstream app, and nginx, Caddy or HAProxy from its shipped config.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::nginx as nginx_conf;
use crate::support::process::terminate;

use crate::support::{eventually, free_port, shared_redis, temp_dir, unique_prefix, TestServer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
    Haproxy,
}

/// A proxy process, killed on drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
}

impl Drop for Proxy {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILL would
    /// orphan them); SIGKILL only if it has not exited after two seconds.
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

impl Proxy {
    /// Start `kind` from its shipped config, pointed at two tollgate replicas and the upstream.
    pub async fn start(kind: Kind, tollgate: [SocketAddr; 2], upstream: SocketAddr) -> Proxy {
        let port = free_port();
        let dir = temp_dir(&format!("{kind:?}"));
        let common = |text: &str| {
            text.replace("127.0.0.1:8080", &tollgate[0].to_string())
                .replace("127.0.0.1:9080", &tollgate[1].to_string())
                .replace("127.0.0.1:3000", &upstream.to_string())
        };
        let quiet = |cmd: &mut Command| {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        };
        let mut cmd;
        match kind {
            Kind::Nginx => {
                let conf = common(include_str!("../../deploy/nginx/nginx.conf"))
                    .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"))
                    .replace("worker_processes auto;", "worker_processes 1;");
                cmd = nginx_conf::command(&dir, &conf);
            }
            Kind::Caddy => {
                let conf = common(include_str!("../../deploy/caddy/Caddyfile")).replace(
                    "http://:8000 {",
                    &format!("http://127.0.0.1:{port} {{\n\tbind 127.0.0.1"),
                );
                std::fs::write(dir.join("Caddyfile"), conf).unwrap();
                cmd = Command::new("caddy");
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(dir.join("Caddyfile"))
                    .env("HOME", &dir)
                    .env("XDG_DATA_HOME", &dir)
                    .env("XDG_CONFIG_HOME", &dir);
            }
            Kind::Haproxy => {
                let internal = free_port();
                let conf = common(include_str!("../../deploy/haproxy/haproxy.cfg"))
                    .replace("bind :8000", &format!("bind 127.0.0.1:{port}"))
                    .replace("127.0.0.1:8079", &format!("127.0.0.1:{internal}"))
                    .replace(
                        "/etc/haproxy/tollgate.lua",
                        &dir.join("tollgate.lua").display().to_string(),
                    );
                let lua = include_str!("../../deploy/haproxy/tollgate.lua")
                    .replace("127.0.0.1:8079", &format!("127.0.0.1:{internal}"));
                std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
                std::fs::write(dir.join("tollgate.lua"), lua).unwrap();
                cmd = Command::new("haproxy");
                cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
            }
        }
        quiet(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{kind:?} must be installed (scripts/test.sh installs it): {e}")
        });
        let proxy = Proxy { child, port };
        eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        proxy
    }

    /// A proxy started elsewhere (a script that execs nginx), listening on `port`.
    pub fn adopt(child: Child, port: u16) -> Proxy {
        Proxy { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// A client whose connections come from `source` (any 127.x.y.z works on Linux).
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The app behind the proxy: answers "upstream ok" to everything.
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "upstream ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub const CONFIG: &str = r#"
# A loaded test machine can take longer than the default 25 ms: these tests
# are about the proxies, not about on_redis_error.
[redis]
timeout = "2s"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "page"
match = { path_prefix = "/limited" }
key = "ip"
limits = ["3/h"]

[[rule]]
name = "admin"
match = { path_prefix = "/admin" }
allowlist = "require"

[[rule]]
name = "login"
match = { host = "127.0.0.1", path_prefix = "/login", methods = ["POST"] }
key = "ip"
limits = ["2/h"]

[[rule]]
name = "exact"
match = { path = "/exact" }
key = "ip+path"
limits = ["2/h"]

[[rule]]
name = "burst"
match = { path_prefix = "/burst" }
key = "ip"
limits = ["20/h"]
algorithm = "gcra"
"#;

/// Redis, two tollgate replicas, the upstream, and the proxy in front.
pub struct Stack {
    pub replicas: Vec<TestServer>,
    pub proxy: Proxy,
}

impl Stack {
    pub async fn start(kind: Kind, config: &str) -> Stack {
        let prefix = unique_prefix("proxy");
        let redis = shared_redis().url();
        let a = TestServer::start(config, Some(&redis), &prefix).await;
        let b = TestServer::start(config, Some(&redis), &prefix).await;
        let proxy = Proxy::start(kind, [a.addr, b.addr], upstream().await).await;
        Stack {
            replicas: vec![a, b],
            proxy,
        }
    }
}

/// What a client gets when tollgate is down, as each shipped config documents.
pub fn down_status(kind: Kind) -> u16 {
    match kind {
        Kind::Nginx | Kind::Haproxy => 503,
        Kind::Caddy => 502,
    }
}
