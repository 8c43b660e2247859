//! The notify store's one SQL body, instantiated for PostgreSQL and SQLite
//! on their native sqlx types.

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::StorePool;
use fleet_kit::store::Backend;
use serde_json::json;
use sqlx::{Postgres, Sqlite};
use uuid::Uuid;

use super::{
    Account, Attempted, Claimed, DeliveryRow, Ingested, NewPreferences, NotificationRow, NotifyStore, channel, micros,
    status,
};
use crate::kinds::{Draft, Plan};

mod ingest;
mod queue;

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlNotifyStore<DB: sqlx::Database> {
    pool: StorePool<DB>,
}

impl<DB: sqlx::Database> SqlNotifyStore<DB> {
    pub(super) fn new(pool: StorePool<DB>) -> Self {
        Self { pool }
    }
}

/// Columns of an account.
const ACCOUNT_COLUMNS: &str = "email, unread, logged_in, email_enabled, muted, webhook_url, webhook_secret, \
     previous_secret, previous_secret_until_us, webhook_disabled_us, erased_us";

/// Rows one statement writes at most.
const ROWS_PER_STATEMENT: usize = 500;

/// The webhook body of a notification (Standard Webhooks: `type`,
/// `timestamp`, `data`); email is written from it too.
pub fn message(draft: &Draft) -> String {
    json!({
        "type": format!("notification.{}", draft.kind.name),
        "timestamp": draft.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": {
            "id": draft.id,
            "user_id": draft.user_id,
            "kind": draft.kind.name,
            "title": draft.title,
            "body": draft.body,
            "details": draft.data,
        },
    })
    .to_string()
}

