//! Publishing to the backbone: each event sent persistent, with its trace
//! context in the headers, and confirmed by the broker before it counts as
//! published.

use anyhow::{Context, bail};
use fleet_proto::events::v1::Event;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use prost::Message;
use tokio::sync::Mutex as AsyncMutex;

use super::{AmqpSettings, CONNECT_TIMEOUT, TRACE_HEADERS, connect, declare_exchange};
use crate::events::EventPublisher;

fn properties(event: &Event) -> BasicProperties {
    let mut headers = FieldTable::default();
    for name in TRACE_HEADERS {
        if let Some(value) = event.trace_context.get(name) {
            headers.insert(name.into(), AMQPValue::LongString(value.as_str().into()));
        }
    }
    BasicProperties::default()
        .with_message_id(event.id.as_str().into())
        .with_type(event.r#type.as_str().into())
        .with_content_type("application/x-protobuf".into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

// === impl AmqpPublisher ===

/// Publishes events to the exchange and waits for the broker's confirm.
/// Any failure drops the connection; the next publish reconnects.
pub struct AmqpPublisher {
    settings: AmqpSettings,
    channel: AsyncMutex<Option<(Connection, Channel)>>,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("exchange", &self.settings.exchange)
            .finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// A publisher; it connects on first use.
    pub fn new(settings: AmqpSettings) -> Self {
        Self {
            settings,
            channel: AsyncMutex::new(None),
        }
    }

    async fn open(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = connect(&self.settings).await?;
        let channel = connection.create_channel().await.context("opening a channel")?;
        declare_exchange(&channel, &self.settings.exchange, ExchangeKind::Topic).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok((connection, channel))
    }
}

#[async_trait::async_trait]
impl EventPublisher for AmqpPublisher {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        let mut guard = self.channel.lock().await;
        if guard
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected())
        {
            // Bounded: a broker that never answers a step of the opening
            // must not hold every publisher waiting on this lock.
            let opening = tokio::time::timeout(2 * CONNECT_TIMEOUT, self.open()).await;
            *guard = Some(opening.context("opening a channel to RabbitMQ timed out")??);
        }
        let Some((_, channel)) = guard.as_ref() else {
            bail!("no channel to RabbitMQ");
        };
        let publishing = async {
            let confirm = channel
                .basic_publish(
                    self.settings.exchange.as_str().into(),
                    event.r#type.as_str().into(),
                    BasicPublishOptions::default(),
                    &event.encode_to_vec(),
                    properties(event),
                )
                .await?
                .await?;
            Ok::<_, lapin::Error>(confirm)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, publishing).await {
            Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Nack(_))) => {
                *guard = None;
                bail!("RabbitMQ refused event {}", event.id)
            }
            Ok(Err(err)) => {
                *guard = None;
                Err(err).context("publishing to RabbitMQ")
            }
            Err(_) => {
                *guard = None;
                bail!("RabbitMQ did not confirm event {} in time", event.id)
            }
        }
    }
}
