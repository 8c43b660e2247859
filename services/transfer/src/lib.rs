//! Fleet's transfer service: a user's personal data exported as one
//! document, streamed from the services that own it. It owns only the
//! record of every export it ran.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod document;
mod import;
pub mod reading;
pub mod store;
pub mod stream;
pub mod table;

use std::sync::Arc;

use anyhow::Context;
use fleet_kit::{Db, SharedClock, events::EventPublisher, outbox::OutboxRelay, token::TokenVerifier};
use fleet_proto::transfer::v1::transfer_service_server::TransferServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use api::{Sources, TransferApi};

/// The gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "fleet.transfer.v1.TransferService";
/// The schema (PostgreSQL) and file name (SQLite) of the transfer store.
pub const STORE_NAME: &str = "transfer";

/// How the transfer service behaves (`transfer.*` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TransferSettings {
    /// The largest document an import takes, bytes; the gateway lets bodies
    /// this large through on the import route only.
    pub max_import_bytes: usize,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            max_import_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The template of the import route, whose body limit is
/// [`TransferSettings::max_import_bytes`].
pub const IMPORT_ROUTE: &str = "/api/v1/import";
/// The gateway's deadline of an import unless configured otherwise, ms.
pub const IMPORT_TIMEOUT_MS: u64 = 300_000;

/// What the transfer service runs on.
pub struct Deps {
    /// Its migrated store.
    pub db: Db,
    /// Where its events (`transfer.export_completed`) go.
    pub bus: Arc<dyn EventPublisher>,
    /// The time source.
    pub clock: SharedClock,
    /// Verifies callers' tokens.
    pub verifier: Arc<TokenVerifier>,
    /// The services an export reads from.
    pub sources: Sources,
    /// Its settings.
    pub settings: TransferSettings,
}

/// Makes the store ready.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate(&store::migrations())
        .await
        .context("migrating the transfer store")
}

/// Serves the transfer service on `listener` until `shutdown` is cancelled;
/// the outbox relay runs alongside.
pub async fn serve(deps: Deps, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::transfer_store(&deps.db);
    let relay = OutboxRelay::new(&deps.db, deps.bus.clone(), deps.clock.clone());
    let relay_task = tokio::spawn(relay.run(shutdown.clone().cancelled_owned()));
    let api = TransferApi::new(store, deps.sources, deps.clock.clone());
    // An import's document arrives as one message: room for the largest,
    // and for the message around it.
    let largest = deps.settings.max_import_bytes.saturating_add(64 * 1024);
    let routes = Routes::new(TransferServiceServer::new(api).max_decoding_message_size(largest));
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
    served
}
