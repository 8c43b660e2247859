-- What the transfer service owns: a record of every export it ran, for
-- audit and for the operator. Never the exported data itself. Times are
-- microseconds since the Unix epoch.
CREATE TABLE exports (
    id               BLOB PRIMARY KEY,
    user_id          BLOB NOT NULL,
    -- Who asked: the user themselves, an administrator (their ids), or a
    -- service (`service:<name>`, the operator commands).
    requested_by     TEXT NOT NULL,
    format           TEXT NOT NULL,
    -- running, completed or failed.
    status           TEXT NOT NULL,
    activity_entries INTEGER NOT NULL,
    started_us       INTEGER NOT NULL,
    finished_us      INTEGER
);
CREATE INDEX exports_user ON exports (user_id, started_us);
