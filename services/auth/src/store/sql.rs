//! The auth store in SQL, written once and instantiated for PostgreSQL and
//! SQLite; every state change writes its events to the outbox in the same
//! transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use fleet_kit::{
    StorePool,
    events::new_event,
    outbox::{OutboxConnection, enqueue},
    time::to_timestamp,
};
use fleet_proto::events::v1::{Event, MfaBackupCodeUsed, MfaDisabled, PasswordChanged, SessionRevoked, event::Payload};
use sqlx::{Postgres, Sqlite};
use uuid::Uuid;

use super::{
    AuthStore, ChallengeRecord, Counter, CredentialRecord, MfaOutcome, NewSession, PRODUCER, Revocation, Revoke,
    RevokeReason, Rotation, SecondFactor, SessionRecord, SigningKeyRecord, SmsRecord, TotpRecord,
};

/// The SQL store, on either backend.
#[derive(Debug, Clone)]
pub struct SqlAuthStore<DB: sqlx::Database> {
    pub(super) pool: StorePool<DB>,
}

/// Ends failure streaks of `which`: `$1` user id, `$2` time.
fn clear_failures_sql(which: &[Counter]) -> String {
    let sets: Vec<String> = which
        .iter()
        .map(|c| {
            let (count, lock) = c.columns();
            format!("{count} = 0, {lock} = NULL, ")
        })
        .collect();
    format!(
        "UPDATE credentials SET {}updated_at = $2 WHERE user_id = $1",
        sets.concat()
    )
}

const CREDENTIAL_COLUMNS: &str =
    "user_id, password_hash, failed_count, locked_until, mfa_failed_count, mfa_locked_until";

/// Accepts a TOTP step above every earlier one: `$1` user id, `$2` step.
const ACCEPT_TOTP_STEP: &str = "UPDATE totp_factors SET last_step = $2 \
     WHERE user_id = $1 AND enabled_at IS NOT NULL AND (last_step IS NULL OR last_step < $2)";

