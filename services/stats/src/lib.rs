//! Fleet's stats service: the activity log, an append-only projection of the
//! fleet's events about users, and the figures read from it. It keeps
//! nothing it could not rebuild from events.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod feed;
pub mod metrics;
pub mod projection;
pub mod sql;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use fleet_kit::grpc::FreshChannel;
use fleet_kit::{Db, SharedClock, events::EventPublisher, outbox::OutboxRelay, token::TokenVerifier};
use fleet_proto::stats::v1::stats_service_server::StatsServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use api::StatsApi;
pub use fleet_kit::feed::Feed;

/// The gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "fleet.stats.v1.StatsService";
/// The schema (PostgreSQL) and file name (SQLite) of the stats store.
pub const STORE_NAME: &str = "stats";

/// How the stats service behaves (`stats.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StatsSettings {
    /// The RabbitMQ queue every stats replica shares.
    pub queue: String,
    /// How long activity is kept; older entries are pruned in batches.
    pub retention_days: u32,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            queue: feed::QUEUE.to_string(),
            retention_days: 365,
        }
    }
}

/// What the stats service runs on.
pub struct Deps {
    /// Its migrated store.
    pub db: Db,
    /// Where its notices (`stats.projected`) go.
    pub bus: Arc<dyn EventPublisher>,
    /// Where the events it projects come from.
    pub feed: Feed,
    /// The time source.
    pub clock: SharedClock,
    /// Verifies callers' tokens.
    pub verifier: Arc<TokenVerifier>,
    /// The users service, which says who is an administrator.
    pub users: FreshChannel,
    /// Its settings.
    pub settings: StatsSettings,
    /// Where its figures are counted.
    pub metrics: metrics::StatsMetrics,
}

/// Makes the store ready.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate(&store::migrations())
        .await
        .context("migrating the stats store")
}

/// Serves the stats service on `listener` until `shutdown` is cancelled; the
/// feed and the outbox relay run alongside.
pub async fn serve(deps: Deps, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::stats_store(&deps.db);
    let relay = OutboxRelay::new(&deps.db, deps.bus.clone(), deps.clock.clone());
    let relay_task = tokio::spawn(relay.clone().run(shutdown.clone().cancelled_owned()));
    let recorder = Arc::new(feed::Recorder::new(
        store.clone(),
        relay,
        deps.clock.clone(),
        deps.metrics,
    ));
    let feed_task = tokio::spawn(fleet_kit::feed::run(deps.feed, recorder, "stats", shutdown.clone()));
    let retention = Duration::days(i64::from(deps.settings.retention_days));
    let prune_task = tokio::spawn(prune_forever(
        store.clone(),
        retention,
        deps.clock.clone(),
        shutdown.clone(),
    ));
    let api = StatsApi::new(store, deps.users, deps.clock.clone());
    let routes = Routes::new(StatsServiceServer::new(api));
    let served = fleet_kit::grpc::serve(
        listener,
        routes,
        &[SERVICE_NAME],
        deps.verifier,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    let _ = relay_task.await;
    let _ = feed_task.await;
    let _ = prune_task.await;
    served
}

/// Entries deleted per statement: small enough never to hold the table.
const PRUNE_BATCH: i64 = 1_000;

/// Deletes the entries older than `retention`, now and every hour after.
async fn prune_forever(
    store: Arc<dyn store::StatsStore>,
    retention: Duration,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    loop {
        match enforce_retention(store.as_ref(), clock.as_ref(), retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned old activity"),
            Err(err) => tracing::warn!(error = format!("{err:#}"), "pruning activity failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

/// Deletes what is older than `retention` as `clock` tells the time, a
/// batch at a time; how many.
pub async fn enforce_retention(
    store: &dyn store::StatsStore,
    clock: &dyn fleet_kit::clock::Clock,
    retention: Duration,
) -> anyhow::Result<u64> {
    let before: DateTime<Utc> = clock.now() - retention;
    let mut total = 0;
    loop {
        let deleted = store.prune(before, PRUNE_BATCH).await?;
        total += deleted;
        if deleted < PRUNE_BATCH as u64 {
            return Ok(total);
        }
        // Let writers in between batches.
        tokio::task::yield_now().await;
    }
}
