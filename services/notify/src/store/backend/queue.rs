//! The delivery queue's part of the SQL body: due deliveries taken under a
//! lease, attempts recorded (and failing endpoints disabled), the user's
//! list of deliveries.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{ROWS_PER_STATEMENT, SqlNotifyStore};
use crate::{
    kinds,
    store::{Attempted, Claimed, DeliveryRow, FAILING_FOR, channel, instant, micros, status},
};

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

macro_rules! sql_delivery_queue {
    ($db:ty) => {
        impl SqlNotifyStore<$db> {
            pub(super) async fn list_deliveries(
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

            pub(super) async fn take_due(
                &self,
                now: DateTime<Utc>,
                lease_until: DateTime<Utc>,
                limit: i64,
            ) -> anyhow::Result<Vec<Claimed>> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
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

            pub(super) async fn record_attempts(
                &self,
                attempts: &[Attempted],
                now: DateTime<Utc>,
            ) -> anyhow::Result<Vec<Uuid>> {
                let now_us = micros(now);
                let mut tx = self.pool.begin_write().await.context("begin")?;
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

            pub(super) async fn first_due(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
                let next: Option<(Option<i64>,)> = sqlx::query_as(crate::sql::NEXT_DUE)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading the next due delivery")?;
                Ok(next.and_then(|(us,)| us).map(instant))
            }
        }
    };
}

sql_delivery_queue!(Postgres);
sql_delivery_queue!(Sqlite);