macro_rules! sql_notify_store {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl NotifyStore for SqlNotifyStore<$db> {
            async fn ingest(&self, plans: &[Plan], email: bool, now: DateTime<Utc>) -> anyhow::Result<Ingested> {
                self.apply_plans(plans, email, now).await
            }

            async fn feed(
                &self,
                user_id: Uuid,
                unread_only: bool,
                before: (i64, Uuid),
                limit: i64,
            ) -> anyhow::Result<(Vec<NotificationRow>, i64)> {
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_SNAPSHOT)
                    .await
                    .context("begin")?;
                let statement = if unread_only {
                    crate::sql::FEED_UNREAD
                } else {
                    crate::sql::FEED
                };
                let rows: Vec<NotificationRow> = sqlx::query_as(statement)
                    .bind(user_id)
                    .bind(before.0)
                    .bind(before.1)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await
                    .context("reading notifications")?;
                let unread: Option<(i64,)> = sqlx::query_as(crate::sql::UNREAD)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("reading the unread count")?;
                tx.commit().await.context("commit")?;
                Ok((rows, unread.map_or(0, |(n,)| n)))
            }

            async fn mark_read(&self, user_id: Uuid, id: Uuid, now: DateTime<Utc>) -> anyhow::Result<bool> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let marked = sqlx::query(
                    "UPDATE notifications SET read_us = $3 WHERE id = $1 AND user_id = $2 AND read_us IS NULL",
                )
                .bind(id)
                .bind(user_id)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .context("marking a notification read")?
                .rows_affected();
                let found = if marked > 0 {
                    sqlx::query("UPDATE accounts SET unread = unread - 1 WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .context("counting unread notifications")?;
                    true
                } else {
                    sqlx::query_as::<_, (i64,)>("SELECT created_us FROM notifications WHERE id = $1 AND user_id = $2")
                        .bind(id)
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("reading a notification")?
                        .is_some()
                };
                tx.commit().await.context("commit")?;
                Ok(found)
            }

            async fn mark_all_read(&self, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<u64> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let marked =
                    sqlx::query("UPDATE notifications SET read_us = $2 WHERE user_id = $1 AND read_us IS NULL")
                        .bind(user_id)
                        .bind(micros(now))
                        .execute(&mut *tx)
                        .await
                        .context("marking notifications read")?
                        .rows_affected();
                // Less what was marked, not zero: a notification written
                // meanwhile stays counted.
                sqlx::query("UPDATE accounts SET unread = unread - $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(i64::try_from(marked).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .context("counting unread notifications")?;
                tx.commit().await.context("commit")?;
                Ok(marked)
            }

            async fn account(&self, user_id: Uuid) -> anyhow::Result<Account> {
                let mut tx = self.pool.begin().await.context("begin")?;
                let mut found = Self::accounts_of(&mut tx, &[user_id]).await?;
                tx.commit().await.context("commit")?;
                Ok(found.remove(&user_id).unwrap_or_default())
            }

            async fn set_preferences(&self, user_id: Uuid, new: &NewPreferences) -> anyhow::Result<(Account, bool)> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                sqlx::query("INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .context("creating an account")?;
                let before = Self::accounts_of(&mut tx, &[user_id])
                    .await?
                    .remove(&user_id)
                    .unwrap_or_default();
                let url_changed = new.webhook_url != before.webhook_url;
                let secret_set = url_changed && !new.webhook_url.is_empty();
                let secret = if new.webhook_url.is_empty() {
                    ""
                } else if secret_set {
                    new.new_secret.as_str()
                } else {
                    before.webhook_secret.as_str()
                };
                let muted = serde_json::to_string(&new.muted).context("encoding preferences")?;
                sqlx::query(
                    "UPDATE accounts SET email_enabled = $2, muted = $3, webhook_url = $4, webhook_secret = $5, \
                     previous_secret = CASE WHEN $6 THEN '' ELSE previous_secret END, \
                     previous_secret_until_us = CASE WHEN $6 THEN 0 ELSE previous_secret_until_us END, \
                     webhook_failing_since_us = NULL, webhook_disabled_us = NULL WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(new.email_enabled)
                .bind(&muted)
                .bind(&new.webhook_url)
                .bind(secret)
                .bind(url_changed)
                .execute(&mut *tx)
                .await
                .context("writing preferences")?;
                if url_changed {
                    // What was queued for the old endpoint is not sent to the new one.
                    sqlx::query(
                        "UPDATE deliveries SET status = $2, next_attempt_us = NULL \
                         WHERE user_id = $1 AND channel = $3 AND next_attempt_us IS NOT NULL",
                    )
                    .bind(user_id)
                    .bind(status::DISABLED)
                    .bind(channel::WEBHOOK)
                    .execute(&mut *tx)
                    .await
                    .context("closing the old endpoint's deliveries")?;
                }
                let after = Self::accounts_of(&mut tx, &[user_id])
                    .await?
                    .remove(&user_id)
                    .unwrap_or_default();
                tx.commit().await.context("commit")?;
                Ok((after, secret_set))
            }

            async fn rotate_secret(
                &self,
                user_id: Uuid,
                secret: &str,
                previous_until: DateTime<Utc>,
            ) -> anyhow::Result<bool> {
                let rotated = sqlx::query(
                    "UPDATE accounts SET previous_secret = webhook_secret, previous_secret_until_us = $3, \
                     webhook_secret = $2 WHERE user_id = $1 AND webhook_url <> ''",
                )
                .bind(user_id)
                .bind(secret)
                .bind(micros(previous_until))
                .execute(&self.pool)
                .await
                .context("rotating a webhook secret")?
                .rows_affected();
                Ok(rotated > 0)
            }

            async fn deliveries(
                &self,
                user_id: Uuid,
                before: (i64, Uuid),
                limit: i64,
            ) -> anyhow::Result<Vec<DeliveryRow>> {
                self.list_deliveries(user_id, before, limit).await
            }

            async fn claim_due(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> anyhow::Result<Vec<Claimed>> {
                self.take_due(now, lease_until, limit).await
            }

            async fn finish(&self, attempts: &[Attempted], now: DateTime<Utc>) -> anyhow::Result<Vec<Uuid>> {
                self.record_attempts(attempts, now).await
            }

            async fn next_due(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
                self.first_due().await
            }
        }
    };
}

sql_notify_store!(Postgres);
sql_notify_store!(Sqlite);
