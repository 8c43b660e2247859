//! The transactional outbox. A service writes each event with [`enqueue`] in
//! the transaction that makes the change, so the two commit together or not
//! at all; the [`OutboxRelay`] later publishes what is pending and marks it
//! published only once the bus has taken it. Nothing is lost while the bus is
//! down: the rows wait and go out when it returns.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_proto::events::v1::Event;
use prost::Message;
use sqlx::{Postgres, Sqlite};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    clock::SharedClock,
    events::EventPublisher,
    store::{Db, StorePool},
};

/// A connection that can take outbox rows inside its transaction.
#[async_trait::async_trait]
pub trait OutboxConnection: Send {
    /// Writes `event` to the outbox.
    async fn enqueue(&mut self, event: &Event, at: DateTime<Utc>) -> anyhow::Result<()>;
}

/// Writes `event` to the outbox through `conn` (a transaction's connection).
pub async fn enqueue<C: OutboxConnection + ?Sized>(
    conn: &mut C,
    event: &Event,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    conn.enqueue(event, at).await
}

/// A pending outbox row.
#[derive(Debug)]
struct Pending {
    id: Uuid,
    payload: Vec<u8>,
}

/// Reads and settles outbox rows.
#[async_trait::async_trait]
trait OutboxTable: Send + Sync {
    async fn pending(&self, limit: i64) -> anyhow::Result<Vec<Pending>>;
    async fn mark_published(&self, id: Uuid, at: DateTime<Utc>) -> anyhow::Result<()>;
    async fn backlog(&self) -> anyhow::Result<i64>;
}

/// The outbox SQL, once for both backends.
macro_rules! outbox_sql {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl OutboxConnection for $conn {
            async fn enqueue(&mut self, event: &Event, at: DateTime<Utc>) -> anyhow::Result<()> {
                let id = Uuid::parse_str(&event.id).context("event id is not a UUID")?;
                sqlx::query("INSERT INTO outbox (id, event_type, payload, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(&event.r#type)
                    .bind(event.encode_to_vec())
                    .bind(at)
                    .execute(&mut *self)
                    .await
                    .context("writing the event to the outbox")?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl OutboxTable for StorePool<$db> {
            async fn pending(&self, limit: i64) -> anyhow::Result<Vec<Pending>> {
                let rows: Vec<(Uuid, Vec<u8>)> =
                    sqlx::query_as("SELECT id, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1")
                        .bind(limit)
                        .fetch_all(self)
                        .await
                        .context("reading the outbox")?;
                Ok(rows
                    .into_iter()
                    .map(|(id, payload)| Pending { id, payload })
                    .collect())
            }

            async fn mark_published(&self, id: Uuid, at: DateTime<Utc>) -> anyhow::Result<()> {
                sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(self)
                    .await
                    .context("marking an outbox event published")?;
                Ok(())
            }

            async fn backlog(&self) -> anyhow::Result<i64> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(self)
                    .await
                    .context("counting the outbox backlog")?;
                Ok(n)
            }
        }
    };
}

outbox_sql!(Postgres, sqlx::PgConnection);
outbox_sql!(Sqlite, sqlx::SqliteConnection);

/// Publishes what the outbox holds, in order, and marks it published.
#[derive(Clone)]
pub struct OutboxRelay {
    table: Arc<dyn OutboxTable>,
    bus: Arc<dyn EventPublisher>,
    clock: SharedClock,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay").finish_non_exhaustive()
    }
}

/// How long the relay waits between polls when nobody wakes it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest pause after a failed publish: events flow again within
/// this of the broker's return (one attempt per process this often is
/// nothing to a broker).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const BATCH: i64 = 100;

impl OutboxRelay {
    /// A relay over the outbox of `db`.
    pub fn new(db: &Db, bus: Arc<dyn EventPublisher>, clock: SharedClock) -> Self {
        let table: Arc<dyn OutboxTable> = match db {
            Db::Postgres(pool) => Arc::new(pool.clone()),
            Db::Sqlite(pool) => Arc::new(pool.clone()),
        };
        Self {
            table,
            bus,
            clock,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Tells the relay that a transaction with events has committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Events written but not yet published.
    pub async fn backlog(&self) -> anyhow::Result<i64> {
        self.table.backlog().await
    }

    /// Publishes every pending event once; returns how many went out. Stops
    /// at the first failure, leaving the rest pending in order.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        let mut sent = 0;
        loop {
            let batch = self.table.pending(BATCH).await?;
            if batch.is_empty() {
                crate::metrics::events().outbox_backlog.set(0);
                return Ok(sent);
            }
            crate::metrics::events()
                .outbox_backlog
                .set(i64::try_from(batch.len()).unwrap_or(i64::MAX));
            for row in batch {
                let event =
                    Event::decode(row.payload.as_slice()).context("an outbox row does not decode as an event")?;
                if let Err(err) = self.bus.publish(&event).await {
                    crate::metrics::events().publish_failures.inc();
                    return Err(err);
                }
                self.table.mark_published(row.id, self.clock.now()).await?;
                crate::metrics::events().published.inc();
                sent += 1;
            }
        }
    }

    /// Runs until `shutdown` resolves, publishing whenever woken or polled,
    /// backing off while the bus or the store fails.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.publish_pending().await {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        error = format!("{err:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay could not publish"
                    );
                    // New commits do not cut a backoff short.
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
