//! Where a consuming service's events come from: the in-process bus under
//! `fleet run` without RabbitMQ, or a durable queue that every replica of the
//! service shares, so that each event is handled by one of them. Handlers
//! are idempotent by event id in their stores, so a redelivery changes
//! nothing.

use std::{sync::Arc, time::Duration};

use fleet_proto::events::v1::Event;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::amqp::{self, AmqpSettings, EventHandler, HandleError, RecentIds, Subscription};

/// Where events come from.
pub enum Feed {
    /// The in-process bus of `fleet run`.
    Bus(broadcast::Receiver<Arc<Event>>),
    /// RabbitMQ: a durable queue every replica shares.
    Amqp {
        /// The broker and exchanges.
        settings: AmqpSettings,
        /// The queue.
        queue: String,
    },
}

/// Deliveries a consumer holds unacknowledged at most: a few batches, so
/// that the next one is waiting while one is written.
const PREFETCH: u16 = 256;
/// Returns of one message to a shared queue (each a consumer that died or
/// vanished holding it) before the broker dead-letters it.
const DELIVERY_LIMIT: u32 = 20;
/// Attempts at one event from the bus, which does not redeliver.
const BUS_ATTEMPTS: u64 = 3;

/// Feeds `handler` from `feed` until `shutdown`; `consumer` names it in the
/// log.
pub async fn run(feed: Feed, handler: Arc<dyn EventHandler>, consumer: &'static str, shutdown: CancellationToken) {
    match feed {
        Feed::Amqp { settings, queue } => {
            let subscription = Subscription {
                queue,
                bindings: vec!["#".to_string()],
                private: false,
                prefetch: PREFETCH,
                delivery_limit: DELIVERY_LIMIT,
                retry_for: crate::amqp::RETRY_FOR,
            };
            // The store is what makes a redelivery harmless; the memory of
            // recent ids only spares it the work.
            let recent = Arc::new(RecentIds::new(10_000));
            amqp::consume(settings, subscription, handler, recent, shutdown).await;
        }
        Feed::Bus(mut events) => loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => {
                    for attempt in 1..=BUS_ATTEMPTS {
                        match handler.handle(&event).await {
                            Ok(()) => break,
                            Err(HandleError::Retry(err)) if attempt < BUS_ATTEMPTS => {
                                tracing::warn!(
                                    consumer,
                                    error = format!("{err:#}"),
                                    "handling an event failed; retrying"
                                );
                                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                            }
                            Err(err) => {
                                tracing::error!(consumer, event_id = %event.id, error = %err, "an event was not handled");
                                break;
                            }
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::error!(consumer, missed, "fell behind the in-process event bus");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        },
    }
}
