//! Probes of what a component depends on (PostgreSQL, RabbitMQ, the gRPC
//! services), for the gateway's `/health/external` and `backend_up`. Each
//! check is a real round trip: a query, an AMQP handshake, a grpc.health.v1
//! call. What they report never carries a URL (credentials live in URLs).

use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::amqp::{self, AmqpSettings};

/// What a probe looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A service the gateway routes to.
    Service,
    /// A store, cache or broker.
    Backend,
}

/// One dependency's check.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The dependency's name in reports and labels (`postgresql`, `auth`).
    fn name(&self) -> &str;
    /// What it is.
    fn kind(&self) -> ProbeKind;
    /// One round trip; an error says why it failed.
    async fn check(&self) -> anyhow::Result<()>;
}

/// PostgreSQL: connect and `SELECT 1`.
pub struct PostgresProbe {
    name: String,
    url: String,
}

impl PostgresProbe {
    /// Probes the server at `url`, reported as `postgresql`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            name: "postgresql".into(),
            url: url.into(),
        }
    }

    /// The same, reported under another name (one of several servers).
    pub fn named(self, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..self
        }
    }
}

#[async_trait]
impl Probe for PostgresProbe {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Backend
    }

    async fn check(&self) -> anyhow::Result<()> {
        let mut connection = PgConnection::connect(&self.url).await.context("connecting")?;
        sqlx::query("SELECT 1")
            .execute(&mut connection)
            .await
            .context("querying")?;
        connection.close().await.context("closing")?;
        Ok(())
    }
}

/// RabbitMQ: an AMQP handshake and a channel.
pub struct AmqpProbe {
    settings: AmqpSettings,
}

impl AmqpProbe {
    /// Probes the broker at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            settings: AmqpSettings {
                url: url.into(),
                ..AmqpSettings::default()
            },
        }
    }
}

#[async_trait]
impl Probe for AmqpProbe {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn kind(&self) -> ProbeKind {
        ProbeKind::Backend
    }

    async fn check(&self) -> anyhow::Result<()> {
        let connection = amqp::connect(&self.settings).await?;
        let channel = connection.create_channel().await.context("opening a channel")?;
        channel
            .close(200, "probe done".into())
            .await
            .context("closing the channel")?;
        connection.close(200, "probe done".into()).await.context("closing")?;
        Ok(())
    }
}

/// A gRPC service's grpc.health.v1 `Check` for `service` (fully qualified)
/// through `channel`: an error unless it answers SERVING.
pub async fn check_grpc_health(channel: Channel, service: &str) -> anyhow::Result<()> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let answer = HealthClient::new(channel)
        .check(request)
        .await
        .map_err(|status| anyhow::anyhow!("health check failed: {}", crate::metrics::code_name(status.code())))?;
    let status = answer.into_inner().status();
    if status != ServingStatus::Serving {
        bail!("not serving ({})", status.as_str_name());
    }
    Ok(())
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Did it pass?
    pub up: bool,
    /// How long it took.
    pub latency: Duration,
    /// Why it failed, without URLs.
    pub error: Option<String>,
}

/// Runs `probe` once, giving up after `timeout`.
pub async fn run(probe: &dyn Probe, timeout: Duration) -> Checked {
    let started = std::time::Instant::now();
    let outcome = match tokio::time::timeout(timeout, probe.check()).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(redact_urls(&format!("{err:#}"))),
        Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
    };
    Checked {
        up: outcome.is_none(),
        latency: started.elapsed(),
        error: outcome,
    }
}

/// `text` with every URL (anything with `://`) replaced by `<url>`.
pub fn redact_urls(text: &str) -> String {
    text.split(' ')
        .map(|word| if word.contains("://") { "<url>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_never_carry_urls() {
        assert_eq!(
            redact_urls("connecting to postgres://fleet:s3cret@db:5432/fleet: refused"),
            "connecting to <url> refused"
        );
        assert_eq!(redact_urls("timed out"), "timed out");
    }
}
