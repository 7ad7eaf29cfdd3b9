//! The stack a proxy test runs against: Redis, two tollgate replicas, an
//! upstream app, and nginx, Caddy or HAProxy from its shipped config.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::binary::tollgate_cmd;
use crate::support::nginx as nginx_conf;
use crate::support::process::terminate;
use crate::support::server::ADMIN_TOKEN;

use crate::support::{
    die_with_parent, eventually, free_port, shared_redis, temp_dir, unique_prefix, TestServer,
};

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
    /// Where its stderr goes (its own log: HAProxy's Lua alerts, Caddy's errors).
    pub log: Option<PathBuf>,
    /// HAProxy: the address its Lua action calls (the cfg's TOLLGATE_CHECK).
    pub check: Option<SocketAddr>,
}

impl Drop for Proxy {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILL would
    /// orphan them); SIGKILL only if it has not exited after two seconds.
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// `text` with `from` replaced by `to`, which must occur: a shipped file that
/// changed shape fails here, not as a proxy pointed at the wrong place.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped config no longer has {from:?}"
    );
    text.replace(from, to)
}

/// HAProxy's cfg with the Lua action's address moved to `check`, by the one
/// line that sets it (tollgate.lua is used as shipped).
pub fn haproxy_cfg(check: SocketAddr) -> String {
    edit(
        include_str!("../../deploy/haproxy/haproxy.cfg"),
        "setenv TOLLGATE_CHECK 127.0.0.1:8079",
        &format!("setenv TOLLGATE_CHECK {check}"),
    )
}

impl Proxy {
    /// Start `kind` from its shipped config, pointed at two tollgate replicas and the upstream.
    pub async fn start(kind: Kind, tollgate: [SocketAddr; 2], upstream: SocketAddr) -> Proxy {
        Proxy::start_edited(kind, tollgate, upstream, |text| text.to_string()).await
    }

    /// `start`, with the shipped config passed through `more` too (a line an
    /// operator adds for one use, e.g. a header to the app).
    pub async fn start_edited(
        kind: Kind,
        tollgate: [SocketAddr; 2],
        upstream: SocketAddr,
        more: impl Fn(&str) -> String,
    ) -> Proxy {
        let port = free_port();
        let dir = temp_dir(&format!("{kind:?}"));
        let common = |text: &str| {
            let text = edit(&more(text), "127.0.0.1:8080", &tollgate[0].to_string());
            let text = edit(&text, "127.0.0.1:9080", &tollgate[1].to_string());
            edit(&text, "127.0.0.1:3000", &upstream.to_string())
        };
        let log = dir.join("proxy.log");
        let mut check = None;
        let mut cmd;
        match kind {
            Kind::Nginx => {
                let conf = common(include_str!("../../deploy/nginx/nginx.conf"));
                let conf = edit(&conf, "listen 8000;", &format!("listen 127.0.0.1:{port};"));
                let conf = edit(&conf, "worker_processes auto;", "worker_processes 1;");
                cmd = nginx_conf::command(&dir, &conf);
            }
            Kind::Caddy => {
                let conf = edit(
                    &common(include_str!("../../deploy/caddy/Caddyfile")),
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
                // A non-default address for the Lua action's calls, set in
                // the cfg alone: every HAProxy scenario runs through it.
                let lua_check = SocketAddr::from(([127, 0, 0, 1], free_port()));
                check = Some(lua_check);
                let conf = edit(
                    &common(&haproxy_cfg(lua_check)),
                    "bind :8000",
                    &format!("bind 127.0.0.1:{port}"),
                );
                let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/tollgate.lua");
                let conf = edit(&conf, "/etc/haproxy/tollgate.lua", lua);
                std::fs::write(dir.join("haproxy.cfg"), conf).unwrap();
                cmd = Command::new("haproxy");
                cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{kind:?} must be installed (scripts/test.sh installs it): {e}")
        });
        Proxy {
            child,
            port,
            log: Some(log),
            check,
        }
        .listening()
        .await
    }

    /// Once its port accepts connections (the child is stopped on drop if not).
    async fn listening(self) -> Proxy {
        let port = self.port;
        eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        self
    }

    /// Its log so far (empty if it has none).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// A proxy started elsewhere (a script that execs nginx), once it
    /// listens on `port`.
    pub async fn adopt(child: Child, port: u16) -> Proxy {
        Proxy {
            child,
            port,
            log: None,
            check: None,
        }
        .listening()
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

/// A tollgate binary serving `config` (embedded store) at `listen`: a
/// replica that comes back at an address a proxy lists. Stop it with
/// `terminate`.
pub fn tollgate_at(listen: SocketAddr, config: &str) -> Child {
    let path = temp_dir("tollgate-at").join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = tollgate_cmd(&["serve", "--listen", &listen.to_string()]);
    cmd.arg("--config")
        .arg(&path)
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn().unwrap()
}

/// A client whose connections come from `source` (any 127.x.y.z works on Linux).
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// What the app behind the proxy answers to everything: a body neither
/// tollgate (empty or a short refusal) nor any proxy ever writes, so a test
/// can tell that the app's answer arrived.
pub const APP_BODY: &str = "the upstream app answered";

/// The app behind the proxy: answers `APP_BODY` to everything.
pub async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { APP_BODY });
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

/// What a client gets when tollgate is down, as each shipped config
/// documents, for the `n`th request since: Caddy answers 502 while it finds
/// the replicas dead, then 503 ("no upstreams available") while its passive
/// health check keeps them marked down.
pub fn down_status(kind: Kind, n: usize) -> u16 {
    match kind {
        Kind::Nginx | Kind::Haproxy => 503,
        Kind::Caddy if n == 0 => 502,
        Kind::Caddy => 503,
    }
}

/// `r` has `status`; allowed (200) it carries the app's body `app_body`,
/// anything else does not (a proxy writing tollgate's own answer in place of
/// the app's is a 200 without it). Its headers, for further checks.
pub async fn assert_answer(
    r: reqwest::Response,
    status: u16,
    app_body: &str,
    what: &str,
) -> reqwest::header::HeaderMap {
    let headers = r.headers().clone();
    let got = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_body(got, &body, status, app_body, what);
    headers
}

/// The status and body check of `assert_answer`, for an answer read any way.
pub fn assert_body(got: u16, body: &str, status: u16, app_body: &str, what: &str) {
    assert_eq!(got, status, "{what}: status (body {body:?})");
    if status == 200 {
        assert_eq!(body, app_body, "{what}: the app's answer did not arrive");
    } else {
        assert!(
            !body.contains(app_body),
            "{what}: a {status} carries the app's body {body:?}"
        );
    }
}
