//! The auth store: credentials and lockout state, sessions, refresh-token
//! families and signing keys. One SQL implementation, instantiated for
//! PostgreSQL and SQLite; every state change writes its events to the outbox
//! in the same transaction.

mod records;
mod sql;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleet_kit::{Db, store::Migrations};
use fleet_proto::events::v1::Event;
pub use records::*;
pub use sql::SqlAuthStore;
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
        counter: Counter,
        expected: i64,
        failures: i64,
        locked_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool>;
    /// Failed logins to an email without an account (by its key): the
    /// count and lock, as for an account.
    async fn unknown_failures(&self, email_key: &[u8]) -> anyhow::Result<(i64, Option<DateTime<Utc>>)>;
    /// Counts a login to an email without an account if its count is still
    /// `expected` (a compare-and-set); forgets counts idle since `forget_before`.
    async fn count_unknown_attempt(
        &self,
        email_key: &[u8],
        expected: i64,
        failures: i64,
        locked_until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> anyhow::Result<bool>;
    /// Clears failure counters and locks.
    async fn clear_failures(&self, user_id: Uuid, which: &[Counter], at: DateTime<Utc>) -> anyhow::Result<bool>;
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
    /// The user of the session a refresh token belongs to, spent or not;
    /// nothing changes.
    async fn refresh_owner(&self, presented: &[u8]) -> anyhow::Result<Option<Uuid>>;
    /// Sessions revoked after `since`, with when they were revoked.
    async fn revoked_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<(Uuid, DateTime<Utc>)>>;
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
    /// Replaces a signing key's stored private half (sealed anew).
    async fn reseal_signing_key(&self, kid: &str, private_key: &[u8]) -> anyhow::Result<()>;

    /// A user's TOTP factor.
    async fn totp(&self, user_id: Uuid) -> anyhow::Result<Option<TotpRecord>>;
    /// Stores a new, not yet confirmed secret (replacing an unconfirmed one).
    /// False when 2FA is on already.
    async fn begin_totp(&self, user_id: Uuid, sealed_secret: &[u8], at: DateTime<Utc>) -> anyhow::Result<bool>;
    /// Turns 2FA on with an accepted step, stores the first backup codes and
    /// writes `events`. False when the step was not above the last accepted
    /// one, or 2FA was on already.
    async fn confirm_totp(
        &self,
        user_id: Uuid,
        step: i64,
        backup_hashes: &[Vec<u8>],
        events: &[Event],
        at: DateTime<Utc>,
    ) -> anyhow::Result<bool>;
    /// Accepts a step of an enabled factor if it is above every step accepted
    /// before (compare-and-set).
    async fn accept_totp_step(&self, user_id: Uuid, step: i64) -> anyhow::Result<bool>;
    /// Unused backup codes.
    async fn backup_codes_left(&self, user_id: Uuid) -> anyhow::Result<u32>;
    /// Replaces the backup codes and revokes every session but `keep`.
    async fn replace_backup_codes(
        &self,
        user_id: Uuid,
        hashes: &[Vec<u8>],
        keep: Uuid,
        how: Revocation,
    ) -> anyhow::Result<Vec<Uuid>>;
    /// Removes every second factor, revokes every session but `keep` and
    /// writes `mfa.disabled`.
    async fn disable_mfa(
        &self,
        user_id: Uuid,
        keep: Uuid,
        confirmed_with: &str,
        how: Revocation,
    ) -> anyhow::Result<Vec<Uuid>>;
    /// Stores a login's first step.
    async fn create_challenge(
        &self,
        token_hash: &[u8],
        user_id: Uuid,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    /// A live (unspent, unexpired) challenge.
    async fn challenge(&self, token_hash: &[u8], now: DateTime<Utc>) -> anyhow::Result<Option<ChallengeRecord>>;
    /// Attaches the SMS code sent for a live challenge.
    async fn set_challenge_sms_code(
        &self,
        token_hash: &[u8],
        code_hash: &[u8],
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool>;
    /// The second step of a login, all or nothing: spends the challenge and
    /// the factor, clears both failure counters, starts the session and
    /// writes `events` (and `mfa.backup_code_used` for a backup code).
    async fn complete_mfa(
        &self,
        token_hash: &[u8],
        factor: &SecondFactor,
        session: &NewSession,
        events: &[Event],
        at: DateTime<Utc>,
    ) -> anyhow::Result<MfaOutcome>;
    /// A user's phone for SMS codes.
    async fn sms_factor(&self, user_id: Uuid) -> anyhow::Result<Option<SmsRecord>>;
    /// Stores a phone (unverified) and the code that will verify it.
    async fn begin_sms(
        &self,
        user_id: Uuid,
        sealed_phone: &[u8],
        code_hash: &[u8],
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()>;
    /// Verifies the phone if `code_hash` is its live code (spent at once).
    async fn confirm_sms(&self, user_id: Uuid, code_hash: &[u8], at: DateTime<Utc>) -> anyhow::Result<bool>;
}

/// The store over a connected database.
pub fn auth_store(db: &Db) -> Arc<dyn AuthStore> {
    match db {
        Db::Postgres(pool) => Arc::new(SqlAuthStore { pool: pool.clone() }),
        Db::Sqlite(pool) => Arc::new(SqlAuthStore { pool: pool.clone() }),
    }
}
