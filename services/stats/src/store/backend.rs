//! The stats store's one SQL body, instantiated for PostgreSQL and SQLite
//! on their native sqlx types.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::StorePool;
use fleet_kit::{
    events::{event_type, new_event},
    outbox::enqueue,
    store::Backend,
};
use fleet_proto::events::v1::{LoginFailed, LoginSucceeded, StatsProjected, UserCreated, event::Payload};
use sqlx::{Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{
    ActivityQuery, EntryRow, FleetFigures, MICROS_PER_DAY, Recorded, SessionFigures, StatsStore, UserFigures, day_of,
    micros,
};
use crate::{
    projection::{Entry, SessionChange},
    sql,
};

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlStatsStore<DB: sqlx::Database> {
    pool: StorePool<DB>,
}

impl<DB: sqlx::Database> SqlStatsStore<DB> {
    pub(super) fn new(pool: StorePool<DB>) -> Self {
        Self { pool }
    }
}

/// The component name on events.
pub const PRODUCER: &str = "stats";

/// Rows one statement writes at most: seven parameters each stay far below
/// either backend's limit on bound parameters.
const ROWS_PER_STATEMENT: usize = 1000;

/// The notice that a user's figures changed.
fn projected(user_id: Uuid, now: DateTime<Utc>) -> fleet_proto::events::v1::Event {
    new_event(
        PRODUCER,
        Some(user_id),
        now,
        Payload::StatsProjected(StatsProjected { events: 1 }),
    )
}

fn login_kind() -> &'static str {
    event_type(&Payload::LoginSucceeded(LoginSucceeded::default()))
}

fn failed_login_kind() -> &'static str {
    event_type(&Payload::LoginFailed(LoginFailed::default()))
}

fn created_kind() -> &'static str {
    event_type(&Payload::UserCreated(UserCreated::default()))
}

