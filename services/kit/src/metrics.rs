//! Process-wide event metrics. Outbox relays and consumers are created deep
//! inside each service; they count into this one set, which the binary
//! registers next to every component's own metrics.

use std::sync::OnceLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// A queue label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue.
    pub queue: String,
}

/// Event flow counters.
#[derive(Debug, Clone, Default)]
pub struct EventMetrics {
    /// Events handed to the bus by outbox relays.
    pub published: Counter,
    /// Failed publish attempts.
    pub publish_failures: Counter,
    /// Events written but not yet published (last seen by a relay).
    pub outbox_backlog: Gauge,
    /// Events processed by consumers, by queue.
    pub consumed: Family<QueueLabels, Counter>,
    /// Events dead-lettered, by queue.
    pub dead_lettered: Family<QueueLabels, Counter>,
}

/// The process's event metrics.
pub fn events() -> &'static EventMetrics {
    static METRICS: OnceLock<EventMetrics> = OnceLock::new();
    METRICS.get_or_init(EventMetrics::default)
}

/// Registers the event metrics.
pub fn register_events(registry: &mut Registry) {
    let m = events();
    registry.register(
        "events_published",
        "Events published from outboxes",
        m.published.clone(),
    );
    registry.register(
        "events_publish_failures",
        "Failed attempts to publish events",
        m.publish_failures.clone(),
    );
    registry.register(
        "outbox_backlog",
        "Events waiting in an outbox",
        m.outbox_backlog.clone(),
    );
    registry.register("events_consumed", "Events processed by consumers", m.consumed.clone());
    registry.register(
        "events_dead_lettered",
        "Events sent to a dead-letter queue",
        m.dead_lettered.clone(),
    );
}
