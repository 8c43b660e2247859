//! The gateway's one link to Redis, shared by the rate limiter and the
//! cache: created lazily inside the gateway's runtime, short timeouts so that
//! an unreachable Redis costs little, and an up/down state for health.
//! `rediss://` is Redis over TLS; `redis+cluster://host:port[,host:port…]`
//! (`rediss+cluster://` over TLS) is a Redis Cluster, found from any one
//! node that answers.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

/// A lazily connected, self-reconnecting Redis connection.
pub struct RedisLink {
    client: Client,
    connection: OnceCell<RedisConnection>,
    timeout: Duration,
    up: AtomicBool,
}

// One per link: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A connection to one server, or to a cluster (commands go to the node
/// that holds their keys' slot, following its moves and failovers).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("up", &self.is_up())
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

/// The nodes of a `redis+cluster://` or `rediss+cluster://` URL, each as a
/// plain `redis://` or `rediss://` URL with the credentials, path and query
/// the cluster URL gives; `None` for any other URL.
fn cluster_nodes(url: &str) -> anyhow::Result<Option<Vec<String>>> {
    let Some((scheme, rest)) = url.split_once("+cluster://") else {
        return Ok(None);
    };
    anyhow::ensure!(
        scheme == "redis" || scheme == "rediss",
        "a cluster URL is redis+cluster:// or rediss+cluster://"
    );
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{credentials}{host}{tail}"))
        .collect();
    anyhow::ensure!(!nodes.is_empty(), "a cluster URL names at least one node");
    Ok(Some(nodes))
}

impl RedisLink {
    /// A link to `url` whose calls give up after `timeout`; nothing connects
    /// until first use.
    pub fn open(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let invalid = |e: redis::RedisError| anyhow::anyhow!("invalid Redis URL: {e}");
        // `rediss://` checks the server against the Mozilla roots, or only
        // against the CA file `cacertfile` names.
        let client = match cluster_nodes(url)? {
            Some(nodes) => {
                let mut plain = Vec::with_capacity(nodes.len());
                let mut ca = None;
                for node in &nodes {
                    let (node, pem) = fleet_kit::cacert::split(node)?;
                    plain.push(node);
                    ca = ca.or(pem);
                }
                let mut builder = redis::cluster::ClusterClientBuilder::new(plain)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2);
                if let Some(pem) = ca {
                    builder = builder.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    });
                }
                Client::Cluster(builder.build().map_err(invalid)?)
            }
            None => {
                let (url, ca) = fleet_kit::cacert::split(url)?;
                let client = match ca {
                    Some(pem) => redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem),
                        },
                    ),
                    None => redis::Client::open(url),
                };
                Client::Single(client.map_err(invalid)?)
            }
        };
        Ok(Self {
            client,
            connection: OnceCell::new(),
            timeout,
            up: AtomicBool::new(true),
        })
    }

    /// Whether the link is to a Redis Cluster, where the keys of one
    /// command or script must share a slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The connection (the manager reconnects by itself after failures).
    pub async fn connection(&self) -> RedisResult<RedisConnection> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                match &self.client {
                    Client::Single(client) => {
                        let config = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            .set_response_timeout(Some(self.timeout))
                            .set_number_of_retries(1);
                        let manager = client.get_connection_manager_with_config(config).await?;
                        Ok(RedisConnection::Single(manager))
                    }
                    Client::Cluster(client) => Ok(RedisConnection::Cluster(client.get_async_connection().await?)),
                }
            })
            .await;
        self.report(&connection);
        connection.cloned()
    }

    /// Records how a Redis call went; logs each change between up and down.
    pub fn report<T>(&self, result: &RedisResult<T>) {
        match result {
            Ok(_) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis is back: rate limits and the cache are shared again");
                }
            }
            Err(err) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "Redis unreachable: rate limits and the cache work per replica");
                }
            }
        }
    }

    /// One PING, reported like every other call.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut connection = self.connection().await?;
        let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
        self.report(&pong);
        pong?;
        Ok(())
    }

    /// Whether the last call succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_node_with_the_credentials_path_and_query() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:7000,b:7001").unwrap().unwrap(),
            ["redis://a:7000", "redis://b:7001"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://user:pw@a:7000,b:7001/?cacertfile=/ca.pem")
                .unwrap()
                .unwrap(),
            [
                "rediss://user:pw@a:7000/?cacertfile=/ca.pem",
                "rediss://user:pw@b:7001/?cacertfile=/ca.pem"
            ]
        );
        assert!(cluster_nodes("http+cluster://a:7000").is_err());
        assert!(cluster_nodes("redis+cluster://").is_err());
        assert!(
            RedisLink::open("redis+cluster://127.0.0.1:7000", Duration::from_secs(1)).is_ok_and(|l| l.is_cluster())
        );
    }

    #[tokio::test]
    async fn rediss_with_a_cacertfile_talks_to_redis_and_an_unknown_ca_is_refused() {
        if !fleet_kit::testing::backend_available("Redis", "127.0.0.1:6379").await {
            return;
        }
        let tls = fleet_kit::testing::TlsRelay::start("127.0.0.1:6379").await;
        let ca = tls.ca_file.display();
        let trusted = RedisLink::open(
            &format!("rediss://localhost:{}/?cacertfile={ca}", tls.port),
            Duration::from_secs(2),
        )
        .unwrap();
        let mut connection = trusted.connection().await.expect("a TLS connection");
        let pong: String = redis::cmd("PING").query_async(&mut connection).await.unwrap();
        assert_eq!(pong, "PONG");
        assert!(trusted.is_up());

        // Without the CA the server's certificate is not trusted.
        let untrusted = RedisLink::open(&format!("rediss://localhost:{}/", tls.port), Duration::from_secs(2)).unwrap();
        assert!(untrusted.connection().await.is_err(), "an unknown CA was trusted");
        assert!(!untrusted.is_up());
    }
}
