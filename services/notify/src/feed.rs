//! Where notify's events come from: the in-process bus under `fleet run`
//! without RabbitMQ, or the durable queue `fleet.notify` every notify
//! replica shares, so each event is handled once. A notification's id is
//! its event's, so a redelivery after a crash writes nothing.

use std::sync::Arc;

use fleet_kit::{
    SharedClock,
    amqp::{self, AmqpSettings, EventHandler, HandleError, RecentIds, Subscription},
};
use fleet_proto::events::v1::Event;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    dispatch::Dispatcher,
    kinds::{Plan, plan},
    metrics::NotifyMetrics,
    store::NotifyStore,
};

/// The queue every notify replica consumes.
pub const QUEUE: &str = "fleet.notify";

/// Where events come from.
pub enum Feed {
    /// The in-process bus of `fleet run`.
    Bus(broadcast::Receiver<Arc<Event>>),
    /// RabbitMQ: a durable queue every replica shares (`fleet.notify`).
    Amqp {
        /// The broker and exchanges.
        settings: AmqpSettings,
        /// The queue.
        queue: String,
    },
}

/// Turns events into notifications and deliveries.
pub struct Notifier {
    store: Arc<dyn NotifyStore>,
    dispatcher: Arc<Dispatcher>,
    clock: SharedClock,
    metrics: NotifyMetrics,
}

/// Deliveries handled in one transaction at most.
const BATCH: usize = 64;

impl Notifier {
    /// A notifier writing to `store` and waking `dispatcher`.
    pub fn new(
        store: Arc<dyn NotifyStore>,
        dispatcher: Arc<Dispatcher>,
        clock: SharedClock,
        metrics: NotifyMetrics,
    ) -> Self {
        Self {
            store,
            dispatcher,
            clock,
            metrics,
        }
    }

    /// Applies events in one transaction.
    pub async fn apply(&self, events: &[&Event]) -> Result<(), HandleError> {
        let mut plans = Vec::with_capacity(events.len());
        for event in events {
            match plan(event) {
                Ok(Plan::Ignore) => {}
                Ok(planned) => plans.push(planned),
                Err(err) => return Err(HandleError::Reject(err.into())),
            }
        }
        if plans.is_empty() {
            return Ok(());
        }
        let ingested = self
            .store
            .ingest(&plans, self.dispatcher.sends_email(), self.clock.now())
            .await
            .map_err(HandleError::Retry)?;
        self.metrics.notifications_written.inc_by(ingested.notifications as u64);
        if ingested.deliveries > 0 {
            self.dispatcher.wake();
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventHandler for Notifier {
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        self.apply(&[event]).await
    }

    fn batch_size(&self) -> usize {
        BATCH
    }

    /// The batch in one transaction; a poison event is set aside and the
    /// rest go together; on a failure each goes alone, with its retries.
    async fn handle_batch(&self, events: &[Event]) -> Vec<Result<(), HandleError>> {
        let poison: Vec<bool> = events.iter().map(|e| plan(e).is_err()).collect();
        let good: Vec<&Event> = events
            .iter()
            .zip(&poison)
            .filter(|(_, p)| !**p)
            .map(|(e, _)| e)
            .collect();
        match self.apply(&good).await {
            Ok(()) => {
                let mut results = Vec::with_capacity(events.len());
                for (event, bad) in events.iter().zip(poison) {
                    results.push(if bad { self.apply(&[event]).await } else { Ok(()) });
                }
                results
            }
            Err(err) => {
                let err = format!("{err}");
                events
                    .iter()
                    .map(|_| Err(HandleError::Retry(anyhow::anyhow!("{err}"))))
                    .collect()
            }
        }
    }
}

/// Feeds `notifier` from `feed` until `shutdown`.
pub async fn run(feed: Feed, notifier: Arc<Notifier>, shutdown: CancellationToken) {
    match feed {
        Feed::Amqp { settings, queue } => {
            let subscription = Subscription {
                queue,
                bindings: vec!["#".to_string()],
                private: false,
                prefetch: 64,
            };
            let recent = Arc::new(RecentIds::new(10_000));
            amqp::consume(settings, subscription, notifier, recent, shutdown).await;
        }
        Feed::Bus(mut events) => loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => {
                    // The bus does not redeliver: a transient failure is
                    // tried again a few times.
                    for attempt in 1..=3 {
                        match notifier.apply(&[&event]).await {
                            Ok(()) => break,
                            Err(HandleError::Retry(err)) if attempt < 3 => {
                                tracing::warn!(error = format!("{err:#}"), "notifying failed; retrying");
                                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                            }
                            Err(err) => {
                                tracing::error!(event_id = %event.id, error = %err, "an event was not notified");
                                break;
                            }
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(missed = n, "notify fell behind the in-process event bus");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        },
    }
}
