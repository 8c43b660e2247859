//! The RabbitMQ event backbone: one topic exchange (`fleet.events`), events
//! published with publisher confirms, and consumers that are idempotent
//! (processed ids remembered), acknowledge after processing, retry with
//! backoff, dead-letter poison messages and reconnect with backoff. The W3C
//! trace context travels in message headers.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
    time::Duration,
};

use anyhow::Context;
use fleet_proto::events::v1::Event;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind, options::ExchangeDeclareOptions, types::FieldTable,
};
use serde::{Deserialize, Serialize};

use crate::events::{EventPublisher, InProcessBus};

mod consume;
mod publish;

pub use consume::consume;
pub use publish::AmqpPublisher;

/// Where the backbone is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    /// `amqp://user:pass@host:5672/vhost`.
    pub url: String,
    /// The topic exchange events are published to.
    pub exchange: String,
    /// Where rejected messages go; each queue's dead letters end in `<queue>.dead`.
    pub dead_letter_exchange: String,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "fleet.events".into(),
            dead_letter_exchange: "fleet.events.dead".into(),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Connects to the broker. An `amqps://` URL is checked against the Mozilla
/// roots, and also against the CA certificates (PEM) in the file its
/// `cacertfile` query parameter names, as RabbitMQ's own clients read it.
pub(crate) async fn connect(settings: &AmqpSettings) -> anyhow::Result<Connection> {
    let (url, ca) = crate::cacert::split(&settings.url)?;
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    if let Some(pem) = ca {
        tls.cert_chain = Some(String::from_utf8(pem).context("cacertfile is not PEM text")?);
    }
    let connecting = async {
        lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(url)
            .with_properties(ConnectionProperties::default())
            .with_tls_config(tls)
            .connect()
            .await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .context("connecting to RabbitMQ timed out")?
        .context("connecting to RabbitMQ")
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> anyhow::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
        .with_context(|| format!("declaring exchange {name}"))
}

// === consumers ===

/// Why a handler did not process an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth another try (a dependency was down).
    #[error("transient: {0:#}")]
    Retry(anyhow::Error),
    /// Will never succeed: dead-letter it.
    #[error("rejected: {0:#}")]
    Reject(anyhow::Error),
}

/// Processes events of a subscription.
#[async_trait::async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event; called at most once per event id that succeeds.
    async fn handle(&self, event: &Event) -> Result<(), HandleError>;

    /// How many deliveries that are already waiting may be handed over at
    /// once, through [`EventHandler::handle_batch`]; 1: one at a time.
    fn batch_size(&self) -> usize {
        1
    }

    /// Handles events delivered together; one result per event, in order.
    /// A handler that can do the work of many in one go (one transaction)
    /// overrides it; by default they are handled one by one.
    async fn handle_batch(&self, events: &[Event]) -> Vec<Result<(), HandleError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.handle(event).await);
        }
        results
    }

    /// The consumer is consuming again after a disconnection: on a private
    /// queue, what was published meanwhile is lost.
    fn reconnected(&self) {}
}

/// Remembers processed event ids, so redeliveries are not processed twice.
#[async_trait::async_trait]
pub trait ProcessedEvents: Send + Sync + 'static {
    /// Already processed?
    async fn seen(&self, id: &str) -> anyhow::Result<bool>;
    /// Records a processed event.
    async fn remember(&self, id: &str) -> anyhow::Result<()>;
}

/// The last `capacity` processed ids, in memory: for consumers whose effects
/// are themselves harmless to repeat after a restart (cache invalidation).
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl RecentIds {
    /// Remembers up to `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }
}

#[async_trait::async_trait]
impl ProcessedEvents for RecentIds {
    async fn seen(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.contains(id))
    }

    async fn remember(&self, id: &str) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0.insert(id.to_string()) {
            inner.1.push_back(id.to_string());
            while inner.1.len() > self.capacity {
                if let Some(old) = inner.1.pop_front() {
                    inner.0.remove(&old);
                }
            }
        }
        Ok(())
    }
}

/// A queue bound to the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Queue name. Shared durable queues spread work across replicas.
    pub queue: String,
    /// Routing-key patterns (`user.*`, `#`).
    pub bindings: Vec<String>,
    /// A private queue that vanishes with its consumer (one per replica).
    pub private: bool,
    /// Unacknowledged deliveries at a time.
    pub prefetch: u16,
    /// For a shared queue: how many times one message may go back to the
    /// queue (its consumer died or let it go unacknowledged) before the
    /// broker dead-letters it, so that a message that kills every consumer
    /// it reaches cannot block the queue. Shared queues are quorum queues,
    /// which count returns; private ones ignore this.
    pub delivery_limit: u32,
    /// How long a delivery whose handling fails transiently (a dependency
    /// is down) is tried again before it goes back to the queue.
    pub retry_for: Duration,
}

/// What consumers wait out with a delivery held: a store or service
/// restarting.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// Hands every event to this process's in-process bus: with RabbitMQ, one
/// private queue per process feeds the same followers the embedded bus does.
#[derive(Debug, Clone)]
pub struct ForwardToBus(pub InProcessBus);

#[async_trait::async_trait]
impl EventHandler for ForwardToBus {
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        self.0.publish(event).await.map_err(HandleError::Retry)
    }
}
