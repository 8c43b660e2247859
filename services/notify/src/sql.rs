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

/// When the next delivery is due.
pub const NEXT_DUE: &str = "SELECT MIN(next_attempt_us) FROM deliveries WHERE next_attempt_us IS NOT NULL";
