-- A record of every import that wrote something (a dry run writes
-- nothing, this included): who, into whose account, what it added.
CREATE TABLE imports (
    id                BLOB PRIMARY KEY,
    user_id           BLOB NOT NULL,
    requested_by      TEXT NOT NULL,
    format            TEXT NOT NULL,
    -- completed, or failed part way (a retry adds only what is missing).
    status            TEXT NOT NULL,
    profile_updated   INTEGER NOT NULL,
    activity_imported INTEGER NOT NULL,
    activity_skipped  INTEGER NOT NULL,
    finished_us       INTEGER NOT NULL
);
CREATE INDEX imports_user ON imports (user_id, finished_us);