macro_rules! sql_stats_store {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl StatsStore for SqlStatsStore<$db> {
            async fn write_entries(
                &self,
                entries: &[Entry],
                now: DateTime<Utc>,
                commit: bool,
            ) -> anyhow::Result<Vec<Recorded>> {
                let mut tx = self
                    .pool
                    .begin_write()
                    .await
                    .context("begin")?;
                // Whose entries may be kept: an erased user's never are.
                let mut erased_users: HashMap<Uuid, bool> = HashMap::new();
                for entry in entries {
                    if erased_users.contains_key(&entry.user_id) {
                        continue;
                    }
                    let found: Option<(i64,)> = sqlx::query_as("SELECT erased_us FROM erased_users WHERE user_id = $1")
                        .bind(entry.user_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("reading erasures")?;
                    erased_users.insert(entry.user_id, found.is_some());
                }
                let live: Vec<&Entry> = entries.iter().filter(|e| !erased_users[&e.user_id]).collect();
                // Every entry in a few statements: those that were new come back.
                let mut added: HashSet<(Uuid, Uuid)> = HashSet::new();
                for chunk in live.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO activity (id, user_id, kind, occurred_us, ip, user_agent, details) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id)
                            .push_bind(e.user_id)
                            .push_bind(&e.kind)
                            .push_bind(micros(e.occurred_at))
                            .push_bind(&e.ip)
                            .push_bind(&e.user_agent)
                            .push_bind(e.details.to_string());
                    });
                    insert.push(" ON CONFLICT (user_id, id) DO NOTHING RETURNING user_id, id");
                    let rows: Vec<(Uuid, Uuid)> = insert
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .context("recording entries")?;
                    added.extend(rows);
                }
                // What became of each, in order: the first of a repeated id is
                // the one kept.
                let mut outcomes = Vec::with_capacity(entries.len());
                let mut kept: Vec<&Entry> = Vec::new();
                for entry in entries {
                    if erased_users[&entry.user_id] {
                        outcomes.push(Recorded::Erased);
                    } else if added.remove(&(entry.user_id, entry.id)) {
                        outcomes.push(Recorded::Added);
                        kept.push(entry);
                    } else {
                        outcomes.push(Recorded::Duplicate);
                    }
                }
                // Per-day counts of what was kept, a statement per chunk.
                let mut days: HashMap<(Uuid, i64, &str), i64> = HashMap::new();
                for entry in &kept {
                    *days
                        .entry((entry.user_id, day_of(micros(entry.occurred_at)), entry.kind.as_str()))
                        .or_default() += 1;
                }
                // In one order everywhere: writers of the same days (the
                // batches of one import run side by side) then wait for each
                // other instead of deadlocking.
                let mut days: Vec<_> = days.into_iter().collect();
                days.sort_unstable();
                for chunk in days.chunks(ROWS_PER_STATEMENT) {
                    let mut count = QueryBuilder::<$db>::new("INSERT INTO activity_days (user_id, day, kind, entries) ");
                    count.push_values(chunk, |mut row, ((user_id, day, kind), n)| {
                        row.push_bind(*user_id).push_bind(*day).push_bind(*kind).push_bind(*n);
                    });
                    count.push(
                        " ON CONFLICT (user_id, day, kind) DO UPDATE SET entries = activity_days.entries + excluded.entries",
                    );
                    count.build().execute(&mut *tx).await.context("counting entries")?;
                }
                let mut changed: Vec<Uuid> = Vec::new();
                for entry in kept {
                    let occurred_us = micros(entry.occurred_at);
                    match &entry.session {
                        // Events may arrive out of order: a start seen after the
                        // end keeps the end and moves the start back.
                        Some(SessionChange::Started { id, user_agent }) => {
                            sqlx::query(
                                "INSERT INTO sessions (id, user_id, user_agent, started_us) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (id) DO UPDATE SET started_us = excluded.started_us, \
                                 user_agent = excluded.user_agent WHERE sessions.started_us > excluded.started_us",
                            )
                            .bind(id)
                            .bind(entry.user_id)
                            .bind(user_agent)
                            .bind(occurred_us)
                            .execute(&mut *tx)
                            .await
                            .context("recording a session's start")?;
                        }
                        Some(SessionChange::Ended { id, reason }) => {
                            sqlx::query(
                                "INSERT INTO sessions (id, user_id, user_agent, started_us, ended_us, end_reason) \
                                 VALUES ($1, $2, '', $3, $3, $4) \
                                 ON CONFLICT (id) DO UPDATE SET ended_us = excluded.ended_us, \
                                 end_reason = excluded.end_reason WHERE sessions.ended_us IS NULL",
                            )
                            .bind(id)
                            .bind(entry.user_id)
                            .bind(occurred_us)
                            .bind(reason)
                            .execute(&mut *tx)
                            .await
                            .context("recording a session's end")?;
                        }
                        None => {}
                    }
                    if entry.kind == created_kind() {
                        sqlx::query(
                            "INSERT INTO accounts (user_id, created_us) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
                        )
                        .bind(entry.user_id)
                        .bind(occurred_us)
                        .execute(&mut *tx)
                        .await
                        .context("recording an account")?;
                    }
                    if !changed.contains(&entry.user_id) {
                        changed.push(entry.user_id);
                    }
                }
                for user_id in changed {
                    enqueue(&mut *tx, &projected(user_id, now), now).await?;
                }
                if commit {
                    tx.commit().await.context("commit")?;
                } else {
                    tx.rollback().await.context("rollback")?;
                }
                Ok(outcomes)
            }

            async fn erase_user(&self, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self
                    .pool
                    .begin_write()
                    .await
                    .context("begin")?;
                sqlx::query(
                    "INSERT INTO erased_users (user_id, erased_us) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .context("recording an erasure")?;
                for table in [
                    sql::ERASE,
                    sql::ERASE_DAYS,
                    "DELETE FROM sessions WHERE user_id = $1",
                    "DELETE FROM accounts WHERE user_id = $1",
                ] {
                    sqlx::query(table)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .context("erasing a user's data")?;
                }
                enqueue(&mut *tx, &projected(user_id, now), now).await?;
                tx.commit().await.context("commit")?;
                Ok(())
            }

            async fn user_figures(&self, user_id: Uuid) -> anyhow::Result<UserFigures> {
                // One snapshot: a batch committed between two of these reads
                // would otherwise show a total that its parts do not add up to.
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_SNAPSHOT)
                    .await
                    .context("begin")?;
                let mut counted = Vec::with_capacity(3);
                for (sql, kind) in [
                    (sql::COUNT_OF_KIND, Some(login_kind())),
                    (sql::COUNT_OF_KIND, Some(failed_login_kind())),
                    (sql::COUNT, None),
                ] {
                    let query = sqlx::query_as::<_, (i64,)>(sql).bind(user_id);
                    let query = match kind {
                        Some(kind) => query.bind(kind),
                        None => query,
                    };
                    counted.push(query.fetch_one(&mut *tx).await.context("counting entries")?.0);
                }
                let [logins, failed_logins, events] = counted[..] else {
                    anyhow::bail!("three counts were read");
                };
                let mut instants = Vec::with_capacity(2);
                for (sql, kind) in [(sql::LATEST_OF_KIND, login_kind()), (sql::EARLIEST_OF_KIND, created_kind())] {
                    let found: Option<(i64,)> = sqlx::query_as(sql)
                        .bind(user_id)
                        .bind(kind)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("reading the first or last entry of a kind")?;
                    instants.push(found.map(|(us,)| us));
                }
                let [last_login_us, created_us] = instants[..] else {
                    anyhow::bail!("two instants were read");
                };
                let (active_sessions,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND ended_us IS NULL")
                        .bind(user_id)
                        .fetch_one(&mut *tx)
                        .await
                        .context("counting sessions")?;
                tx.commit().await.context("commit")?;
                Ok(UserFigures {
                    logins,
                    failed_logins,
                    last_login_us,
                    active_sessions,
                    events,
                    created_us,
                })
            }

            async fn activity(&self, q: &ActivityQuery) -> anyhow::Result<Vec<EntryRow>> {
                let sql = if q.kind.is_some() {
                    sql::PAGE_OF_KIND
                } else {
                    sql::PAGE
                };
                let mut query = sqlx::query_as::<_, EntryRow>(sql)
                    .bind(q.user_id)
                    .bind(q.from_us)
                    .bind(q.before.0)
                    .bind(q.before.1)
                    .bind(q.limit);
                if let Some(kind) = &q.kind {
                    query = query.bind(kind);
                }
                query.fetch_all(&self.pool).await.context("reading activity")
            }

            async fn export_page(&self, user_id: Uuid, after: (i64, Uuid), limit: i64) -> anyhow::Result<Vec<EntryRow>> {
                sqlx::query_as::<_, EntryRow>(sql::EXPORT_PAGE)
                    .bind(user_id)
                    .bind(after.0)
                    .bind(after.1)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .context("reading activity for an export")
            }

            async fn daily(
                &self,
                user_id: Uuid,
                kind: Option<&str>,
                from_us: i64,
                to_us: i64,
            ) -> anyhow::Result<Vec<(i64, i64)>> {
                // Every whole UTC day the range touches.
                if from_us >= to_us {
                    return Ok(Vec::new());
                }
                let (first, past) = (day_of(from_us), day_of(to_us - 1) + 1);
                let sql = if kind.is_some() {
                    sql::DAILY_OF_KIND
                } else {
                    sql::DAILY
                };
                let mut query = sqlx::query_as::<_, (i64, i64)>(sql)
                    .bind(user_id)
                    .bind(first)
                    .bind(past);
                if let Some(kind) = kind {
                    query = query.bind(kind);
                }
                query
                    .fetch_all(&self.pool)
                    .await
                    .context("counting activity per day")
            }

            async fn session_figures(&self, user_id: Uuid) -> anyhow::Result<SessionFigures> {
                let (total, active, ended, ended_duration_us): (i64, i64, i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), \
                     CAST(COALESCE(SUM(CASE WHEN ended_us IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
                     CAST(COALESCE(SUM(CASE WHEN ended_us IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT), \
                     CAST(COALESCE(SUM(ended_us - started_us), 0) AS BIGINT) \
                     FROM sessions WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_one(&self.pool)
                .await
                .context("counting sessions")?;
                let by_user_agent: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT user_agent, COUNT(*) AS n FROM sessions WHERE user_id = $1 \
                     GROUP BY user_agent ORDER BY n DESC, user_agent LIMIT 10",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .context("counting sessions per user agent")?;
                Ok(SessionFigures {
                    total,
                    active,
                    ended,
                    ended_duration_us,
                    by_user_agent,
                })
            }

            async fn fleet_figures(
                &self,
                from: DateTime<Utc>,
                to: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> anyhow::Result<FleetFigures> {
                let (users,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM accounts")
                    .fetch_one(&self.pool)
                    .await
                    .context("counting accounts")?;
                let mut active = [0; 3];
                for (slot, days) in active.iter_mut().zip([1, 7, 30]) {
                    let (n,): (i64,) = sqlx::query_as(sql::ACTIVE_USERS)
                        .bind(micros(now) - days * MICROS_PER_DAY)
                        .bind(login_kind())
                        .fetch_one(&self.pool)
                        .await
                        .context("counting active users")?;
                    *slot = n;
                }
                let (first, past) = if from < to {
                    (day_of(micros(from)), day_of(micros(to) - 1) + 1)
                } else {
                    (0, 0)
                };
                let days: Vec<(i64, i64, i64)> = sqlx::query_as(sql::FLEET_DAYS)
                    .bind(first)
                    .bind(past)
                    .bind(login_kind())
                    .bind(failed_login_kind())
                    .fetch_all(&self.pool)
                    .await
                    .context("counting logins per day")?;
                Ok(FleetFigures { users, active, days })
            }

            async fn prune(&self, before: DateTime<Utc>, batch: i64) -> anyhow::Result<u64> {
                let before = micros(before);
                let entries = sqlx::query(sql::PRUNE)
                    .bind(before)
                    .bind(batch)
                    .execute(&self.pool)
                    .await
                    .context("pruning activity")?
                    .rows_affected();
                let sessions = sqlx::query(
                    "DELETE FROM sessions WHERE id IN \
                     (SELECT id FROM sessions WHERE ended_us < $1 LIMIT $2)",
                )
                .bind(before)
                .bind(batch)
                .execute(&self.pool)
                .await
                .context("pruning sessions")?
                .rows_affected();
                // Counts go by whole days, once the entries of those days are gone.
                if entries < batch as u64 {
                    sqlx::query(sql::PRUNE_DAYS)
                        .bind(day_of(before))
                        .execute(&self.pool)
                        .await
                        .context("pruning daily counts")?;
                }
                Ok(entries.max(sessions))
            }
        }
    };
}

sql_stats_store!(Postgres);
sql_stats_store!(Sqlite);
