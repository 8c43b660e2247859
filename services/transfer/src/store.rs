//! The transfer store: the record of every export, one trait and one SQL
//! body instantiated for PostgreSQL and SQLite. An export that completes
//! writes its `transfer.export_completed` event in the same transaction.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::StorePool;
use fleet_kit::{Db, events::new_event, outbox::enqueue, store::Migrations};
use fleet_proto::events::v1::{TransferExportCompleted, TransferImportCompleted, event::Payload};
use sqlx::{Postgres, Sqlite};
use uuid::Uuid;

/// The component name on events.
pub const PRODUCER: &str = "transfer";

/// The transfer service's migrations.
pub fn migrations() -> Migrations {
    Migrations {
        postgres: sqlx::migrate!("migrations/postgres"),
        sqlite: sqlx::migrate!("migrations/sqlite"),
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// An export being started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExport {
    /// Its id.
    pub id: Uuid,
    /// Whose data.
    pub user_id: Uuid,
    /// Who asked: a user's id, or `service:<name>`.
    pub requested_by: String,
    /// `json` or `csv`.
    pub format: String,
}

/// A stored export record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportRecord {
    /// Its id.
    pub id: Uuid,
    /// Whose data.
    pub user_id: Uuid,
    /// Who asked: a user's id, or `service:<name>`.
    pub requested_by: String,
    /// `json` or `csv`.
    pub format: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// Activity entries written.
    pub activity_entries: i64,
    /// When it started (µs).
    pub started_us: i64,
    /// When it ended (µs).
    pub finished_us: Option<i64>,
}

/// An import that wrote (or tried to write) to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    /// Its id.
    pub id: Uuid,
    /// Into whose account.
    pub user_id: Uuid,
    /// Who asked: a user's id, or `service:<name>`.
    pub requested_by: String,
    /// `json` or `csv`.
    pub format: String,
    /// Whether it ran to its end.
    pub completed: bool,
    /// Whether the profile changed.
    pub profile_updated: bool,
    /// Activity entries added.
    pub activity_imported: u64,
    /// Activity entries skipped.
    pub activity_skipped: u64,
}

/// The transfer service's records.
#[async_trait::async_trait]
pub trait TransferStore: Send + Sync + 'static {
    /// Records an export as running.
    async fn start_export(&self, export: &NewExport, now: DateTime<Utc>) -> anyhow::Result<()>;
    /// Records an export as completed with `entries` activity entries, and
    /// its event, together.
    async fn complete_export(&self, id: Uuid, entries: u64, now: DateTime<Utc>) -> anyhow::Result<()>;
    /// Records an export as failed (the client went away, or a read failed).
    async fn fail_export(&self, id: Uuid, entries: u64, now: DateTime<Utc>) -> anyhow::Result<()>;
    /// An export's record.
    async fn export(&self, id: Uuid) -> anyhow::Result<Option<ExportRecord>>;
    /// Records an import, and, when it completed, its event, together.
    async fn record_import(&self, import: &ImportRecord, now: DateTime<Utc>) -> anyhow::Result<()>;
}

/// The store on `db`.
pub fn transfer_store(db: &Db) -> Arc<dyn TransferStore> {
    match db {
        Db::Postgres(pool) => Arc::new(SqlTransferStore { pool: pool.clone() }),
        Db::Sqlite(pool) => Arc::new(SqlTransferStore { pool: pool.clone() }),
    }
}

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlTransferStore<DB: sqlx::Database> {
    pool: StorePool<DB>,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

macro_rules! sql_transfer_store {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl TransferStore for SqlTransferStore<$db> {
            async fn start_export(&self, export: &NewExport, now: DateTime<Utc>) -> anyhow::Result<()> {
                sqlx::query(
                    "INSERT INTO exports (id, user_id, requested_by, format, status, activity_entries, started_us) \
                     VALUES ($1, $2, $3, $4, 'running', 0, $5)",
                )
                .bind(export.id)
                .bind(export.user_id)
                .bind(&export.requested_by)
                .bind(&export.format)
                .bind(micros(now))
                .execute(&self.pool)
                .await
                .context("recording an export")?;
                Ok(())
            }

            async fn complete_export(&self, id: Uuid, entries: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self
                    .pool
                    .begin_write()
                    .await
                    .context("begin")?;
                let record = sqlx::query_as::<_, ExportRecord>(
                    "UPDATE exports SET status = 'completed', activity_entries = $2, finished_us = $3 \
                     WHERE id = $1 AND status = 'running' RETURNING *",
                )
                .bind(id)
                .bind(count(entries))
                .bind(micros(now))
                .fetch_optional(&mut *tx)
                .await
                .context("completing an export")?
                .with_context(|| format!("export {id} is not running"))?;
                let event = new_event(
                    PRODUCER,
                    Some(record.user_id),
                    now,
                    Payload::TransferExportCompleted(TransferExportCompleted {
                        export_id: id.to_string(),
                        format: record.format,
                        activity_entries: entries,
                        requested_by: record.requested_by,
                    }),
                );
                enqueue(&mut *tx, &event, now).await?;
                tx.commit().await.context("commit")?;
                Ok(())
            }

            async fn fail_export(&self, id: Uuid, entries: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
                sqlx::query(
                    "UPDATE exports SET status = 'failed', activity_entries = $2, finished_us = $3 \
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(id)
                .bind(count(entries))
                .bind(micros(now))
                .execute(&self.pool)
                .await
                .context("recording a failed export")?;
                Ok(())
            }

            async fn record_import(&self, import: &ImportRecord, now: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self
                    .pool
                    .begin_write()
                    .await
                    .context("begin")?;
                sqlx::query(
                    "INSERT INTO imports (id, user_id, requested_by, format, status, profile_updated, \
                     activity_imported, activity_skipped, finished_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(import.id)
                .bind(import.user_id)
                .bind(&import.requested_by)
                .bind(&import.format)
                .bind(if import.completed { "completed" } else { "failed" })
                .bind(import.profile_updated)
                .bind(count(import.activity_imported))
                .bind(count(import.activity_skipped))
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .context("recording an import")?;
                if import.completed {
                    let event = new_event(
                        PRODUCER,
                        Some(import.user_id),
                        now,
                        Payload::TransferImportCompleted(TransferImportCompleted {
                            import_id: import.id.to_string(),
                            format: import.format.clone(),
                            profile_updated: import.profile_updated,
                            activity_imported: import.activity_imported,
                            activity_skipped: import.activity_skipped,
                            requested_by: import.requested_by.clone(),
                        }),
                    );
                    enqueue(&mut *tx, &event, now).await?;
                }
                tx.commit().await.context("commit")?;
                Ok(())
            }

            async fn export(&self, id: Uuid) -> anyhow::Result<Option<ExportRecord>> {
                sqlx::query_as::<_, ExportRecord>("SELECT * FROM exports WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading an export")
            }
        }
    };
}

sql_transfer_store!(Postgres);
sql_transfer_store!(Sqlite);
