-- The activity log: one row per event about a user, keyed by the event's
-- id, so a redelivered event inserts nothing. Times are microseconds since
-- the Unix epoch on both backends, so ranges and days compute alike.
CREATE TABLE activity (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    kind        TEXT NOT NULL,
    occurred_us BIGINT NOT NULL,
    ip          TEXT NOT NULL,
    user_agent  TEXT NOT NULL,
    details     TEXT NOT NULL
);
-- A user's page, newest first, and its keyset cursor (occurred_us, id).
CREATE INDEX activity_user_time ON activity (user_id, occurred_us DESC, id DESC);
-- The same for one kind, and the per-kind counts of the user figures.
CREATE INDEX activity_user_kind_time ON activity (user_id, kind, occurred_us DESC, id DESC);
-- Retention and the fleet overview read by time.
CREATE INDEX activity_time ON activity (occurred_us);

-- Entries per user, UTC day (days since the epoch) and kind, kept with the
-- log in the same transaction: counts and daily figures read a few rows
-- however long a user's history is.
CREATE TABLE activity_days (
    user_id  UUID NOT NULL,
    day      BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    entries  BIGINT NOT NULL,
    PRIMARY KEY (user_id, day, kind)
);
-- The fleet's figures per day, and retention.
CREATE INDEX activity_days_day ON activity_days (day, kind);

-- Sessions as their events describe them.
CREATE TABLE sessions (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    user_agent  TEXT NOT NULL,
    started_us  BIGINT NOT NULL,
    ended_us    BIGINT,
    end_reason  TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Accounts whose creation was seen, for the fleet's figures.
CREATE TABLE accounts (
    user_id     UUID PRIMARY KEY,
    created_us  BIGINT NOT NULL
);

-- Users whose data was erased: a late or redelivered event of theirs is
-- not projected again.
CREATE TABLE erased_users (
    user_id    UUID PRIMARY KEY,
    erased_us  BIGINT NOT NULL
);
