//! The statements the API reads with, named so that a test can ask
//! PostgreSQL how it runs each one: every one must be served by an index.

/// A user's (`$1`) notifications before `($2, $3)`, newest first, `$4` at most.
pub const FEED: &str = "SELECT id, kind, title, body, data, created_us, read_us FROM notifications \
     WHERE user_id = $1 AND (created_us, id) < ($2, $3) ORDER BY created_us DESC, id DESC LIMIT $4";

/// [`FEED`], the unread ones alone.
pub const FEED_UNREAD: &str = "SELECT id, kind, title, body, data, created_us, read_us FROM notifications \
     WHERE user_id = $1 AND read_us IS NULL AND (created_us, id) < ($2, $3) \
     ORDER BY created_us DESC, id DESC LIMIT $4";

/// A user's (`$1`) unread count.
pub const UNREAD: &str = "SELECT unread FROM accounts WHERE user_id = $1";

/// A user's (`$1`) deliveries before `($2, $3)`, newest first, `$4` at most.
pub const DELIVERIES: &str = "SELECT id, notification_id, channel, status, attempts, response_code, latency_ms, \
     error, created_us, last_attempt_us, next_attempt_us FROM deliveries \
     WHERE user_id = $1 AND (created_us, id) < ($2, $3) ORDER BY created_us DESC, id DESC LIMIT $4";

/// The deliveries due at `$1`, the longest due first, `$2` at most.
macro_rules! due {
    () => {
        "SELECT id FROM deliveries WHERE next_attempt_us <= $1 ORDER BY next_attempt_us LIMIT $2"
    };
}
pub(crate) use due;

/// [`due!`] as a statement of its own.
pub const DUE: &str = due!();

/// When the next delivery is due.
pub const NEXT_DUE: &str = "SELECT MIN(next_attempt_us) FROM deliveries WHERE next_attempt_us IS NOT NULL";
