//! Fleet's notify service: what users are told about their accounts. Events
//! become notifications in an in-app feed, Standard Webhooks deliveries and
//! optional emails, retried from the store on the specification's schedule.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod device;
pub mod dispatch;
pub mod email;
pub mod feed;
pub mod kinds;
pub mod metrics;
pub mod sql;
pub mod store;
pub mod webhook;

use std::sync::Arc;

use anyhow::Context;
use fleet_kit::{Db, SharedClock, token::TokenVerifier};
use fleet_proto::notify::v1::notify_service_server::NotifyServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use api::NotifyApi;
pub use fleet_kit::feed::Feed;

/// The gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "fleet.notify.v1.NotifyService";
/// The schema (PostgreSQL) and file name (SQLite) of the notify store.
pub const STORE_NAME: &str = "notify";

/// How the notify service behaves (`notify.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NotifySettings {
    /// The RabbitMQ queue every notify replica shares.
    pub queue: String,
    /// Where webhooks may go.
    pub webhooks: webhook::WebhookSettings,
    /// Email, off by default.
    pub email: email::EmailSettings,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            queue: feed::QUEUE.to_string(),
            webhooks: webhook::WebhookSettings::default(),
            email: email::EmailSettings::default(),
        }
    }
}

/// What the notify service runs on.
pub struct Deps {
    /// Its migrated store.
    pub db: Db,
    /// Where the events it tells of come from.
    pub feed: Feed,
    /// The time source.
    pub clock: SharedClock,
    /// Verifies callers' tokens.
    pub verifier: Arc<TokenVerifier>,
    /// Its settings.
    pub settings: NotifySettings,
    /// Where its figures are counted.
    pub metrics: metrics::NotifyMetrics,
}

/// Makes the store ready.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate(&store::migrations())
        .await
        .context("migrating the notify store")
}

/// Serves the notify service on `listener` until `shutdown` is cancelled;
/// the feed and the dispatcher run alongside.
pub async fn serve(deps: Deps, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::notify_store(&deps.db);
    let dispatcher = Arc::new(dispatch::Dispatcher::new(
        store.clone(),
        webhook::WebhookClient::new(deps.settings.webhooks).context("building the webhook client")?,
        email::Mailer::new(&deps.settings.email).context("configuration")?,
        deps.clock.clone(),
        deps.metrics.clone(),
    ));
    let dispatch_task = tokio::spawn(dispatcher.clone().run(shutdown.clone()));
    let notifier = Arc::new(feed::Notifier::new(
        store.clone(),
        dispatcher,
        deps.clock.clone(),
        deps.metrics,
    ));
    let feed_task = tokio::spawn(fleet_kit::feed::run(deps.feed, notifier, "notify", shutdown.clone()));
    let api = NotifyApi::new(store, deps.clock.clone(), deps.settings.webhooks);
    let routes = Routes::new(NotifyServiceServer::new(api));
    let served = fleet_kit::grpc::serve(
        listener,
        routes,
        &[SERVICE_NAME],
        deps.verifier,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    let _ = feed_task.await;
    let _ = dispatch_task.await;
    served
}
