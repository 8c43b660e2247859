//! Process-wide metrics of what every service shares: events, gRPC servers
//! and store connections. Outbox relays, consumers and gRPC servers are
//! created deep inside each service; they count into these sets, which the
//! binary registers next to every component's own metrics.

use std::sync::{Mutex, OnceLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::Db;

/// Latency buckets from 1 ms to 10 s, shared by every latency histogram.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

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

/// A gRPC status as a snake_case label value (`not_found`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// One handled gRPC call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// The fully-qualified service (`fleet.users.v1.UsersService`).
    pub service: String,
    /// The method (`GetUser`).
    pub method: String,
    /// The gRPC status, snake_case (`ok`, `not_found`).
    pub code: String,
}

/// The latency of one method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethodLabels {
    /// The fully-qualified service.
    pub service: String,
    /// The method.
    pub method: String,
}

/// gRPC server metrics of every service in the process.
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    /// Calls handled, by service, method and status.
    pub handled: Family<GrpcLabels, Counter>,
    /// Time from the request to the end of the answer, by method.
    pub handling_seconds: Family<GrpcMethodLabels, Histogram, fn() -> Histogram>,
}

/// The process's gRPC server metrics.
pub fn grpc() -> &'static GrpcMetrics {
    static METRICS: OnceLock<GrpcMetrics> = OnceLock::new();
    METRICS.get_or_init(|| GrpcMetrics {
        handled: Family::default(),
        handling_seconds: Family::new_with_constructor(latency_histogram),
    })
}

/// Registers the gRPC server metrics.
pub fn register_grpc(registry: &mut Registry) {
    let m = grpc();
    registry.register(
        "grpc_server_handled",
        "gRPC calls handled by the services, by status",
        m.handled.clone(),
    );
    registry.register(
        "grpc_server_handling_seconds",
        "gRPC call latency, to the end of the answer",
        m.handling_seconds.clone(),
    );
}

/// The connection pools of the process's stores, read at every scrape as
/// `database_connections_active{store}`: connections checked out of the pool.
#[derive(Debug, Clone, Default)]
pub struct DbConnections {
    stores: std::sync::Arc<Mutex<Vec<(String, Db)>>>,
}

impl DbConnections {
    /// Registers the collector; stores join it as they open.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        registry.register_collector(Box::new(this.clone()));
        this
    }

    /// Adds a store under `name`.
    pub fn track(&self, name: &str, db: &Db) {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.push((name.to_string(), db.clone()));
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

impl Collector for DbConnections {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut family = encoder.encode_descriptor(
            "database_connections_active",
            "Store connections in use (checked out of the pool)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (store, db) in stores {
            let labels = StoreLabels { store };
            let gauge = ConstGauge::new(db.connections_in_use() as i64);
            gauge.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
