//! The notify store's one SQL body, instantiated for PostgreSQL and SQLite
//! on their native sqlx types.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::store::Backend;
use serde_json::json;
use sqlx::{Pool, Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{
    Account, Attempted, Claimed, DeliveryRow, FAILING_FOR, Ingested, NewPreferences, NotificationRow, NotifyStore,
    channel, instant, micros, status,
};
use crate::kinds::{self, Draft, Plan};

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlNotifyStore<DB: sqlx::Database> {
    pool: Pool<DB>,
}

impl<DB: sqlx::Database> SqlNotifyStore<DB> {
    pub(super) fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

/// What differs between the backends' statements.
trait Dialect {
    /// Takes due deliveries: `$1` now, `$2` limit, `$3` lease end.
    /// PostgreSQL lets concurrent takers skip each other's rows; SQLite's
    /// write transaction already holds the whole file.
    const CLAIM: &'static str;
}

impl Dialect for Postgres {
    const CLAIM: &'static str = concat!(
        "UPDATE deliveries SET next_attempt_us = $3 WHERE id IN (",
        crate::sql::due!(),
        " FOR UPDATE SKIP LOCKED) RETURNING id, user_id, channel, payload, attempts"
    );
}

impl Dialect for Sqlite {
    const CLAIM: &'static str = concat!(
        "UPDATE deliveries SET next_attempt_us = $3 WHERE id IN (",
        crate::sql::due!(),
        ") RETURNING id, user_id, channel, payload, attempts"
    );
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
        impl SqlNotifyStore<$db> {
            /// The accounts of `users` that notify knows.
            async fn accounts_of(
                tx: &mut sqlx::Transaction<'_, $db>,
                users: &[Uuid],
            ) -> anyhow::Result<HashMap<Uuid, Account>> {
                let mut found = HashMap::new();
                for chunk in users.chunks(ROWS_PER_STATEMENT) {
                    let mut select = QueryBuilder::<$db>::new(format!(
                        "SELECT user_id, {ACCOUNT_COLUMNS} FROM accounts WHERE user_id IN ("
                    ));
                    let mut list = select.separated(", ");
                    for user in chunk {
                        list.push_bind(*user);
                    }
                    select.push(")");
                    let rows: Vec<(
                        Uuid,
                        String,
                        i64,
                        bool,
                        bool,
                        String,
                        String,
                        String,
                        String,
                        i64,
                        Option<i64>,
                        Option<i64>,
                    )> = select
                        .build_query_as()
                        .fetch_all(&mut **tx)
                        .await
                        .context("reading accounts")?;
                    for r in rows {
                        found.insert(
                            r.0,
                            Account {
                                email: r.1,
                                unread: r.2,
                                logged_in: r.3,
                                email_enabled: r.4,
                                muted: r.5,
                                webhook_url: r.6,
                                webhook_secret: r.7,
                                previous_secret: r.8,
                                previous_secret_until_us: r.9,
                                webhook_disabled_us: r.10,
                                erased_us: r.11,
                            },
                        );
                    }
                }
                Ok(found)
            }

            /// Writes drafts, their unread counts and their deliveries.
            async fn write_drafts(
                tx: &mut sqlx::Transaction<'_, $db>,
                drafts: &[&Draft],
                accounts: &HashMap<Uuid, Account>,
                email: bool,
                logged_in: &HashSet<Uuid>,
                now: DateTime<Utc>,
            ) -> anyhow::Result<Ingested> {
                let mut inserted: HashSet<Uuid> = HashSet::new();
                for chunk in drafts.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO notifications (id, user_id, kind, title, body, data, created_us) ",
                    );
                    insert.push_values(chunk, |mut row, d| {
                        row.push_bind(d.id)
                            .push_bind(d.user_id)
                            .push_bind(d.kind.name)
                            .push_bind(&d.title)
                            .push_bind(&d.body)
                            .push_bind(d.data.to_string())
                            .push_bind(micros(d.at));
                    });
                    insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
                    let rows: Vec<(Uuid,)> = insert
                        .build_query_as()
                        .fetch_all(&mut **tx)
                        .await
                        .context("writing notifications")?;
                    inserted.extend(rows.into_iter().map(|(id,)| id));
                }
                // Unread counts and first logins, one row per user in one
                // order, so that concurrent batches wait instead of deadlocking.
                let mut per_user: BTreeMap<Uuid, (i64, bool)> = BTreeMap::new();
                for user in logged_in {
                    per_user.entry(*user).or_default().1 = true;
                }
                // A draft repeated in the batch is kept once.
                let kept: Vec<&&Draft> = drafts.iter().filter(|d| inserted.remove(&d.id)).collect();
                for d in &kept {
                    per_user.entry(d.user_id).or_default().0 += 1;
                }
                let per_user: Vec<(Uuid, (i64, bool))> = per_user.into_iter().collect();
                for chunk in per_user.chunks(ROWS_PER_STATEMENT) {
                    let mut upsert = QueryBuilder::<$db>::new("INSERT INTO accounts (user_id, unread, logged_in) ");
                    upsert.push_values(chunk, |mut row, (user, (unread, logged))| {
                        row.push_bind(*user).push_bind(*unread).push_bind(*logged);
                    });
                    upsert.push(
                        " ON CONFLICT (user_id) DO UPDATE SET unread = accounts.unread + excluded.unread, \
                         logged_in = (accounts.logged_in OR excluded.logged_in)",
                    );
                    upsert
                        .build()
                        .execute(&mut **tx)
                        .await
                        .context("counting unread notifications")?;
                }
                let mut queued: Vec<(Uuid, Uuid, Uuid, &'static str, String)> = Vec::new();
                for d in &kept {
                    let Some(account) = accounts.get(&d.user_id) else {
                        continue;
                    };
                    if account.webhook_active() && d.kind != kinds::WEBHOOK_DISABLED {
                        queued.push((Uuid::now_v7(), d.user_id, d.id, channel::WEBHOOK, message(d)));
                    }
                    if email && account.email_enabled && !account.email.is_empty() {
                        queued.push((Uuid::now_v7(), d.user_id, d.id, channel::EMAIL, message(d)));
                    }
                }
                let now_us = micros(now);
                for chunk in queued.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO deliveries (id, user_id, notification_id, channel, payload, status, created_us, \
                         next_attempt_us) ",
                    );
                    insert.push_values(chunk, |mut row, (id, user, notification, channel, payload)| {
                        row.push_bind(*id)
                            .push_bind(*user)
                            .push_bind(*notification)
                            .push_bind(*channel)
                            .push_bind(payload)
                            .push_bind(status::PENDING)
                            .push_bind(now_us)
                            .push_bind(now_us);
                    });
                    insert
                        .build()
                        .execute(&mut **tx)
                        .await
                        .context("queueing deliveries")?;
                }
                Ok(Ingested {
                    notifications: kept.len(),
                    deliveries: queued.len(),
                })
            }
        }

        #[async_trait::async_trait]
        impl NotifyStore for SqlNotifyStore<$db> {
            async fn ingest(&self, plans: &[Plan], email: bool, now: DateTime<Utc>) -> anyhow::Result<Ingested> {
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_WRITE)
                    .await
                    .context("begin")?;
                let mut users: Vec<Uuid> = plans
                    .iter()
                    .filter_map(|plan| match plan {
                        Plan::Notify(d) | Plan::Login { draft: d, .. } => Some(d.user_id),
                        Plan::Address { user_id, .. } | Plan::Erase { user_id } => Some(*user_id),
                        Plan::Ignore => None,
                    })
                    .collect();
                users.sort_unstable();
                users.dedup();
                let mut accounts = Self::accounts_of(&mut tx, &users).await?;
                let mut drafts: Vec<&Draft> = Vec::new();
                let mut logged_in: HashSet<Uuid> = HashSet::new();
                for plan in plans {
                    match plan {
                        Plan::Ignore => {}
                        Plan::Address { user_id, email } => {
                            if accounts.get(user_id).is_some_and(|a| a.erased_us.is_some()) {
                                continue;
                            }
                            sqlx::query(
                                "INSERT INTO accounts (user_id, email) VALUES ($1, $2) \
                                 ON CONFLICT (user_id) DO UPDATE SET email = excluded.email",
                            )
                            .bind(user_id)
                            .bind(email)
                            .execute(&mut *tx)
                            .await
                            .context("recording an address")?;
                            accounts.entry(*user_id).or_default().email = email.clone();
                        }
                        Plan::Erase { user_id } => {
                            // What this batch was to write of them goes too.
                            drafts.retain(|d| d.user_id != *user_id);
                            logged_in.remove(user_id);
                            for table in ["notifications", "devices", "deliveries"] {
                                sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                                    .bind(user_id)
                                    .execute(&mut *tx)
                                    .await
                                    .context("erasing an account")?;
                            }
                            sqlx::query("DELETE FROM accounts WHERE user_id = $1")
                                .bind(user_id)
                                .execute(&mut *tx)
                                .await
                                .context("erasing an account")?;
                            sqlx::query("INSERT INTO accounts (user_id, erased_us) VALUES ($1, $2)")
                                .bind(user_id)
                                .bind(micros(now))
                                .execute(&mut *tx)
                                .await
                                .context("erasing an account")?;
                            accounts.insert(
                                *user_id,
                                Account {
                                    erased_us: Some(micros(now)),
                                    ..Account::default()
                                },
                            );
                        }
                        Plan::Notify(draft) | Plan::Login { draft, .. } => {
                            let account = accounts.entry(draft.user_id).or_default();
                            if account.erased_us.is_some() {
                                continue;
                            }
                            if let Plan::Login { device, .. } = plan {
                                let new: Option<(i64,)> = sqlx::query_as(
                                    "INSERT INTO devices (user_id, family, network, first_seen_us) \
                                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING first_seen_us",
                                )
                                .bind(draft.user_id)
                                .bind(&device.family)
                                .bind(&device.network)
                                .bind(micros(draft.at))
                                .fetch_optional(&mut *tx)
                                .await
                                .context("recording a device")?;
                                let first_login = !account.logged_in;
                                account.logged_in = true;
                                logged_in.insert(draft.user_id);
                                // The first login of an account is no news.
                                if new.is_none() || first_login {
                                    continue;
                                }
                            }
                            if !draft.kind.security && account.muted().iter().any(|m| m == draft.kind.name) {
                                continue;
                            }
                            drafts.push(draft);
                        }
                    }
                }
                let ingested = Self::write_drafts(&mut tx, &drafts, &accounts, email, &logged_in, now).await?;
                tx.commit().await.context("commit")?;
                Ok(ingested)
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
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_WRITE)
                    .await
                    .context("begin")?;
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
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_WRITE)
                    .await
                    .context("begin")?;
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

            async fn set_preferences(
                &self,
                user_id: Uuid,
                new: &NewPreferences,
                now: DateTime<Utc>,
            ) -> anyhow::Result<(Account, bool)> {
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_WRITE)
                    .await
                    .context("begin")?;
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
                let _ = now;
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
                sqlx::query_as(crate::sql::DELIVERIES)
                    .bind(user_id)
                    .bind(before.0)
                    .bind(before.1)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .context("reading deliveries")
            }

            async fn claim_due(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> anyhow::Result<Vec<Claimed>> {
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_WRITE)
                    .await
                    .context("begin")?;
                let rows: Vec<(Uuid, Uuid, String, String, i32)> = sqlx::query_as(<$db as Dialect>::CLAIM)
                    .bind(micros(now))
                    .bind(limit)
                    .bind(micros(lease_until))
                    .fetch_all(&mut *tx)
                    .await
                    .context("taking due deliveries")?;
                let mut users: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
                users.sort_unstable();
                users.dedup();
                let accounts = Self::accounts_of(&mut tx, &users).await?;
                tx.commit().await.context("commit")?;
                Ok(rows
                    .into_iter()
                    .map(|(id, user_id, channel, payload, attempts)| Claimed {
                        id,
                        user_id,
                        channel,
                        payload,
                        attempts,
                        account: accounts.get(&user_id).cloned().unwrap_or_default(),
                    })
                    .collect())
            }

            async fn finish(&self, attempts: &[Attempted], now: DateTime<Utc>) -> anyhow::Result<Vec<Uuid>> {
                let now_us = micros(now);
                let mut tx = self
                    .pool
                    .begin_with(<$db as Backend>::BEGIN_WRITE)
                    .await
                    .context("begin")?;
                let mut disable: BTreeMap<Uuid, String> = BTreeMap::new();
                let mut healthy: HashSet<Uuid> = HashSet::new();
                for a in attempts {
                    sqlx::query(
                        "UPDATE deliveries SET status = $2, attempts = attempts + $3, response_code = $4, \
                         latency_ms = $5, error = $6, next_attempt_us = $7, \
                         last_attempt_us = CASE WHEN $3 > 0 THEN $8 ELSE last_attempt_us END WHERE id = $1",
                    )
                    .bind(a.id)
                    .bind(a.status)
                    .bind(i32::from(a.attempted))
                    .bind(a.response_code)
                    .bind(a.latency_ms)
                    .bind(&a.error)
                    .bind(a.next_attempt_us)
                    .bind(now_us)
                    .execute(&mut *tx)
                    .await
                    .context("recording an attempt")?;
                    if a.channel != channel::WEBHOOK || !a.attempted {
                        continue;
                    }
                    if let Some(why) = &a.disable_webhook {
                        disable.insert(a.user_id, why.clone());
                    } else if a.status == status::DELIVERED {
                        healthy.insert(a.user_id);
                    } else {
                        let since: Option<(Option<i64>,)> = sqlx::query_as(
                            "UPDATE accounts SET webhook_failing_since_us = COALESCE(webhook_failing_since_us, $2) \
                             WHERE user_id = $1 RETURNING webhook_failing_since_us",
                        )
                        .bind(a.user_id)
                        .bind(now_us)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("recording a failing endpoint")?;
                        if let Some((Some(since),)) = since
                            && now - instant(since) >= FAILING_FOR
                        {
                            disable
                                .entry(a.user_id)
                                .or_insert_with(|| "it failed every delivery for 5 days".to_string());
                        }
                    }
                }
                // Endpoints that answered end their streak of failures, in one
                // statement that writes only the rows with a streak.
                let mut healthy: Vec<Uuid> = healthy.into_iter().filter(|u| !disable.contains_key(u)).collect();
                healthy.sort_unstable();
                for chunk in healthy.chunks(ROWS_PER_STATEMENT) {
                    let mut reset = QueryBuilder::<$db>::new(
                        "UPDATE accounts SET webhook_failing_since_us = NULL \
                         WHERE webhook_failing_since_us IS NOT NULL AND user_id IN (",
                    );
                    let mut list = reset.separated(", ");
                    for user in chunk {
                        list.push_bind(*user);
                    }
                    reset.push(")");
                    reset
                        .build()
                        .execute(&mut *tx)
                        .await
                        .context("recording healthy endpoints")?;
                }
                let mut stopped = Vec::new();
                for (user, why) in disable {
                    let url: Option<(String,)> = sqlx::query_as(
                        "UPDATE accounts SET webhook_disabled_us = $2 WHERE user_id = $1 \
                         AND webhook_disabled_us IS NULL AND webhook_url <> '' RETURNING webhook_url",
                    )
                    .bind(user)
                    .bind(now_us)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("disabling a webhook")?;
                    let Some((url,)) = url else { continue };
                    sqlx::query(
                        "UPDATE deliveries SET status = $2, next_attempt_us = NULL \
                         WHERE user_id = $1 AND channel = $3 AND status = $4",
                    )
                    .bind(user)
                    .bind(status::DISABLED)
                    .bind(channel::WEBHOOK)
                    .bind(status::PENDING)
                    .execute(&mut *tx)
                    .await
                    .context("closing a disabled webhook's deliveries")?;
                    let notice = kinds::webhook_disabled(user, &url, &why, now);
                    let accounts = Self::accounts_of(&mut tx, &[user]).await?;
                    Self::write_drafts(&mut tx, &[&notice], &accounts, false, &HashSet::new(), now).await?;
                    stopped.push(user);
                }
                tx.commit().await.context("commit")?;
                Ok(stopped)
            }

            async fn next_due(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
                let next: Option<(Option<i64>,)> = sqlx::query_as(crate::sql::NEXT_DUE)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading the next due delivery")?;
                Ok(next.and_then(|(us,)| us).map(instant))
            }
        }
    };
}

sql_notify_store!(Postgres);
sql_notify_store!(Sqlite);
