//! What is done with each event the activity log is fed (through the kit's
//! [`fleet_kit::feed`]: the in-process bus, or the durable queue
//! `fleet.stats` that every stats replica shares). The store keys entries by
//! event id, so a redelivery after a crash changes nothing.

use std::sync::Arc;

use fleet_kit::{
    SharedClock,
    amqp::{EventHandler, HandleError},
    outbox::OutboxRelay,
};
use fleet_proto::events::v1::Event;

use crate::{
    metrics::StatsMetrics,
    projection::{Entry, Projected, Unprojectable, project},
    store::{Recorded, StatsStore},
};

/// The queue every stats replica consumes.
pub const QUEUE: &str = "fleet.stats";

/// Projects events into the store.
pub struct Recorder {
    store: Arc<dyn StatsStore>,
    relay: OutboxRelay,
    clock: SharedClock,
    metrics: StatsMetrics,
}

impl Recorder {
    /// A recorder writing to `store`, waking `relay` for the notices.
    pub fn new(store: Arc<dyn StatsStore>, relay: OutboxRelay, clock: SharedClock, metrics: StatsMetrics) -> Self {
        Self {
            store,
            relay,
            clock,
            metrics,
        }
    }

    /// Projects one event; what happened.
    pub async fn apply(&self, event: &Event) -> Result<Option<Recorded>, HandleError> {
        let now = self.clock.now();
        let outcome = match project(event) {
            Ok(Projected::Entry(entry)) => self.store.record(&entry, now).await.map(Some),
            Ok(Projected::Erase { user_id, .. }) => self.store.erase_user(user_id, now).await.map(|()| None),
            Err(Unprojectable::NoSubject | Unprojectable::Own) => return Ok(None),
            Err(err @ Unprojectable::Malformed(_)) => return Err(HandleError::Reject(err.into())),
        };
        let recorded = outcome.map_err(HandleError::Retry)?;
        if recorded != Some(Recorded::Duplicate) {
            self.relay.wake();
        }
        self.metrics.observe(lag_seconds(event, now), recorded);
        Ok(recorded)
    }

    /// Records a run of entries in one transaction; their outcomes.
    async fn record_run(&self, run: &[(&Event, Entry)]) -> Vec<Result<(), HandleError>> {
        let now = self.clock.now();
        let entries: Vec<Entry> = run.iter().map(|(_, entry)| entry.clone()).collect();
        match self.store.record_many(&entries, now).await {
            Ok(outcomes) => {
                self.relay.wake();
                for ((event, _), recorded) in run.iter().zip(&outcomes) {
                    self.metrics.observe(lag_seconds(event, now), Some(*recorded));
                }
                outcomes.iter().map(|_| Ok(())).collect()
            }
            // Each then goes on its own, with its retries.
            Err(err) => run
                .iter()
                .map(|_| Err(HandleError::Retry(anyhow::anyhow!("{err:#}"))))
                .collect(),
        }
    }
}

/// Now minus the event's `occurred_at`, in seconds.
fn lag_seconds(event: &Event, now: chrono::DateTime<chrono::Utc>) -> f64 {
    let occurred = event.occurred_at.as_ref().and_then(fleet_kit::time::from_timestamp);
    #[allow(clippy::cast_precision_loss)] // milliseconds of lag, far below 2^52
    occurred.map_or(0.0, |at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
}

/// Deliveries projected in one transaction at most.
const BATCH: usize = 64;

#[async_trait::async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        self.apply(event).await.map(drop)
    }

    fn batch_size(&self) -> usize {
        BATCH
    }

    /// Consecutive entries go in one transaction; an erasure or an event
    /// that is not an entry is applied alone, in its place, so that the
    /// order of a user's events holds.
    async fn handle_batch(&self, events: &[Event]) -> Vec<Result<(), HandleError>> {
        let mut results = Vec::with_capacity(events.len());
        let mut run: Vec<(&Event, Entry)> = Vec::new();
        for event in events {
            match project(event) {
                Ok(Projected::Entry(entry)) => run.push((event, entry)),
                _ => {
                    if !run.is_empty() {
                        results.extend(self.record_run(&run).await);
                        run.clear();
                    }
                    results.push(self.apply(event).await.map(drop));
                }
            }
        }
        if !run.is_empty() {
            results.extend(self.record_run(&run).await);
        }
        results
    }
}
