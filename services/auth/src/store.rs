//! The auth store: credentials and lockout state, sessions, refresh-token
//! families and signing keys. One SQL implementation, instantiated for
//! PostgreSQL and SQLite; every state change writes its events to the outbox
//! in the same transaction.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::{
    Db,
    events::new_event,
    outbox::{OutboxConnection, enqueue},
    store::{Backend, Migrations},
    time::to_timestamp,
};
use fleet_proto::events::v1::{Event, PasswordChanged, SessionRevoked, event::Payload};
use sqlx::{Pool, Postgres, Sqlite};
use uuid::Uuid;

/// The component name on events.
pub const PRODUCER: &str = "auth";

/// The auth service's migrations.
pub fn migrations() -> Migrations {
    Migrations {
        postgres: sqlx::migrate!("migrations/postgres"),
        sqlite: sqlx::migrate!("migrations/sqlite"),
    }
}

/// A user's credentials and lockout state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRecord {
    /// The user.
    pub user_id: Uuid,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Consecutive failed attempts (including ones in flight).
    pub failed_count: i64,
    /// No attempts before this.
    pub locked_until: Option<DateTime<Utc>>,
}

/// A login session; its refresh tokens form one family.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    /// Session id (`sid` in access tokens).
    pub id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last refreshed.
    pub last_used_at: DateTime<Utc>,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// Revoked, if so.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Client address at login.
    pub ip: String,
    /// Client user agent at login.
    pub user_agent: String,
    /// Space-separated authentication methods.
    pub amr: String,
}

impl SessionRecord {
    /// Usable at `now`?
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// The authentication methods as a list.
    pub fn amr_list(&self) -> Vec<String> {
        self.amr.split_whitespace().map(str::to_string).collect()
    }
}

/// A persisted signing key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRecord {
    /// Key id.
    pub kid: String,
    /// PKCS#8 DER of the Ed25519 private key.
    pub private_key: Vec<u8>,
    /// The 32-byte public key.
    pub public_key: Vec<u8>,
    /// Created and published.
    pub created_at: DateTime<Utc>,
    /// Signs from then on, until a newer key becomes active.
    pub active_from: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// The token was fresh: it is spent now and its successor stored.
    Rotated(SessionRecord),
    /// The token was already spent: its whole family (session) is revoked.
    Reused {
        /// The revoked session.
        session_id: Uuid,
    },
    /// Unknown token, or its session has ended.
    Invalid,
}

/// Which of a user's sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum Revoke {
    /// This one.
    One(Uuid),
    /// All but this one (or all).
    AllExcept(Option<Uuid>),
}

/// Why sessions end, as events tell it.
#[derive(Debug, Clone, Copy)]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// The user revoked it from the session list.
    Revoked,
    /// A spent refresh token was presented again.
    RefreshReuse,
    /// The password changed.
    PasswordChanged,
    /// The account was deleted.
    UserDeleted,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Revoked => "revoked",
            RevokeReason::RefreshReuse => "refresh_reuse",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::UserDeleted => "user_deleted",
        }
    }
}

/// A new session with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Session id.
    pub id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// Client address.
    pub ip: String,
    /// Client user agent.
    pub user_agent: String,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// SHA-256 of the first refresh token.
    pub refresh_hash: Vec<u8>,
}

/// When the sessions revoked at `at` stop mattering to verifiers: once their
/// last access token has expired.
#[derive(Debug, Clone, Copy)]
pub struct Revocation {
    /// Why.
    pub reason: RevokeReason,
    /// When.
    pub at: DateTime<Utc>,
    /// Until when access tokens of the session could verify.
    pub tokens_expire_at: DateTime<Utc>,
}

