//! How tollgate reaches Redis: one server, a Redis Cluster, or the master a
//! Sentinel names. Everything that talks to Redis gets its connections here,
//! so the rest of the code does not care which.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::server::redact_url;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    Single(String),
    /// Seed nodes; the client learns the slot map from them and follows MOVED/ASK.
    Cluster(Vec<String>),
    /// The master named `master`, as the sentinels at `nodes` know it now.
    Sentinel {
        master: String,
        nodes: Vec<String>,
    },
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// For logs and `config check`: URLs with passwords redacted.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            v.iter()
                .map(|u| redact_url(u))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Endpoint::Single(url) => write!(f, "{}", redact_url(url)),
            Endpoint::Cluster(nodes) => write!(f, "cluster [{}]", list(nodes)),
            Endpoint::Sentinel { master, nodes } => {
                write!(f, "sentinel master {master:?} via [{}]", list(nodes))
            }
        }
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

impl Endpoint {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Endpoint::Cluster(_))
    }

    /// Check the URLs without connecting; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        let urls: Vec<&String> = match self {
            Endpoint::Single(u) => vec![u],
            Endpoint::Cluster(n) | Endpoint::Sentinel { nodes: n, .. } => n.iter().collect(),
        };
        for u in urls {
            Client::open(u.as_str()).map_err(|_| {
                format!(
                    "{} is not a Redis URL (expected redis://[:password@]host:port[/db])",
                    redact_url(u)
                )
            })?;
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
    /// arms no response timer of its own per command, one timer per call
    /// instead of two. A cluster keeps its per-node response timeout.
    pub async fn connect_bounded_by_caller(&self, timeout: Duration) -> RedisResult<RedisConn> {
        self.connect_with(timeout, None).await
    }

    async fn connect_with(
        &self,
        timeout: Duration,
        response_timeout: Option<Duration>,
    ) -> RedisResult<RedisConn> {
        match self {
            Endpoint::Single(url) => Ok(RedisConn::Single(
                manager(Client::open(url.as_str())?, response_timeout).await?,
            )),
            Endpoint::Sentinel { .. } => Ok(RedisConn::Single(
                manager(self.master_client().await?, response_timeout).await?,
            )),
            Endpoint::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(Duration::from_secs(1))
                    .response_timeout(timeout)
                    // A call to a dead master fails at once and takes on_redis_error;
                    // retrying inside the client would only make it wait.
                    .retries(1)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A plain client for connections that block or subscribe (stream tails,
    /// pub/sub). In a cluster, PUBLISH reaches every node, so any node will do.
    pub async fn plain_client(&self) -> RedisResult<Client> {
        match self {
            Endpoint::Single(url) => Client::open(url.as_str()),
            Endpoint::Cluster(nodes) => Client::open(nodes[0].as_str()),
            Endpoint::Sentinel { .. } => self.master_client().await,
        }
    }

    /// A plain client for the `attempt`-th try of a subscription: a Cluster's
    /// seed nodes in turn (PUBLISH reaches every node, so any live one will
    /// do, and a dead one is skipped on the next try), the current master
    /// behind a Sentinel, or the one server.
    pub async fn subscribe_client(&self, attempt: usize) -> RedisResult<Client> {
        match self {
            Endpoint::Cluster(nodes) => Client::open(nodes[attempt % nodes.len()].as_str()),
            _ => self.plain_client().await,
        }
    }

    /// The first URL: the server, a cluster seed node, or a sentinel.
    /// (Transitional: the allowlist still connects by URL; see its redis_store.)
    pub fn seed_url(&self) -> &str {
        match self {
            Endpoint::Single(url) => url,
            Endpoint::Cluster(nodes) | Endpoint::Sentinel { nodes, .. } => &nodes[0],
        }
    }

    async fn master_client(&self) -> RedisResult<Client> {
        let Endpoint::Sentinel { master, nodes } = self else {
            return Err((redis::ErrorKind::Client, "not a sentinel endpoint").into());
        };
        let mut sentinel = SentinelClient::build(
            nodes.clone(),
            master.clone(),
            None,
            SentinelServerType::Master,
        )?;
        sentinel.async_get_client().await
    }
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
