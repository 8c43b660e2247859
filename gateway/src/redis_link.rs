//! The gateway's one link to Redis, shared by the rate limiter and the
//! cache: created lazily inside the gateway's runtime, short timeouts so that
//! an unreachable Redis costs little, and an up/down state for health.
//! `rediss://` is Redis over TLS.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use redis::{RedisResult, aio::ConnectionManager};
use tokio::sync::OnceCell;

/// A lazily connected, self-reconnecting Redis connection.
pub struct RedisLink {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    timeout: Duration,
    up: AtomicBool,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// A link to `url` whose calls give up after `timeout`; nothing connects
    /// until first use.
    pub fn open(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        // `rediss://` checks the server against the Mozilla roots, or only
        // against the CA file `cacertfile` names.
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
        Ok(Self {
            client: client.map_err(|e| anyhow::anyhow!("invalid Redis URL: {e}"))?,
            connection: OnceCell::new(),
            timeout,
            up: AtomicBool::new(true),
        })
    }

    /// The connection (the manager reconnects by itself after failures).
    pub async fn connection(&self) -> RedisResult<ConnectionManager> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                self.client.get_connection_manager_with_config(config).await
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