/// The auth port.
#[async_trait::async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Stores a new user's credentials.
    async fn insert_credentials(&self, user_id: Uuid, password_hash: &str, at: DateTime<Utc>) -> anyhow::Result<()>;
    /// A user's credentials.
    async fn credentials(&self, user_id: Uuid) -> anyhow::Result<Option<CredentialRecord>>;
    /// Compare-and-set of the failure counter: counts an attempt only if the
    /// counter is still at `expected`. False when another attempt got there first.
    async fn count_attempt(
        &self,
        user_id: Uuid,
        expected: i64,
        failures: i64,
        locked_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool>;
    /// Clears the failure counter and lock.
    async fn clear_failures(&self, user_id: Uuid, at: DateTime<Utc>) -> anyhow::Result<bool>;
    /// Writes events on their own.
    async fn emit(&self, events: &[Event], at: DateTime<Utc>) -> anyhow::Result<()>;
    /// A successful login: clears failures, creates the session and its first
    /// refresh token, and writes `events`.
    async fn start_session(&self, session: &NewSession, events: &[Event], at: DateTime<Utc>) -> anyhow::Result<()>;
    /// Spends a refresh token and stores its successor, or detects reuse.
    async fn rotate_refresh(
        &self,
        presented: &[u8],
        successor: &[u8],
        at: DateTime<Utc>,
        tokens_expire_at: DateTime<Utc>,
    ) -> anyhow::Result<Rotation>;
    /// A session by id.
    async fn session(&self, id: Uuid) -> anyhow::Result<Option<SessionRecord>>;
    /// A user's active sessions, newest first.
    async fn active_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<Vec<SessionRecord>>;
    /// Revokes sessions of a user; returns the ids it revoked.
    async fn revoke(&self, user_id: Uuid, which: Revoke, how: Revocation) -> anyhow::Result<Vec<Uuid>>;
    /// Replaces the password hash and revokes every session but `keep`.
    async fn change_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep: Uuid,
        how: Revocation,
    ) -> anyhow::Result<Vec<Uuid>>;
    /// Removes a deleted user's credentials and ends their sessions.
    async fn forget_user(&self, user_id: Uuid, how: Revocation) -> anyhow::Result<Vec<Uuid>>;
    /// Every signing key.
    async fn signing_keys(&self) -> anyhow::Result<Vec<SigningKeyRecord>>;
    /// Adds a signing key.
    async fn add_signing_key(&self, key: &SigningKeyRecord) -> anyhow::Result<()>;
}

/// The store over a connected database.
pub fn auth_store(db: &Db) -> Arc<dyn AuthStore> {
    match db {
        Db::Postgres(pool) => Arc::new(SqlAuthStore { pool: pool.clone() }),
        Db::Sqlite(pool) => Arc::new(SqlAuthStore { pool: pool.clone() }),
    }
}

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlAuthStore<DB: sqlx::Database> {
    pool: Pool<DB>,
}

/// Ends a failure streak: `$1` user id, `$2` time.
const CLEAR_FAILURES: &str =
    "UPDATE credentials SET failed_count = 0, locked_until = NULL, updated_at = $2 WHERE user_id = $1";

const SESSION_COLUMNS: &str = "id, user_id, created_at, last_used_at, expires_at, revoked_at, ip, user_agent, amr";

fn revoked_event(user_id: Uuid, session_id: Uuid, how: &Revocation) -> Event {
    new_event(
        PRODUCER,
        Some(user_id),
        how.at,
        Payload::SessionRevoked(SessionRevoked {
            session_id: session_id.to_string(),
            reason: how.reason.as_str().into(),
            tokens_expire_at: Some(to_timestamp(how.tokens_expire_at)),
        }),
    )
}

