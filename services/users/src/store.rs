//! The users store: one trait, one SQL implementation instantiated for
//! PostgreSQL and SQLite. Every change writes its event to the outbox in the
//! same transaction.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::StorePool;
use fleet_kit::{Db, events::new_event, outbox::enqueue, store::Migrations};
use fleet_proto::events::v1::{UserCreated, UserDeleted, UserUpdated, event::Payload};
use sqlx::{Postgres, Sqlite};
use uuid::Uuid;

use crate::domain::{DisplayName, Email, Role, Status};

/// The component name on events.
pub const PRODUCER: &str = "users";

/// The users service's migrations.
pub fn migrations() -> Migrations {
    Migrations {
        postgres: sqlx::migrate!("migrations/postgres"),
        sqlite: sqlx::migrate!("migrations/sqlite"),
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRecord {
    /// Id (UUIDv7: ordered by creation).
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// "user" or "admin".
    pub role: String,
    /// "active" or "disabled".
    pub status: String,
    /// Bumped on every change.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Email.
    pub email: Email,
    /// Display name.
    pub display_name: DisplayName,
    /// Role.
    pub role: Role,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New email.
    pub email: Option<Email>,
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New role.
    pub role: Option<Role>,
    /// New status.
    pub status: Option<Status>,
    /// Apply only at this version.
    pub expected_version: Option<i64>,
}

impl UserPatch {
    fn changed(&self) -> Vec<String> {
        [
            ("email", self.email.is_some()),
            ("display_name", self.display_name.is_some()),
            ("role", self.role.is_some()),
            ("status", self.status.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name.to_string())
        .collect()
    }
}

/// One page of a listing query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only ids after this one.
    pub after: Option<Uuid>,
    /// Case-insensitive substring of the display name.
    pub q: Option<String>,
    /// Also match `q` against emails (admins only).
    pub q_matches_email: bool,
    /// How many rows.
    pub limit: u32,
}

/// Store failures the API distinguishes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// Another user has that email.
    #[error("email already registered")]
    EmailTaken,
    /// The user is at another version than expected.
    #[error("user is at version {current}")]
    VersionConflict {
        /// The version it is at.
        current: i64,
    },
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The users port.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user; emits `user.created`.
    async fn create(&self, new: NewUser, at: DateTime<Utc>) -> Result<UserRecord, StoreError>;
    /// A user by id.
    async fn get(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError>;
    /// A user by normalised email.
    async fn get_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError>;
    /// Users in id order after the cursor, filtered by `q`.
    async fn list(&self, query: &ListQuery) -> Result<Vec<UserRecord>, StoreError>;
    /// Applies a patch; emits `user.updated`.
    async fn update(&self, id: Uuid, patch: UserPatch, at: DateTime<Utc>) -> Result<UserRecord, StoreError>;
    /// Deletes a user; emits `user.deleted`.
    async fn delete(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// The store over a connected database.
pub fn user_store(db: &Db) -> Arc<dyn UserStore> {
    match db {
        Db::Postgres(pool) => Arc::new(SqlUserStore { pool: pool.clone() }),
        Db::Sqlite(pool) => Arc::new(SqlUserStore { pool: pool.clone() }),
    }
}

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlUserStore<DB: sqlx::Database> {
    pool: StorePool<DB>,
}

const COLUMNS: &str = "id, email, display_name, role, status, version, created_at, updated_at";

fn unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// Escapes LIKE wildcards so `q` matches literally.
fn like_pattern(q: &str) -> String {
    let mut escaped = String::with_capacity(q.len() + 2);
    escaped.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

macro_rules! sql_user_store {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl UserStore for SqlUserStore<$db> {
            async fn create(&self, new: NewUser, at: DateTime<Utc>) -> Result<UserRecord, StoreError> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let user: UserRecord = sqlx::query_as(&format!(
                    "INSERT INTO users ({COLUMNS}) VALUES ($1, $2, $3, $4, 'active', 1, $5, $5) RETURNING {COLUMNS}"
                ))
                .bind(Uuid::now_v7())
                .bind(new.email.as_str())
                .bind(new.display_name.as_str())
                .bind(new.role.as_str())
                .bind(at)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    if unique_violation(&e) {
                        StoreError::EmailTaken
                    } else {
                        StoreError::Unexpected(anyhow::Error::new(e).context("inserting a user"))
                    }
                })?;
                let event = new_event(
                    PRODUCER,
                    Some(user.id),
                    at,
                    Payload::UserCreated(UserCreated {
                        email: user.email.clone(),
                        display_name: user.display_name.clone(),
                        role: user.role.clone(),
                    }),
                );
                enqueue(&mut *tx, &event, at).await?;
                tx.commit().await.context("commit")?;
                Ok(user)
            }

            async fn get(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
                Ok(
                    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .context("reading a user")?,
                )
            }

            async fn get_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
                Ok(
                    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
                        .bind(email.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .context("reading a user by email")?,
                )
            }

            async fn list(&self, query: &ListQuery) -> Result<Vec<UserRecord>, StoreError> {
                let pattern = query.q.as_deref().map(like_pattern);
                Ok(sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM users \
                     WHERE ($1 IS NULL OR id > $1) \
                       AND ($2 IS NULL OR lower(display_name) LIKE $2 ESCAPE '\\' \
                            OR ($3 AND email LIKE $2 ESCAPE '\\')) \
                     ORDER BY id LIMIT $4"
                ))
                .bind(query.after)
                .bind(pattern)
                .bind(query.q_matches_email)
                .bind(i64::from(query.limit))
                .fetch_all(&self.pool)
                .await
                .context("listing users")?)
            }

            async fn update(&self, id: Uuid, patch: UserPatch, at: DateTime<Utc>) -> Result<UserRecord, StoreError> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let updated: Option<UserRecord> = sqlx::query_as(&format!(
                    "UPDATE users SET \
                        email = COALESCE($2, email), \
                        display_name = COALESCE($3, display_name), \
                        role = COALESCE($4, role), \
                        status = COALESCE($5, status), \
                        version = version + 1, \
                        updated_at = $6 \
                     WHERE id = $1 AND ($7 IS NULL OR version = $7) \
                     RETURNING {COLUMNS}"
                ))
                .bind(id)
                .bind(patch.email.as_ref().map(Email::as_str))
                .bind(patch.display_name.as_ref().map(DisplayName::as_str))
                .bind(patch.role.map(Role::as_str))
                .bind(patch.status.map(Status::as_str))
                .bind(at)
                .bind(patch.expected_version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| {
                    if unique_violation(&e) {
                        StoreError::EmailTaken
                    } else {
                        StoreError::Unexpected(anyhow::Error::new(e).context("updating a user"))
                    }
                })?;
                let Some(user) = updated else {
                    let current: Option<(i64,)> = sqlx::query_as("SELECT version FROM users WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .context("reading a user's version")?;
                    return Err(match current {
                        Some((current,)) => StoreError::VersionConflict { current },
                        None => StoreError::NotFound,
                    });
                };
                let event = new_event(
                    PRODUCER,
                    Some(user.id),
                    at,
                    Payload::UserUpdated({
                        let changed = patch.changed();
                        let email = if changed.iter().any(|c| c == "email") {
                            user.email.clone()
                        } else {
                            String::new()
                        };
                        UserUpdated {
                            changed,
                            version: u64::try_from(user.version).unwrap_or_default(),
                            email,
                        }
                    }),
                );
                enqueue(&mut *tx, &event, at).await?;
                tx.commit().await.context("commit")?;
                Ok(user)
            }

            async fn delete(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("deleting a user")?
                    .rows_affected();
                if deleted == 0 {
                    return Err(StoreError::NotFound);
                }
                let event = new_event(PRODUCER, Some(id), at, Payload::UserDeleted(UserDeleted {}));
                enqueue(&mut *tx, &event, at).await?;
                tx.commit().await.context("commit")?;
                Ok(())
            }
        }
    };
}

sql_user_store!(Postgres);
sql_user_store!(Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(like_pattern("A%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
