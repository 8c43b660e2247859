//! The ingest part of the SQL body: plans applied in one transaction
//! (addresses, erasures, known devices, notifications under the users'
//! preferences), with their unread counts and deliveries.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};
use uuid::Uuid;

use super::{ACCOUNT_COLUMNS, ROWS_PER_STATEMENT, SqlNotifyStore, message};
use crate::{
    kinds::{self, Draft, Plan},
    store::{Account, Ingested, channel, micros, status},
};

macro_rules! sql_ingest {
    ($db:ty) => {
        impl SqlNotifyStore<$db> {
            /// The accounts of `users` that notify knows.
            pub(super) async fn accounts_of(
                tx: &mut <$db as sqlx::Database>::Connection,
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
                        .fetch_all(&mut *tx)
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
            pub(super) async fn write_drafts(
                tx: &mut <$db as sqlx::Database>::Connection,
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
                        .fetch_all(&mut *tx)
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
                        .execute(&mut *tx)
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
                        .execute(&mut *tx)
                        .await
                        .context("queueing deliveries")?;
                }
                Ok(Ingested {
                    notifications: kept.len(),
                    deliveries: queued.len(),
                })
            }

            pub(super) async fn apply_plans(
                &self,
                plans: &[Plan],
                email: bool,
                now: DateTime<Utc>,
            ) -> anyhow::Result<Ingested> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
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
        }
    };
}

sql_ingest!(Postgres);
sql_ingest!(Sqlite);
