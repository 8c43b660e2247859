//! The stats service's metrics, registered by the binary next to every other
//! component's: how far behind the events it is, and what it wrote.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Which consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Consumer {
    /// Its name ("stats").
    pub consumer: String,
}

/// The stats consumer's figures.
#[derive(Debug, Clone, Default)]
pub struct StatsMetrics {
    /// Now minus the last projected event's `occurred_at`, in seconds.
    pub lag_seconds: Family<Consumer, Gauge<f64, AtomicU64>>,
    /// Entries added to the activity log.
    pub entries_written: Counter,
    /// Events already projected, delivered again and skipped.
    pub duplicates_skipped: Counter,
}

impl StatsMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "events_consumer_lag_seconds",
            "Now minus the occurred_at of the last event a consumer processed",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "stats_entries_written",
            "Entries added to the activity log",
            metrics.entries_written.clone(),
        );
        registry.register(
            "stats_duplicates_skipped",
            "Events delivered again and skipped by the activity log",
            metrics.duplicates_skipped.clone(),
        );
        metrics
    }

    /// Records what projecting one event did.
    pub fn observe(&self, lag_seconds: f64, recorded: Option<crate::store::Recorded>) {
        self.lag_seconds
            .get_or_create(&Consumer {
                consumer: "stats".to_string(),
            })
            .set(lag_seconds);
        match recorded {
            Some(crate::store::Recorded::Added) => {
                self.entries_written.inc();
            }
            Some(crate::store::Recorded::Duplicate) => {
                self.duplicates_skipped.inc();
            }
            _ => {}
        }
    }
}
