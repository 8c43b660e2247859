//! The stats store: the activity log and the session projection, one trait
//! and one SQL body instantiated for PostgreSQL and SQLite. A projected event
//! is written in one transaction, keyed by the event id, so a redelivery
//! changes nothing; times are microseconds since the Unix epoch.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::{Db, store::Migrations};
use uuid::Uuid;

mod backend;

pub use backend::{PRODUCER, SqlStatsStore};

use crate::projection::Entry;

/// The stats service's migrations.
pub fn migrations() -> Migrations {
    Migrations {
        postgres: sqlx::migrate!("migrations/postgres"),
        sqlite: sqlx::migrate!("migrations/sqlite"),
    }
}

/// Microseconds since the Unix epoch, the stores' unit of time.
pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The instant of `us` microseconds since the epoch.
pub fn instant(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A day, as the number of whole days since the epoch (UTC).
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The UTC day (days since the epoch) of `us`.
pub fn day_of(us: i64) -> i64 {
    us.div_euclid(MICROS_PER_DAY)
}

/// What recording an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// It is in the log now.
    Added,
    /// It was there already: the event was delivered before.
    Duplicate,
    /// Its user's data was erased; nothing is kept of them again.
    Erased,
}

/// A stored activity entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EntryRow {
    /// The event's id.
    pub id: Uuid,
    /// The event's type.
    pub kind: String,
    /// When, in microseconds since the epoch.
    pub occurred_us: i64,
    /// The client's address, or "".
    pub ip: String,
    /// The client's user agent, or "".
    pub user_agent: String,
    /// A JSON object.
    pub details: String,
}

/// Which of a user's entries to read, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityQuery {
    /// Whose.
    pub user_id: Uuid,
    /// Only this kind, if set.
    pub kind: Option<String>,
    /// From this instant (µs), inclusive.
    pub from_us: i64,
    /// Entries strictly before this position, `(occurred_us, id)`: the
    /// range's end with the nil id, or the last entry of the previous page.
    pub before: (i64, Uuid),
    /// At most this many.
    pub limit: i64,
}

/// A user's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFigures {
    /// Successful logins.
    pub logins: i64,
    /// Failed logins.
    pub failed_logins: i64,
    /// The last successful login (µs).
    pub last_login_us: Option<i64>,
    /// Sessions not ended.
    pub active_sessions: i64,
    /// Every entry.
    pub events: i64,
    /// When the account was created (µs), if its creation was seen.
    pub created_us: Option<i64>,
}

/// A user's session figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFigures {
    /// Every session seen.
    pub total: i64,
    /// Those not ended.
    pub active: i64,
    /// Those ended (logout, revocation, reuse...).
    pub ended: i64,
    /// The sum of the ended sessions' durations (µs).
    pub ended_duration_us: i64,
    /// Sessions per user agent, most first (at most ten).
    pub by_user_agent: Vec<(String, i64)>,
}

/// The whole fleet's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFigures {
    /// Accounts whose creation was seen and that were not erased.
    pub users: i64,
    /// Users with a successful login in the last 1, 7 and 30 days.
    pub active: [i64; 3],
    /// Per day (days since the epoch): logins and failed logins.
    pub days: Vec<(i64, i64, i64)>,
}

/// The stats store.
#[async_trait::async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Records entries and the session changes they carry, each once, in one
    /// transaction; with them, one `stats.projected` event per user whose
    /// figures changed goes to the outbox. What became of each, in order.
    async fn record_many(&self, entries: &[Entry], now: DateTime<Utc>) -> anyhow::Result<Vec<Recorded>> {
        self.write_entries(entries, now, true).await
    }
    /// What [`StatsStore::record_many`] does; with `commit` false, it is all
    /// rolled back at the end, and the outcomes say what it would have done.
    async fn write_entries(&self, entries: &[Entry], now: DateTime<Utc>, commit: bool)
    -> anyhow::Result<Vec<Recorded>>;
    /// Records one entry (see [`StatsStore::record_many`]).
    async fn record(&self, entry: &Entry, now: DateTime<Utc>) -> anyhow::Result<Recorded> {
        let mut recorded = self.record_many(std::slice::from_ref(entry), now).await?;
        recorded.pop().context("no outcome for the entry")
    }
    /// Erases everything kept about a user, and keeps their later events out.
    async fn erase_user(&self, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<()>;
    /// A user's figures.
    async fn user_figures(&self, user_id: Uuid) -> anyhow::Result<UserFigures>;
    /// A page of a user's entries.
    async fn activity(&self, query: &ActivityQuery) -> anyhow::Result<Vec<EntryRow>>;
    /// At most `limit` of a user's entries after `after` (`(occurred_us,
    /// id)`), oldest first: the pages of a whole-log export.
    async fn export_page(&self, user_id: Uuid, after: (i64, Uuid), limit: i64) -> anyhow::Result<Vec<EntryRow>>;
    /// A user's entries per day (days since the epoch), over every whole UTC
    /// day that `[from_us, to_us)` touches.
    async fn daily(
        &self,
        user_id: Uuid,
        kind: Option<&str>,
        from_us: i64,
        to_us: i64,
    ) -> anyhow::Result<Vec<(i64, i64)>>;
    /// A user's session figures.
    async fn session_figures(&self, user_id: Uuid) -> anyhow::Result<SessionFigures>;
    /// The fleet's figures: active users as of `now`, days in `[from, to)`.
    async fn fleet_figures(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<FleetFigures>;
    /// Deletes at most `batch` entries (and ended sessions) older than
    /// `before`; the count deleted. Called until it answers less than `batch`.
    async fn prune(&self, before: DateTime<Utc>, batch: i64) -> anyhow::Result<u64>;
}

/// The store on `db`.
pub fn stats_store(db: &Db) -> Arc<dyn StatsStore> {
    match db {
        Db::Postgres(pool) => Arc::new(SqlStatsStore::new(pool.clone())),
        Db::Sqlite(pool) => Arc::new(SqlStatsStore::new(pool.clone())),
    }
}
