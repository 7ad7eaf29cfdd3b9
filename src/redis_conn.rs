//! How tollgate reaches Redis: one server, a Redis Cluster, or the master a
//! Sentinel names; over TCP, TLS (`rediss://`) or a unix socket. Everything
//! that talks to Redis gets its connections here, so the rest of the code does
//! not care which, and credentials and TLS apply to every connection alike.
//!
//! `access` holds the credentials and TLS files; the URLs say where.

mod access;
mod error;
mod shared;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, TlsMode, Value,
};

pub use access::{read_password_file, Access, KeyError, PasswordFileError, Tls};
pub use error::{Kind as ErrorKind, Refusal, StoreError};
pub use shared::SharedConn;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    Single(String),
    /// Seed nodes; the client learns the slot map from them and follows MOVED/ASK.
    Cluster(Vec<String>),
    /// The master named `master`, as the sentinels at `nodes` know it now.
    Sentinel {
        master: String,
        nodes: Vec<String>,
    },
}

/// Where Redis is, and how to prove who we are to it.
#[derive(Clone)]
pub struct Endpoint {
    topology: Topology,
    /// Shared by every clone (limiter, allowlist, reset channel): a reload
    /// swaps in new credentials or TLS files for all of them at once.
    access: Arc<ArcSwap<Access>>,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.topology == other.topology && **self.access.load() == **other.access.load()
    }
}

impl Eq for Endpoint {}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// For logs and `config check`: URLs with credentials redacted, then how
/// the connection is carried (TLS and its CA, a unix socket, plain TCP).
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            v.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.topology {
            Topology::Single(url) => write!(f, "{}", redact_url(url))?,
            Topology::Cluster(nodes) => write!(f, "cluster [{}]", list(nodes))?,
            Topology::Sentinel { master, nodes } => {
                write!(f, "sentinel master {master:?} via [{}]", list(nodes))?
            }
        }
        write!(f, ", {}", self.transport())?;
        let access = self.access.load();
        if let Some(user) = &access.username {
            write!(f, ", user {user:?}")?;
        }
        if access.password.is_some() {
            f.write_str(", password ***")?;
        }
        Ok(())
    }
}

/// One multiplexed connection: commands from many tasks pipeline on it.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// URLs that cannot make an endpoint (passwords redacted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "{url} is not a Redis URL ({why}; expected redis://, rediss://, redis+unix:// or unix://)"
    )]
    NotAUrl { url: String, why: String },
    #[error("mixes rediss:// and plain URLs: give every node the same scheme")]
    MixedSchemes,
}

impl Endpoint {
    pub fn new(topology: Topology, access: Access) -> Self {
        Endpoint {
            topology,
            access: Arc::new(ArcSwap::from_pointee(access)),
        }
    }

    /// One server, no settings beyond its URL.
    pub fn single(url: impl Into<String>) -> Self {
        Self::new(Topology::Single(url.into()), Access::default())
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn access(&self) -> Arc<Access> {
        self.access.load_full()
    }

    /// Swap in new credentials or TLS files (a reload): every clone of this
    /// endpoint uses them on its next connect.
    pub fn set_access(&self, access: Access) {
        self.access.store(Arc::new(access));
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self.topology, Topology::Sentinel { .. })
    }

    fn urls(&self) -> Vec<&String> {
        match &self.topology {
            Topology::Single(u) => vec![u],
            Topology::Cluster(n) | Topology::Sentinel { nodes: n, .. } => n.iter().collect(),
        }
    }

