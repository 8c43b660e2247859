//! What the auth store reads and writes: credentials and their lockout
//! counters, second factors and challenges, sessions, signing keys and
//! revocations.

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    /// Consecutive wrong second factors (including ones in flight).
    pub mfa_failed_count: i64,
    /// No second-factor attempts before this.
    pub mfa_locked_until: Option<DateTime<Utc>>,
}

impl CredentialRecord {
    /// The failure count and lock of one counter.
    pub fn failures(&self, counter: Counter) -> (i64, Option<DateTime<Utc>>) {
        match counter {
            Counter::Password => (self.failed_count, self.locked_until),
            Counter::SecondFactor => (self.mfa_failed_count, self.mfa_locked_until),
        }
    }
}

/// The two failure counters of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Wrong passwords.
    Password,
    /// Wrong second factors.
    SecondFactor,
}

impl Counter {
    /// Its count and lock columns.
    pub(super) fn columns(self) -> (&'static str, &'static str) {
        match self {
            Counter::Password => ("failed_count", "locked_until"),
            Counter::SecondFactor => ("mfa_failed_count", "mfa_locked_until"),
        }
    }
}

/// A user's TOTP factor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpRecord {
    /// The secret, sealed with the MFA key.
    pub secret: Vec<u8>,
    /// Set once a code confirmed it: 2FA is on.
    pub enabled_at: Option<DateTime<Utc>>,
    /// The highest step accepted.
    pub last_step: Option<i64>,
}

/// A user's phone for SMS codes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SmsRecord {
    /// The E.164 number, sealed with the MFA key.
    pub phone: Vec<u8>,
    /// Set once a code sent to it came back.
    pub verified_at: Option<DateTime<Utc>>,
}

/// The first step of a login with 2FA on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChallengeRecord {
    /// Whose login it is.
    pub user_id: Uuid,
    /// Good until.
    pub expires_at: DateTime<Utc>,
}

/// A proven second factor, as the store spends it.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    /// A TOTP code of this step (above every step accepted before).
    Totp {
        /// The step.
        step: i64,
    },
    /// A backup code, by keyed hash.
    BackupCode {
        /// Its hash.
        hash: Vec<u8>,
    },
    /// The SMS code sent for the challenge, by keyed hash.
    Sms {
        /// Its hash.
        hash: Vec<u8>,
    },
}

/// What completing a login's second step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaOutcome {
    /// The session exists; the challenge and the factor are spent.
    Done,
    /// The challenge is unknown, expired or spent.
    ChallengeGone,
    /// The factor was spent already (or never valid); nothing changed.
    FactorRefused,
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
    /// Every session started before this instant (those started after a
    /// change already carry its outcome).
    StartedBefore(DateTime<Utc>),
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
    /// 2FA was turned off or its backup codes replaced.
    MfaChanged,
    /// The account's role or status changed: its tokens claim the old ones.
    AccountChanged,
    /// An administrator ended every session of the user.
    EndedByAdmin,
}

impl RevokeReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Revoked => "revoked",
            RevokeReason::RefreshReuse => "refresh_reuse",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::UserDeleted => "user_deleted",
            RevokeReason::MfaChanged => "mfa_changed",
            RevokeReason::AccountChanged => "account_changed",
            RevokeReason::EndedByAdmin => "ended_by_admin",
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
