//! The notify store: accounts' preferences and webhook state, the feed,
//! known devices and the delivery queue, one trait and one SQL body for
//! PostgreSQL and SQLite. A notification is written with its unread count
//! and its deliveries in one transaction, keyed by its event's id, so a
//! redelivered event changes nothing; times are microseconds since the
//! Unix epoch.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleet_kit::{Db, store::Migrations};
use uuid::Uuid;

mod backend;

pub use backend::SqlNotifyStore;

use crate::kinds::Plan;

/// The notify service's migrations.
pub fn migrations() -> Migrations {
    Migrations {
        postgres: sqlx::migrate!("migrations/postgres"),
        sqlite: sqlx::migrate!("migrations/sqlite"),
    }
}

/// Microseconds since the Unix epoch, the store's unit of time.
pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// The instant of `us` microseconds since the epoch.
pub fn instant(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// The position before every other in a newest-first walk.
pub const FIRST: (i64, Uuid) = (i64::MAX, Uuid::max());

/// What an account asked for, and its webhook's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    /// Its address, as the users service last announced it.
    pub email: String,
    /// Unread notifications.
    pub unread: i64,
    /// Whether a login was seen.
    pub logged_in: bool,
    /// Whether notifications also go by email.
    pub email_enabled: bool,
    /// The optional kinds switched off, a JSON array.
    pub muted: String,
    /// Where webhooks go, or "".
    pub webhook_url: String,
    /// The signing secret (`whsec_...`), or "".
    pub webhook_secret: String,
    /// The secret before the last rotation.
    pub previous_secret: String,
    /// Until when the previous secret signs too (µs).
    pub previous_secret_until_us: i64,
    /// When webhook deliveries stopped (µs).
    pub webhook_disabled_us: Option<i64>,
    /// When the account was erased (µs).
    pub erased_us: Option<i64>,
}

impl Account {
    /// The optional kinds switched off.
    pub fn muted(&self) -> Vec<String> {
        serde_json::from_str(&self.muted).unwrap_or_default()
    }

    /// Whether webhook deliveries are made.
    pub fn webhook_active(&self) -> bool {
        !self.webhook_url.is_empty() && self.webhook_disabled_us.is_none()
    }
}

/// New preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPreferences {
    /// Email copies.
    pub email_enabled: bool,
    /// Optional kinds switched off.
    pub muted: Vec<String>,
    /// The webhook URL, or "".
    pub webhook_url: String,
    /// The secret to set should the URL change.
    pub new_secret: String,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationRow {
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: String,
    /// Its text.
    pub body: String,
    /// A JSON object.
    pub data: String,
    /// When (µs).
    pub created_us: i64,
    /// When it was read (µs).
    pub read_us: Option<i64>,
}

/// A delivery's state, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRow {
    /// The message id.
    pub id: Uuid,
    /// The notification it carries.
    pub notification_id: Uuid,
    /// `webhook` or `email`.
    pub channel: String,
    /// `pending`, `delivered`, `failed` or `disabled`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// The last answer's status code.
    pub response_code: i32,
    /// The last attempt's duration.
    pub latency_ms: i32,
    /// Why the last attempt failed.
    pub error: String,
    /// When it was queued (µs).
    pub created_us: i64,
    /// The last attempt (µs).
    pub last_attempt_us: Option<i64>,
    /// The next attempt (µs).
    pub next_attempt_us: Option<i64>,
}

/// A delivery taken for an attempt, with where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The message id.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// `webhook` or `email`.
    pub channel: String,
    /// The message (the webhook body).
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The account now: its URL, secrets and address.
    pub account: Account,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    /// The message id.
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// `webhook` or `email`.
    pub channel: String,
    /// Whether an attempt was made (a delivery whose endpoint is gone is
    /// closed without one).
    pub attempted: bool,
    /// `pending`, `delivered`, `failed` or `disabled`.
    pub status: &'static str,
    /// The answer's status code, or 0.
    pub response_code: i32,
    /// The attempt's duration.
    pub latency_ms: i32,
    /// Why it failed, or "".
    pub error: String,
    /// When the next attempt is due, if one is.
    pub next_attempt_us: Option<i64>,
    /// Stop the user's webhook deliveries, for this reason.
    pub disable_webhook: Option<String>,
}

