//! Fleet's users service: profiles, roles, listing. It owns the user id,
//! email (unique case-insensitively), display name, role, status and version,
//! and never sees a password.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod domain;
pub mod error;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use fleet_kit::{Db, SharedClock, events::EventPublisher, outbox::OutboxRelay, token::TokenVerifier};
use fleet_proto::users::v1::users_service_server::UsersServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use api::UsersApi;

/// The gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "fleet.users.v1.UsersService";
/// The schema (PostgreSQL) and file name (SQLite) of the users store.
pub const STORE_NAME: &str = "users";

/// What the users service runs on.
#[derive(Clone)]
pub struct Deps {
    /// Its migrated store.
    pub db: Db,
    /// Where its events go.
    pub bus: Arc<dyn EventPublisher>,
    /// The time source.
    pub clock: SharedClock,
    /// Verifies callers' tokens.
    pub verifier: Arc<TokenVerifier>,
}

/// Makes the store ready.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate(&store::migrations())
        .await
        .context("migrating the users store")
}

/// Serves the users service on `listener` until `shutdown` is cancelled; the
/// outbox relay runs alongside.
pub async fn serve(deps: Deps, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let relay = OutboxRelay::new(&deps.db, deps.bus.clone(), deps.clock.clone());
    let relay_task = tokio::spawn(relay.clone().run(shutdown.clone().cancelled_owned()));
    let api = UsersApi::new(store::user_store(&deps.db), relay, deps.clock.clone());
    let routes = Routes::new(UsersServiceServer::new(api));
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
