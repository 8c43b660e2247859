//! Fleet's stats service: the activity log, an append-only projection of the
//! fleet's events about users, and the figures read from it. It keeps
//! nothing it could not rebuild from events.
//!
//! This crate has the projection and its store so far; the gRPC service,
//! its consumer queue and its wiring into `fleet run` come next.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod projection;
pub mod store;

use anyhow::Context;
use fleet_kit::Db;

/// The gRPC service name, as health and reflection report it.
pub const SERVICE_NAME: &str = "fleet.stats.v1.StatsService";
/// The schema (PostgreSQL) and file name (SQLite) of the stats store.
pub const STORE_NAME: &str = "stats";

/// Makes the store ready.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    db.migrate(&store::migrations())
        .await
        .context("migrating the stats store")
}