macro_rules! sql_auth_store {
    ($db:ty, $conn:ty) => {
        impl SqlAuthStore<$db> {
            /// Revokes inside a transaction and writes one event per session.
            async fn revoke_in(conn: &mut $conn, user_id: Uuid, which: Revoke, how: &Revocation) -> anyhow::Result<Vec<Uuid>> {
                let (only, except) = match which {
                    Revoke::One(id) => (Some(id), None),
                    Revoke::AllExcept(keep) => (None, keep),
                };
                let ids: Vec<(Uuid,)> = sqlx::query_as(
                    "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 \
                     WHERE user_id = $1 AND revoked_at IS NULL \
                       AND ($4 IS NULL OR id = $4) AND ($5 IS NULL OR id <> $5) \
                     RETURNING id",
                )
                .bind(user_id)
                .bind(how.at)
                .bind(how.reason.as_str())
                .bind(only)
                .bind(except)
                .fetch_all(&mut *conn)
                .await
                .context("revoking sessions")?;
                let ids: Vec<Uuid> = ids.into_iter().map(|(id,)| id).collect();
                for id in &ids {
                    conn.enqueue(&revoked_event(user_id, *id, how), how.at).await?;
                }
                Ok(ids)
            }
        }

        #[async_trait::async_trait]
        impl AuthStore for SqlAuthStore<$db> {
            async fn insert_credentials(&self, user_id: Uuid, password_hash: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
                sqlx::query("INSERT INTO credentials (user_id, password_hash, failed_count, updated_at) VALUES ($1, $2, 0, $3)")
                    .bind(user_id)
                    .bind(password_hash)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .context("storing credentials")?;
                Ok(())
            }

            async fn credentials(&self, user_id: Uuid) -> anyhow::Result<Option<CredentialRecord>> {
                sqlx::query_as("SELECT user_id, password_hash, failed_count, locked_until FROM credentials WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading credentials")
            }

            async fn count_attempt(
                &self,
                user_id: Uuid,
                expected: i64,
                failures: i64,
                locked_until: Option<DateTime<Utc>>,
                at: DateTime<Utc>,
            ) -> anyhow::Result<bool> {
                let done = sqlx::query(
                    "UPDATE credentials SET failed_count = $3, locked_until = $4, updated_at = $5 \
                     WHERE user_id = $1 AND failed_count = $2",
                )
                .bind(user_id)
                .bind(expected)
                .bind(failures)
                .bind(locked_until)
                .bind(at)
                .execute(&self.pool)
                .await
                .context("counting a login attempt")?;
                Ok(done.rows_affected() == 1)
            }

            async fn clear_failures(&self, user_id: Uuid, at: DateTime<Utc>) -> anyhow::Result<bool> {
                let done = sqlx::query(CLEAR_FAILURES)
                .bind(user_id)
                .bind(at)
                .execute(&self.pool)
                .await
                .context("clearing login failures")?;
                Ok(done.rows_affected() == 1)
            }

            async fn emit(&self, events: &[Event], at: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self.pool.begin_with(<$db as Backend>::BEGIN_WRITE).await.context("begin")?;
                for event in events {
                    enqueue(&mut *tx, event, at).await?;
                }
                tx.commit().await.context("commit")
            }

            async fn start_session(&self, s: &NewSession, events: &[Event], at: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self.pool.begin_with(<$db as Backend>::BEGIN_WRITE).await.context("begin")?;
                sqlx::query(CLEAR_FAILURES)
                    .bind(s.user_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .context("clearing login failures")?;
                sqlx::query(&format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $3, $4, NULL, $5, $6, $7)"
                ))
                .bind(s.id)
                .bind(s.user_id)
                .bind(at)
                .bind(s.expires_at)
                .bind(&s.ip)
                .bind(&s.user_agent)
                .bind(s.amr.join(" "))
                .execute(&mut *tx)
                .await
                .context("creating a session")?;
                sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)")
                    .bind(&s.refresh_hash)
                    .bind(s.id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .context("storing a refresh token")?;
                for event in events {
                    enqueue(&mut *tx, event, at).await?;
                }
                tx.commit().await.context("commit")
            }

            async fn rotate_refresh(
                &self,
                presented: &[u8],
                successor: &[u8],
                at: DateTime<Utc>,
                tokens_expire_at: DateTime<Utc>,
            ) -> anyhow::Result<Rotation> {
                let mut tx = self.pool.begin_with(<$db as Backend>::BEGIN_WRITE).await.context("begin")?;
                let spent: Option<(Uuid,)> = sqlx::query_as(
                    "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL RETURNING session_id",
                )
                .bind(presented)
                .bind(at)
                .fetch_optional(&mut *tx)
                .await
                .context("spending a refresh token")?;
                if let Some((session_id,)) = spent {
                    let session: Option<SessionRecord> =
                        sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
                            .bind(session_id)
                            .fetch_optional(&mut *tx)
                            .await
                            .context("reading a session")?;
                    let Some(session) = session.filter(|s| s.is_active(at)) else {
                        tx.commit().await.context("commit")?;
                        return Ok(Rotation::Invalid);
                    };
                    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)")
                        .bind(successor)
                        .bind(session_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .context("storing a refresh token")?;
                    sqlx::query("UPDATE sessions SET last_used_at = $2 WHERE id = $1")
                        .bind(session_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .context("touching a session")?;
                    tx.commit().await.context("commit")?;
                    return Ok(Rotation::Rotated(SessionRecord { last_used_at: at, ..session }));
                }
                let family: Option<(Uuid, Uuid)> = sqlx::query_as(
                    "SELECT s.id, s.user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
                )
                .bind(presented)
                .fetch_optional(&mut *tx)
                .await
                .context("looking up a spent refresh token")?;
                let Some((session_id, user_id)) = family else {
                    return Ok(Rotation::Invalid);
                };
                let how = Revocation { reason: RevokeReason::RefreshReuse, at, tokens_expire_at };
                Self::revoke_in(&mut tx, user_id, Revoke::One(session_id), &how).await?;
                tx.commit().await.context("commit")?;
                Ok(Rotation::Reused { session_id })
            }

            async fn session(&self, id: Uuid) -> anyhow::Result<Option<SessionRecord>> {
                sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading a session")
            }

            async fn active_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<Vec<SessionRecord>> {
                sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions \
                     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY id DESC"
                ))
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .context("listing sessions")
            }

            async fn revoke(&self, user_id: Uuid, which: Revoke, how: Revocation) -> anyhow::Result<Vec<Uuid>> {
                let mut tx = self.pool.begin_with(<$db as Backend>::BEGIN_WRITE).await.context("begin")?;
                let ids = Self::revoke_in(&mut tx, user_id, which, &how).await?;
                tx.commit().await.context("commit")?;
                Ok(ids)
            }

            async fn change_password(
                &self,
                user_id: Uuid,
                password_hash: &str,
                keep: Uuid,
                how: Revocation,
            ) -> anyhow::Result<Vec<Uuid>> {
                let mut tx = self.pool.begin_with(<$db as Backend>::BEGIN_WRITE).await.context("begin")?;
                sqlx::query(
                    "UPDATE credentials SET password_hash = $2, failed_count = 0, locked_until = NULL, updated_at = $3 \
                     WHERE user_id = $1",
                )
                .bind(user_id)
                .bind(password_hash)
                .bind(how.at)
                .execute(&mut *tx)
                .await
                .context("changing a password")?;
                let ids = Self::revoke_in(&mut tx, user_id, Revoke::AllExcept(Some(keep)), &how).await?;
                let changed = new_event(
                    PRODUCER,
                    Some(user_id),
                    how.at,
                    Payload::PasswordChanged(PasswordChanged {
                        sessions_revoked: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                    }),
                );
                enqueue(&mut *tx, &changed, how.at).await?;
                tx.commit().await.context("commit")?;
                Ok(ids)
            }

            async fn forget_user(&self, user_id: Uuid, how: Revocation) -> anyhow::Result<Vec<Uuid>> {
                let mut tx = self.pool.begin_with(<$db as Backend>::BEGIN_WRITE).await.context("begin")?;
                let ids = Self::revoke_in(&mut tx, user_id, Revoke::AllExcept(None), &how).await?;
                sqlx::query("DELETE FROM credentials WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .context("deleting credentials")?;
                tx.commit().await.context("commit")?;
                Ok(ids)
            }

            async fn signing_keys(&self) -> anyhow::Result<Vec<SigningKeyRecord>> {
                sqlx::query_as("SELECT kid, private_key, public_key, created_at, active_from FROM signing_keys ORDER BY active_from, created_at")
                    .fetch_all(&self.pool)
                    .await
                    .context("reading signing keys")
            }

            async fn add_signing_key(&self, key: &SigningKeyRecord) -> anyhow::Result<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, private_key, public_key, created_at, active_from) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key.kid)
                .bind(&key.private_key)
                .bind(&key.public_key)
                .bind(key.created_at)
                .bind(key.active_from)
                .execute(&self.pool)
                .await
                .context("storing a signing key")?;
                Ok(())
            }
        }
    };
}

sql_auth_store!(Postgres, sqlx::PgConnection);
sql_auth_store!(Sqlite, sqlx::SqliteConnection);
