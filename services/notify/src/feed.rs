//! What is done with each event notify is fed (through the kit's
//! [`fleet_kit::feed`]: the in-process bus, or the durable queue
//! `fleet.notify` every notify replica shares). A notification's id is its
//! event's, so a redelivery after a crash writes nothing.

use std::sync::Arc;

use fleet_kit::{
    SharedClock,
    amqp::{EventHandler, HandleError},
};
use fleet_proto::events::v1::Event;

use crate::{
    dispatch::Dispatcher,
    kinds::{Plan, plan},
    metrics::NotifyMetrics,
    store::NotifyStore,
};

/// The queue every notify replica consumes.
pub const QUEUE: &str = "fleet.notify";

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