/// Everything second-factor about a user.
const MFA_TABLES: [&str; 4] = ["totp_factors", "backup_codes", "sms_factors", "mfa_challenges"];

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
            /// Inserts a session and its first refresh token.
            async fn insert_session(conn: &mut $conn, s: &NewSession, at: DateTime<Utc>) -> anyhow::Result<()> {
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
                .execute(&mut *conn)
                .await
                .context("creating a session")?;
                sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)")
                    .bind(&s.refresh_hash)
                    .bind(s.id)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .context("storing a refresh token")?;
                Ok(())
            }

            /// Replaces a user's backup codes.
            async fn store_backup_codes(conn: &mut $conn, user_id: Uuid, hashes: &[Vec<u8>], at: DateTime<Utc>) -> anyhow::Result<()> {
                sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *conn)
                    .await
                    .context("cancelling backup codes")?;
                for hash in hashes {
                    sqlx::query("INSERT INTO backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
                        .bind(user_id)
                        .bind(hash)
                        .bind(at)
                        .execute(&mut *conn)
                        .await
                        .context("storing backup codes")?;
                }
                Ok(())
            }

            /// Unused backup codes, inside a transaction.
            async fn count_backup_codes(conn: &mut $conn, user_id: Uuid) -> anyhow::Result<u32> {
                let (left,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM backup_codes WHERE user_id = $1 AND used_at IS NULL")
                        .bind(user_id)
                        .fetch_one(&mut *conn)
                        .await
                        .context("counting backup codes")?;
                Ok(u32::try_from(left).unwrap_or(0))
            }

            /// Spends a second factor; false when it was not there to spend.
            async fn spend_factor(conn: &mut $conn, token_hash: &[u8], user_id: Uuid, factor: &SecondFactor, at: DateTime<Utc>) -> anyhow::Result<bool> {
                let done = match factor {
                    SecondFactor::Totp { step } => sqlx::query(ACCEPT_TOTP_STEP)
                        .bind(user_id)
                        .bind(step)
                        .execute(&mut *conn)
                        .await
                        .context("accepting a TOTP step")?,
                    SecondFactor::BackupCode { hash } => sqlx::query(
                        "UPDATE backup_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
                    )
                    .bind(user_id)
                    .bind(hash)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .context("spending a backup code")?,
                    SecondFactor::Sms { hash } => sqlx::query(
                        "UPDATE mfa_challenges SET sms_code_hash = NULL \
                         WHERE token_hash = $1 AND sms_code_hash = $2 AND sms_code_expires_at > $3",
                    )
                    .bind(token_hash)
                    .bind(hash)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .context("spending an SMS code")?,
                };
                Ok(done.rows_affected() == 1)
            }

            /// Revokes inside a transaction and writes one event per session.
            async fn revoke_in(conn: &mut $conn, user_id: Uuid, which: Revoke, how: &Revocation) -> anyhow::Result<Vec<Uuid>> {
                let (only, except, before) = match which {
                    Revoke::One(id) => (Some(id), None, None),
                    Revoke::AllExcept(keep) => (None, keep, None),
                    Revoke::StartedBefore(at) => (None, None, Some(at)),
                };
                let ids: Vec<(Uuid,)> = sqlx::query_as(
                    "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 \
                     WHERE user_id = $1 AND revoked_at IS NULL \
                       AND ($4 IS NULL OR id = $4) AND ($5 IS NULL OR id <> $5) \
                       AND ($6 IS NULL OR created_at < $6) \
                     RETURNING id",
                )
                .bind(user_id)
                .bind(how.at)
                .bind(how.reason.as_str())
                .bind(only)
                .bind(except)
                .bind(before)
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
                sqlx::query_as(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE user_id = $1"))
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading credentials")
            }

            async fn count_attempt(
                &self,
                user_id: Uuid,
                counter: Counter,
                expected: i64,
                failures: i64,
                locked_until: Option<DateTime<Utc>>,
                at: DateTime<Utc>,
            ) -> anyhow::Result<bool> {
                let (count, lock) = counter.columns();
                let done = sqlx::query(&format!(
                    "UPDATE credentials SET {count} = $3, {lock} = $4, updated_at = $5 \
                     WHERE user_id = $1 AND {count} = $2",
                ))
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

            async fn unknown_failures(&self, email_key: &[u8]) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
                let row: Option<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(
                    "SELECT failed_count, locked_until FROM unknown_login_failures WHERE email_key = $1",
                )
                .bind(email_key)
                .fetch_optional(&self.pool)
                .await
                .context("reading unknown-email failures")?;
                Ok(row.unwrap_or((0, None)))
            }

            async fn count_unknown_attempt(
                &self,
                email_key: &[u8],
                expected: i64,
                failures: i64,
                locked_until: Option<DateTime<Utc>>,
                at: DateTime<Utc>,
                forget_before: DateTime<Utc>,
            ) -> anyhow::Result<bool> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                sqlx::query(
                    "DELETE FROM unknown_login_failures WHERE updated_at < $1 \
                     AND (locked_until IS NULL OR locked_until < $1)",
                )
                .bind(forget_before)
                .execute(&mut *tx)
                .await
                .context("forgetting idle unknown-email failures")?;
                // A first failure inserts (or takes over a row counted back
                // to zero); later ones move the count they read.
                let sql = if expected == 0 {
                    "INSERT INTO unknown_login_failures (email_key, failed_count, locked_until, updated_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (email_key) DO UPDATE SET failed_count = $2, locked_until = $3, updated_at = $4 \
                     WHERE unknown_login_failures.failed_count = 0"
                } else {
                    "UPDATE unknown_login_failures SET failed_count = $2, locked_until = $3, updated_at = $4 \
                     WHERE email_key = $1 AND failed_count = $5"
                };
                let mut query = sqlx::query(sql).bind(email_key).bind(failures).bind(locked_until).bind(at);
                if expected != 0 {
                    query = query.bind(expected);
                }
                let done = query.execute(&mut *tx).await.context("counting an unknown-email login")?;
                tx.commit().await.context("commit")?;
                Ok(done.rows_affected() == 1)
            }

            async fn clear_failures(&self, user_id: Uuid, which: &[Counter], at: DateTime<Utc>) -> anyhow::Result<bool> {
                let done = sqlx::query(&clear_failures_sql(which))
                .bind(user_id)
                .bind(at)
                .execute(&self.pool)
                .await
                .context("clearing login failures")?;
                Ok(done.rows_affected() == 1)
            }

            async fn emit(&self, events: &[Event], at: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                for event in events {
                    enqueue(&mut *tx, event, at).await?;
                }
                tx.commit().await.context("commit")
            }

            async fn start_session(&self, s: &NewSession, events: &[Event], at: DateTime<Utc>) -> anyhow::Result<()> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                sqlx::query(&clear_failures_sql(&[Counter::Password]))
                    .bind(s.user_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .context("clearing login failures")?;
                Self::insert_session(&mut tx, s, at).await?;
                for event in events {
                    enqueue(&mut *tx, event, at).await?;
                }
                tx.commit().await.context("commit")
            }

            async fn revoked_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>> {
                sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await
                    .context("reading revoked sessions")
            }

            async fn refresh_owner(&self, presented: &[u8]) -> anyhow::Result<Option<Uuid>> {
                let owner: Option<(Uuid,)> = sqlx::query_as(
                    "SELECT s.user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
                )
                .bind(presented)
                .fetch_optional(&self.pool)
                .await
                .context("finding a refresh token's user")?;
                Ok(owner.map(|(user_id,)| user_id))
            }

            async fn rotate_refresh(
                &self,
                presented: &[u8],
                successor: &[u8],
                at: DateTime<Utc>,
                tokens_expire_at: DateTime<Utc>,
            ) -> anyhow::Result<Rotation> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
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
                let mut tx = self.pool.begin_write().await.context("begin")?;
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
                let mut tx = self.pool.begin_write().await.context("begin")?;
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
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let ids = Self::revoke_in(&mut tx, user_id, Revoke::AllExcept(None), &how).await?;
                for table in MFA_TABLES.iter().chain(&["credentials"]) {
                    sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| format!("deleting from {table}"))?;
                }
                tx.commit().await.context("commit")?;
                Ok(ids)
            }

            async fn signing_keys(&self) -> anyhow::Result<Vec<SigningKeyRecord>> {
                sqlx::query_as("SELECT kid, private_key, public_key, created_at, active_from FROM signing_keys ORDER BY active_from, created_at")
                    .fetch_all(&self.pool)
                    .await
                    .context("reading signing keys")
            }

            async fn reseal_signing_key(&self, kid: &str, private_key: &[u8]) -> anyhow::Result<()> {
                sqlx::query("UPDATE signing_keys SET private_key = $2 WHERE kid = $1")
                    .bind(kid)
                    .bind(private_key)
                    .execute(&self.pool)
                    .await
                    .context("resealing a signing key")?;
                Ok(())
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

            async fn totp(&self, user_id: Uuid) -> anyhow::Result<Option<TotpRecord>> {
                sqlx::query_as("SELECT secret, enabled_at, last_step FROM totp_factors WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading a TOTP factor")
            }

            async fn begin_totp(&self, user_id: Uuid, sealed_secret: &[u8], at: DateTime<Utc>) -> anyhow::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO totp_factors (user_id, secret, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, \
                       last_step = NULL \
                     WHERE totp_factors.enabled_at IS NULL",
                )
                .bind(user_id)
                .bind(sealed_secret)
                .bind(at)
                .execute(&self.pool)
                .await
                .context("storing a TOTP secret")?;
                Ok(done.rows_affected() == 1)
            }

            async fn confirm_totp(
                &self,
                user_id: Uuid,
                step: i64,
                backup_hashes: &[Vec<u8>],
                events: &[Event],
                at: DateTime<Utc>,
            ) -> anyhow::Result<bool> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let done = sqlx::query(
                    "UPDATE totp_factors SET enabled_at = $3, last_step = $2 \
                     WHERE user_id = $1 AND enabled_at IS NULL AND (last_step IS NULL OR last_step < $2)",
                )
                .bind(user_id)
                .bind(step)
                .bind(at)
                .execute(&mut *tx)
                .await
                .context("enabling TOTP")?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                Self::store_backup_codes(&mut tx, user_id, backup_hashes, at).await?;
                for event in events {
                    enqueue(&mut *tx, event, at).await?;
                }
                tx.commit().await.context("commit")?;
                Ok(true)
            }

            async fn accept_totp_step(&self, user_id: Uuid, step: i64) -> anyhow::Result<bool> {
                let done = sqlx::query(ACCEPT_TOTP_STEP)
                    .bind(user_id)
                    .bind(step)
                    .execute(&self.pool)
                    .await
                    .context("accepting a TOTP step")?;
                Ok(done.rows_affected() == 1)
            }

            async fn backup_codes_left(&self, user_id: Uuid) -> anyhow::Result<u32> {
                // A transaction: behind a transaction-mode pooler a statement
                // runs inside one (see fleet_kit::StorePool).
                let mut tx = self.pool.begin().await.context("begin")?;
                Self::count_backup_codes(&mut tx, user_id).await
            }

            async fn replace_backup_codes(
                &self,
                user_id: Uuid,
                hashes: &[Vec<u8>],
                keep: Uuid,
                how: Revocation,
            ) -> anyhow::Result<Vec<Uuid>> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                Self::store_backup_codes(&mut tx, user_id, hashes, how.at).await?;
                let ids = Self::revoke_in(&mut tx, user_id, Revoke::AllExcept(Some(keep)), &how).await?;
                tx.commit().await.context("commit")?;
                Ok(ids)
            }

            async fn disable_mfa(
                &self,
                user_id: Uuid,
                keep: Uuid,
                confirmed_with: &str,
                how: Revocation,
            ) -> anyhow::Result<Vec<Uuid>> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                for table in MFA_TABLES {
                    sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .with_context(|| format!("clearing {table}"))?;
                }
                let ids = Self::revoke_in(&mut tx, user_id, Revoke::AllExcept(Some(keep)), &how).await?;
                let disabled = new_event(
                    PRODUCER,
                    Some(user_id),
                    how.at,
                    Payload::MfaDisabled(MfaDisabled {
                        confirmed_with: confirmed_with.into(),
                        sessions_revoked: u32::try_from(ids.len()).unwrap_or(u32::MAX),
                    }),
                );
                enqueue(&mut *tx, &disabled, how.at).await?;
                tx.commit().await.context("commit")?;
                Ok(ids)
            }

            async fn create_challenge(
                &self,
                token_hash: &[u8],
                user_id: Uuid,
                expires_at: DateTime<Utc>,
                at: DateTime<Utc>,
            ) -> anyhow::Result<()> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1 AND (expires_at <= $2 OR consumed_at IS NOT NULL)")
                    .bind(user_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .context("dropping old login challenges")?;
                sqlx::query("INSERT INTO mfa_challenges (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(token_hash)
                    .bind(user_id)
                    .bind(at)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await
                    .context("storing a login challenge")?;
                tx.commit().await.context("commit")
            }

            async fn challenge(&self, token_hash: &[u8], now: DateTime<Utc>) -> anyhow::Result<Option<ChallengeRecord>> {
                sqlx::query_as(
                    "SELECT user_id, expires_at FROM mfa_challenges \
                     WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .context("reading a login challenge")
            }

            async fn set_challenge_sms_code(
                &self,
                token_hash: &[u8],
                code_hash: &[u8],
                expires_at: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> anyhow::Result<bool> {
                let done = sqlx::query(
                    "UPDATE mfa_challenges SET sms_code_hash = $2, sms_code_expires_at = $3 \
                     WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $4",
                )
                .bind(token_hash)
                .bind(code_hash)
                .bind(expires_at)
                .bind(now)
                .execute(&self.pool)
                .await
                .context("storing an SMS code")?;
                Ok(done.rows_affected() == 1)
            }

            async fn complete_mfa(
                &self,
                token_hash: &[u8],
                factor: &SecondFactor,
                session: &NewSession,
                events: &[Event],
                at: DateTime<Utc>,
            ) -> anyhow::Result<MfaOutcome> {
                let mut tx = self.pool.begin_write().await.context("begin")?;
                let claimed = sqlx::query(
                    "UPDATE mfa_challenges SET consumed_at = $3 \
                     WHERE token_hash = $1 AND user_id = $2 AND consumed_at IS NULL AND expires_at > $3",
                )
                .bind(token_hash)
                .bind(session.user_id)
                .bind(at)
                .execute(&mut *tx)
                .await
                .context("spending a login challenge")?;
                if claimed.rows_affected() != 1 {
                    return Ok(MfaOutcome::ChallengeGone);
                }
                if !Self::spend_factor(&mut tx, token_hash, session.user_id, factor, at).await? {
                    return Ok(MfaOutcome::FactorRefused);
                }
                sqlx::query(&clear_failures_sql(&[Counter::Password, Counter::SecondFactor]))
                    .bind(session.user_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .context("clearing login failures")?;
                Self::insert_session(&mut tx, session, at).await?;
                for event in events {
                    enqueue(&mut *tx, event, at).await?;
                }
                if let SecondFactor::BackupCode { .. } = factor {
                    let remaining = Self::count_backup_codes(&mut tx, session.user_id).await?;
                    let used = new_event(
                        PRODUCER,
                        Some(session.user_id),
                        at,
                        Payload::MfaBackupCodeUsed(MfaBackupCodeUsed { remaining, ip: session.ip.clone() }),
                    );
                    enqueue(&mut *tx, &used, at).await?;
                }
                tx.commit().await.context("commit")?;
                Ok(MfaOutcome::Done)
            }

            async fn sms_factor(&self, user_id: Uuid) -> anyhow::Result<Option<SmsRecord>> {
                sqlx::query_as("SELECT phone, verified_at FROM sms_factors WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading an SMS factor")
            }

            async fn begin_sms(
                &self,
                user_id: Uuid,
                sealed_phone: &[u8],
                code_hash: &[u8],
                expires_at: DateTime<Utc>,
                at: DateTime<Utc>,
            ) -> anyhow::Result<()> {
                sqlx::query(
                    "INSERT INTO sms_factors (user_id, phone, created_at, code_hash, code_expires_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_id) DO UPDATE SET phone = excluded.phone, created_at = excluded.created_at, \
                       verified_at = NULL, code_hash = excluded.code_hash, code_expires_at = excluded.code_expires_at",
                )
                .bind(user_id)
                .bind(sealed_phone)
                .bind(at)
                .bind(code_hash)
                .bind(expires_at)
                .execute(&self.pool)
                .await
                .context("storing a phone")?;
                Ok(())
            }

            async fn confirm_sms(&self, user_id: Uuid, code_hash: &[u8], at: DateTime<Utc>) -> anyhow::Result<bool> {
                let done = sqlx::query(
                    "UPDATE sms_factors SET verified_at = $3, code_hash = NULL, code_expires_at = NULL \
                     WHERE user_id = $1 AND code_hash = $2 AND code_expires_at > $3",
                )
                .bind(user_id)
                .bind(code_hash)
                .bind(at)
                .execute(&self.pool)
                .await
                .context("verifying a phone")?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

sql_auth_store!(Postgres, sqlx::PgConnection);
sql_auth_store!(Sqlite, sqlx::SqliteConnection);
