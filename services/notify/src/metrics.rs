//! The notify service's metrics, registered by the binary next to every
//! other component's: notifications written, and deliveries by outcome.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A delivery attempt's channel and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `webhook` or `email`.
    pub channel: String,
    /// `delivered`, `retry`, `failed` or `disabled`.
    pub outcome: String,
}

/// The notify service's figures.
#[derive(Debug, Clone)]
pub struct NotifyMetrics {
    /// Notifications written.
    pub notifications_written: Counter,
    /// Delivery attempts by channel and outcome.
    pub deliveries: Family<Outcome, Counter>,
    /// How long attempts took.
    pub delivery_seconds: Histogram,
    /// Webhook endpoints disabled (410, or failing for 5 days).
    pub webhooks_disabled: Counter,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        Self {
            notifications_written: Counter::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
            webhooks_disabled: Counter::default(),
        }
    }
}

impl NotifyMetrics {
    /// Metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "notify_notifications_written",
            "Notifications written to users' feeds",
            metrics.notifications_written.clone(),
        );
        registry.register(
            "notify_deliveries",
            "Webhook and email delivery attempts by outcome",
            metrics.deliveries.clone(),
        );
        // Every series from zero, so that rates and ratios have a start.
        for channel in ["webhook", "email"] {
            for outcome in ["delivered", "retry", "failed", "disabled"] {
                drop(metrics.deliveries.get_or_create(&Outcome {
                    channel: channel.into(),
                    outcome: outcome.into(),
                }));
            }
        }
        registry.register(
            "notify_delivery_seconds",
            "How long webhook and email delivery attempts took",
            metrics.delivery_seconds.clone(),
        );
        registry.register(
            "notify_webhooks_disabled",
            "Webhook endpoints disabled after a 410 or five days of failures",
            metrics.webhooks_disabled.clone(),
        );
        metrics
    }

    /// Counts an attempt.
    pub fn attempt(&self, channel: &str, outcome: &str, seconds: f64) {
        self.deliveries
            .get_or_create(&Outcome {
                channel: channel.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.delivery_seconds.observe(seconds);
    }
}