    /// Whether the URLs ask for TLS (`rediss://`); for a Sentinel, the
    /// master is reached over TLS when the sentinels are.
    pub fn is_tls(&self) -> bool {
        self.urls().iter().any(|u| {
            u.as_str()
                .into_connection_info()
                .is_ok_and(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }))
        })
    }

    /// How the connection is carried, for the first log line and `/readyz`.
    pub fn transport(&self) -> String {
        let addr = self
            .seed_url()
            .into_connection_info()
            .map(|i| i.addr().clone());
        match addr {
            Ok(ConnectionAddr::Unix(path)) => format!("unix socket {}", path.display()),
            Ok(ConnectionAddr::TcpTls { insecure, .. }) => {
                let access = self.access.load();
                match &access.tls {
                    Some(tls) => format!("Redis over TLS ({tls})"),
                    None if insecure => "Redis over TLS (server certificate NOT VERIFIED)".into(),
                    None => "Redis over TLS (CA: system roots)".into(),
                }
            }
            _ => "Redis over plain TCP".into(),
        }
    }

    /// Check the URLs without connecting; the error names the bad one.
    pub fn validate(&self) -> Result<(), EndpointError> {
        let mut tls = Vec::new();
        for u in self.urls() {
            let info = u
                .as_str()
                .into_connection_info()
                .map_err(|e| EndpointError::NotAUrl {
                    url: redact_url(u),
                    why: redact_url(&e.to_string()),
                })?;
            tls.push(matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        }
        if tls.iter().any(|&t| t) && !tls.iter().all(|&t| t) {
            return Err(EndpointError::MixedSchemes);
        }
        Ok(())
    }

    /// Connect. `timeout` bounds each command (the caller adds its own bound
    /// too); a Sentinel endpoint resolves the current master first.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<RedisConn> {
        self.connect_with(timeout, Some(timeout)).await
    }

    /// Connect for a caller that bounds every command itself (the limiter
    /// wraps each call in `redis.timeout`): a single server's connection then
    /// arms no response timer of its own, one timer per decision instead of
    /// two. A cluster keeps its per-node response timeout (its client needs
    /// one to give up on a dead master).
    pub async fn connect_bounded_by_caller(&self, timeout: Duration) -> RedisResult<RedisConn> {
        self.connect_with(timeout, None).await
    }

    async fn connect_with(
        &self,
        timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> RedisResult<RedisConn> {
        match &self.topology {
            Topology::Single(url) => Ok(RedisConn::Single(
                manager(self.client(url)?, response_timeout).await?,
            )),
            Topology::Sentinel { .. } => Ok(RedisConn::Single(
                manager(self.master_client().await?, response_timeout).await?,
            )),
            Topology::Cluster(nodes) => {
                let access = self.access.load();
                let infos = nodes
                    .iter()
                    .map(|u| node_info(u, &access))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = ClusterClient::builder(infos)
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(timeout)
                    // A call to a dead master fails at once and takes on_redis_error;
                    // retrying inside the client would only make it wait.
                    .retries(1);
                // Nodes learned from the slot map (and MOVED) get the same TLS.
                if let (Some(tls), true) = (&access.tls, self.is_tls()) {
                    if tls.insecure_skip_verify {
                        builder = builder.tls(TlsMode::Insecure);
                    }
                    builder = builder.certs(tls.certificates());
                }
                Ok(RedisConn::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }

    /// A plain client for connections that block or subscribe (stream tails,
    /// pub/sub). In a cluster, PUBLISH reaches every node, so any node will do.
    pub async fn plain_client(&self) -> RedisResult<Client> {
        match &self.topology {
            Topology::Single(url) => self.client(url),
            Topology::Cluster(nodes) => self.client(&nodes[0]),
            Topology::Sentinel { .. } => self.master_client().await,
        }
    }

    /// A plain client for the `attempt`-th try of a subscription: a Cluster's
    /// seed nodes in turn (PUBLISH reaches every node, so any live one will
    /// do, and a dead one is skipped on the next try), the current master
    /// behind a Sentinel, or the one server.
    pub async fn subscribe_client(&self, attempt: usize) -> RedisResult<Client> {
        match &self.topology {
            Topology::Cluster(nodes) => self.client(&nodes[attempt % nodes.len()]),
            _ => self.plain_client().await,
        }
    }

    /// The first URL: the server, a cluster seed node, or a sentinel.
    pub fn seed_url(&self) -> &str {
        match &self.topology {
            Topology::Single(url) => url,
            Topology::Cluster(nodes) | Topology::Sentinel { nodes, .. } => &nodes[0],
        }
    }

    /// A client for one server's URL, with the credentials and TLS applied.
    fn client(&self, url: &str) -> RedisResult<Client> {
        let access = self.access.load();
        let info = node_info(url, &access)?;
        match (&access.tls, info.addr()) {
            (Some(tls), ConnectionAddr::TcpTls { .. }) => {
                Client::build_with_tls(info, tls.certificates())
            }
            _ => Client::open(info),
        }
    }

    /// The master the sentinels name now. The sentinels are asked with the
    /// credentials in their own URLs; the master is reached with the
    /// configured ones (`redis.username`, `password_file`, `password_env`),
    /// and over TLS when the sentinels are, with the same `[redis.tls]`.
    async fn master_client(&self) -> RedisResult<Client> {
        let Topology::Sentinel { master, nodes } = &self.topology else {
            return Err((redis::ErrorKind::Client, "not a sentinel endpoint").into());
        };
        let access = self.access.load();
        let infos = nodes
            .iter()
            .map(|u| u.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let own_auth = infos
            .iter()
            .map(|i| i.redis_settings())
            .find(|r| r.password().is_some())
            .cloned();
        let tls = self.is_tls();
        let addrs = infos.iter().map(|i| i.addr().clone()).collect::<Vec<_>>();
        let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
        if let Some(auth) = own_auth {
            if let Some(user) = auth.username() {
                b = b.set_client_to_sentinel_username(user);
            }
            if let Some(password) = auth.password() {
                b = b.set_client_to_sentinel_password(password);
            }
        }
        if let Some(user) = &access.username {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(password) = &access.password {
            b = b.set_client_to_redis_password(password.expose());
        }
        if tls {
            let insecure = access.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
            let mode = if insecure {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            };
            b = b
                .set_client_to_sentinel_tls_mode(mode)
                .set_client_to_redis_tls_mode(mode);
            if let Some(t) = &access.tls {
                b = b
                    .set_client_to_sentinel_certificates(t.certificates())
                    .set_client_to_redis_certificates(t.certificates());
            }
        }
        b.build()?.async_get_client().await
    }
}

/// A URL's connection info with the configured user, password and
/// certificate checking applied (the configured ones win over the URL's).
fn node_info(url: &str, access: &Access) -> RedisResult<ConnectionInfo> {
    let mut info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &access.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &access.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    let skip_verify = access.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
    if let (true, ConnectionAddr::TcpTls { host, port, .. }) = (skip_verify, info.addr()) {
        let addr = ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: true,
            tls_params: None,
        };
        info = info.set_addr(addr);
    }
    Ok(info)
}

/// A Redis URL with its user and password replaced, fit for a log line:
/// `user:pass@` before the host, and `user=`/`pass=` query parameters
/// (unix-socket URLs carry them there).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The last '@' ends the user info, whatever a password holds.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((_, host)) => ("***@", host),
        None => ("", rest),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://{userinfo}{path}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if ["pass", "password", "user", "username"].contains(&k) => {
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

async fn manager(
    client: Client,
    response_timeout: Option<Duration>,
) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, config).await
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("redis://:s3cret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(
            redact_url("rediss://u:s3cret@h:6380"),
            "rediss://***@h:6380"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        // A '?' or '@' inside the password leaks nothing.
        assert_eq!(redact_url("redis://:a?b@c@h:1"), "redis://***@h:1");
    }

    #[test]
    fn unix_socket_credentials_in_the_query_are_redacted() {
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=2&user=app&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=2&user=***&pass=***"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock?pass=s3cret"),
            "unix:///run/redis.sock?pass=***"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock"),
            "unix:///run/redis.sock"
        );
    }
}
