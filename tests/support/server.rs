//! A tollgate server running inside the test process on loopback ports,
//! driven the way the binary drives it (`tollgate::run` with a shutdown future).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tollgate::config::{self, Overrides};
use tollgate::secret::Secret;
use tollgate::{App, Listeners};

use super::wait::eventually;

/// The admin bearer token of every `TestServer` (and of `Serve` processes).
pub const ADMIN_TOKEN: &str = "test-admin-token";

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
        let config_text = &*generous_redis_timeout(config_text, redis_url.is_some());
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

    /// `POST /v1/check` with a JSON body; the status and the JSON answer
    /// (`Null` when the answer is not JSON).
    pub async fn post_check(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.url("/v1/check"))
            .json(body)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(serde_json::Value::Null),
        )
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

    /// One admin API call with the token: (status, JSON body or Null).
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
        self.admin_call(method, path, None).await
    }

    /// One admin API call with the token and a JSON body: (status, JSON body or Null).
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.admin_call(method, path, Some(body)).await
    }

    async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.admin_client().request(method, self.admin_url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
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

/// `GET /readyz` at `addr`: status and body; `(0, "")` while nothing listens.
pub async fn readyz(addr: SocketAddr) -> (u16, String) {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// `GET /v1/status` with the admin token at an admin address (a
/// `TestServer`'s or a `Serve` process's): the JSON.
pub async fn admin_status(admin: SocketAddr) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{admin}/v1/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Most tests are about answers, not about on_redis_error: on a busy 2-core
/// machine the 25 ms default `redis.timeout` turns some Redis calls into
/// fallbacks (or errors, for a store called directly). With Redis and no
/// `[redis]` table of the test's own, the config gets a 2 s timeout; tests
/// of the timeout path write their own `[redis]` table.
pub fn generous_redis_timeout(config_text: &str, redis: bool) -> std::borrow::Cow<'_, str> {
    if redis && !config_text.contains("[redis]") {
        format!("[redis]\ntimeout = \"2s\"\n{config_text}").into()
    } else {
        config_text.into()
    }
}
