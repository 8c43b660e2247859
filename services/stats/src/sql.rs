//! The statements that read the activity log, named so that a test can ask
//! PostgreSQL how it runs each one: every one must be served by an index.

/// Columns of an entry.
macro_rules! entry_columns {
    () => {
        "id, kind, occurred_us, ip, user_agent, details"
    };
}

/// A page of a user's entries before `($3, $4)`, from `$2`: `$1` user, `$5` limit.
pub const PAGE: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM activity WHERE user_id = $1 AND occurred_us >= $2 \
     AND (occurred_us, id) < ($3, $4) ORDER BY occurred_us DESC, id DESC LIMIT $5"
);

/// [`PAGE`] of one kind, `$6`.
pub const PAGE_OF_KIND: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM activity WHERE user_id = $1 AND kind = $6 AND occurred_us >= $2 \
     AND (occurred_us, id) < ($3, $4) ORDER BY occurred_us DESC, id DESC LIMIT $5"
);

/// A user's (`$1`) entries per day (`$4` µs) in `[$2, $3)`.
pub const DAILY: &str = "SELECT occurred_us / $4 AS day, COUNT(*) FROM activity \
     WHERE user_id = $1 AND occurred_us >= $2 AND occurred_us < $3 GROUP BY day ORDER BY day";

/// [`DAILY`] of one kind, `$5`.
pub const DAILY_OF_KIND: &str = "SELECT occurred_us / $4 AS day, COUNT(*) FROM activity \
     WHERE user_id = $1 AND kind = $5 AND occurred_us >= $2 AND occurred_us < $3 GROUP BY day ORDER BY day";

/// A user's (`$1`) count, latest and earliest of one kind (`$2`).
pub const OF_KIND: &str = "SELECT COUNT(*), MAX(occurred_us), MIN(occurred_us) FROM activity \
     WHERE user_id = $1 AND kind = $2";

/// A user's (`$1`) entries.
pub const COUNT: &str = "SELECT COUNT(*) FROM activity WHERE user_id = $1";

/// Users with an entry of kind `$2` since `$1`.
pub const ACTIVE_USERS: &str = "SELECT COUNT(DISTINCT user_id) FROM activity WHERE occurred_us >= $1 AND kind = $2";

/// Logins (`$4`) and failed logins (`$5`) per day (`$3` µs) in `[$1, $2)`.
pub const FLEET_DAYS: &str = "SELECT occurred_us / $3 AS day, \
     CAST(SUM(CASE WHEN kind = $4 THEN 1 ELSE 0 END) AS BIGINT), \
     CAST(SUM(CASE WHEN kind = $5 THEN 1 ELSE 0 END) AS BIGINT) \
     FROM activity WHERE occurred_us >= $1 AND occurred_us < $2 AND kind IN ($4, $5) \
     GROUP BY day ORDER BY day";

/// At most `$2` entries older than `$1`.
pub const PRUNE: &str = "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE occurred_us < $1 LIMIT $2)";

/// A user's (`$1`) entries, erased.
pub const ERASE: &str = "DELETE FROM activity WHERE user_id = $1";
