//! The statements that read the activity log and its counts, named so that
//! a test can ask PostgreSQL how it runs each one: every one must be served
//! by an index.

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

/// A user's (`$1`) entries after `($2, $3)`, oldest first, `$4` at most:
/// the export's keyset pages.
pub const EXPORT_PAGE: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM activity WHERE user_id = $1 AND (occurred_us, id) > ($2, $3) \
     ORDER BY occurred_us, id LIMIT $4"
);

/// A user's (`$1`) entries per day in `[$2, $3)` (days since the epoch).
pub const DAILY: &str = "SELECT day, CAST(SUM(entries) AS BIGINT) FROM activity_days \
     WHERE user_id = $1 AND day >= $2 AND day < $3 GROUP BY day ORDER BY day";

/// [`DAILY`] of one kind, `$4`.
pub const DAILY_OF_KIND: &str = "SELECT day, entries FROM activity_days \
     WHERE user_id = $1 AND day >= $2 AND day < $3 AND kind = $4 ORDER BY day";

/// A user's (`$1`) entries of one kind (`$2`).
pub const COUNT_OF_KIND: &str = "SELECT CAST(COALESCE(SUM(entries), 0) AS BIGINT) FROM activity_days \
     WHERE user_id = $1 AND kind = $2";

/// A user's (`$1`) entries.
pub const COUNT: &str = "SELECT CAST(COALESCE(SUM(entries), 0) AS BIGINT) FROM activity_days WHERE user_id = $1";

/// A user's (`$1`) latest entry of one kind (`$2`).
pub const LATEST_OF_KIND: &str = "SELECT occurred_us FROM activity WHERE user_id = $1 AND kind = $2 \
     ORDER BY occurred_us DESC, id DESC LIMIT 1";

/// A user's (`$1`) earliest entry of one kind (`$2`).
pub const EARLIEST_OF_KIND: &str = "SELECT occurred_us FROM activity WHERE user_id = $1 AND kind = $2 \
     ORDER BY occurred_us ASC, id ASC LIMIT 1";

/// Users with an entry of kind `$2` since `$1`.
pub const ACTIVE_USERS: &str = "SELECT COUNT(DISTINCT user_id) FROM activity WHERE occurred_us >= $1 AND kind = $2";

/// Logins (`$3`) and failed logins (`$4`) per day in `[$1, $2)` (days).
pub const FLEET_DAYS: &str = "SELECT day, \
     CAST(SUM(CASE WHEN kind = $3 THEN entries ELSE 0 END) AS BIGINT), \
     CAST(SUM(CASE WHEN kind = $4 THEN entries ELSE 0 END) AS BIGINT) \
     FROM activity_days WHERE day >= $1 AND day < $2 AND kind IN ($3, $4) \
     GROUP BY day ORDER BY day";

/// At most `$2` entries older than `$1`.
pub const PRUNE: &str = "DELETE FROM activity WHERE (user_id, id) IN \
     (SELECT user_id, id FROM activity WHERE occurred_us < $1 LIMIT $2)";

/// A user's (`$1`) entries, erased.
pub const ERASE: &str = "DELETE FROM activity WHERE user_id = $1";

/// A user's (`$1`) counts, erased.
pub const ERASE_DAYS: &str = "DELETE FROM activity_days WHERE user_id = $1";

/// The counts of days before `$1` (days since the epoch): retention keeps
/// whole days of counts, so the first retained day may count a few entries
/// already pruned.
pub const PRUNE_DAYS: &str = "DELETE FROM activity_days WHERE day < $1";