/// Delivery statuses.
pub mod status {
    /// Attempts are due.
    pub const PENDING: &str = "pending";
    /// Delivered.
    pub const DELIVERED: &str = "delivered";
    /// No more attempts: the schedule ran out, or it cannot be sent.
    pub const FAILED: &str = "failed";
    /// The endpoint was disabled before it went.
    pub const DISABLED: &str = "disabled";
}

/// Delivery channels.
pub mod channel {
    /// A Standard Webhooks POST.
    pub const WEBHOOK: &str = "webhook";
    /// An email.
    pub const EMAIL: &str = "email";
}

/// What ingesting a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Notifications written.
    pub notifications: usize,
    /// Deliveries queued.
    pub deliveries: usize,
}

/// A failing webhook is disabled after this long.
pub const FAILING_FOR: chrono::Duration = chrono::Duration::days(5);

/// The notify store.
#[async_trait::async_trait]
pub trait NotifyStore: Send + Sync + 'static {
    /// Applies plans, in order, in one transaction: notifications (once per
    /// id, under the users' preferences), their unread counts and their
    /// deliveries (email ones only when `email` says the fleet sends mail).
    async fn ingest(&self, plans: &[Plan], email: bool, now: DateTime<Utc>) -> anyhow::Result<Ingested>;
    /// A user's notifications before `before` (`(created_us, id)`), newest
    /// first, and the unread count.
    async fn feed(
        &self,
        user_id: Uuid,
        unread_only: bool,
        before: (i64, Uuid),
        limit: i64,
    ) -> anyhow::Result<(Vec<NotificationRow>, i64)>;
    /// Marks one of the user's notifications read; false when the user has
    /// no such notification.
    async fn mark_read(&self, user_id: Uuid, id: Uuid, now: DateTime<Utc>) -> anyhow::Result<bool>;
    /// Marks all of the user's notifications read; how many were unread.
    async fn mark_all_read(&self, user_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<u64>;
    /// The user's account as notify knows it (the defaults if unknown).
    async fn account(&self, user_id: Uuid) -> anyhow::Result<Account>;
    /// Replaces the user's preferences. A changed webhook URL takes
    /// `new_secret`; any URL set resumes stopped deliveries. The account
    /// after, and whether the secret was set.
    async fn set_preferences(&self, user_id: Uuid, new: &NewPreferences) -> anyhow::Result<(Account, bool)>;
    /// Sets a new signing secret, the old one signing too until
    /// `previous_until`; false when the user has no webhook.
    async fn rotate_secret(&self, user_id: Uuid, secret: &str, previous_until: DateTime<Utc>) -> anyhow::Result<bool>;
    /// A user's deliveries before `before`, newest first.
    async fn deliveries(&self, user_id: Uuid, before: (i64, Uuid), limit: i64) -> anyhow::Result<Vec<DeliveryRow>>;
    /// Takes at most `limit` deliveries due at `now` for an attempt, no
    /// other taker getting them before `lease_until`.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<Claimed>>;
    /// Records attempts. A failed webhook attempt of an endpoint failing for
    /// [`FAILING_FOR`] disables it as `disable_webhook` does: its pending
    /// deliveries close and the user is told in-app. Whose webhooks stopped.
    async fn finish(&self, attempts: &[Attempted], now: DateTime<Utc>) -> anyhow::Result<Vec<Uuid>>;
    /// When the next delivery is due, if any is.
    async fn next_due(&self) -> anyhow::Result<Option<DateTime<Utc>>>;
}

/// The store on `db`.
pub fn notify_store(db: &Db) -> Arc<dyn NotifyStore> {
    match db {
        Db::Postgres(pool) => Arc::new(SqlNotifyStore::new(pool.clone())),
        Db::Sqlite(pool) => Arc::new(SqlNotifyStore::new(pool.clone())),
    }
}
