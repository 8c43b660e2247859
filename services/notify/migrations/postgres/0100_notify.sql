-- What notify knows of an account: where to write, what the user asked for,
-- the webhook's state, and the unread count, kept in the same transaction
-- as the notifications it counts. Times are microseconds since the epoch.
CREATE TABLE accounts (
    user_id                  UUID PRIMARY KEY,
    email                    TEXT NOT NULL DEFAULT '',
    unread                   BIGINT NOT NULL DEFAULT 0,
    -- Whether any login was seen: the first one is no news.
    logged_in                BOOLEAN NOT NULL DEFAULT FALSE,
    email_enabled            BOOLEAN NOT NULL DEFAULT FALSE,
    -- The optional kinds switched off, a JSON array.
    muted                    TEXT NOT NULL DEFAULT '[]',
    webhook_url              TEXT NOT NULL DEFAULT '',
    webhook_secret           TEXT NOT NULL DEFAULT '',
    -- The secret before the last rotation, signed with until then.
    previous_secret          TEXT NOT NULL DEFAULT '',
    previous_secret_until_us BIGINT NOT NULL DEFAULT 0,
    -- The first failure of the current streak of failed deliveries.
    webhook_failing_since_us BIGINT,
    webhook_disabled_us      BIGINT,
    -- The account was deleted: nothing is kept of it again.
    erased_us                BIGINT
);

-- A notification's id is the id of the event it tells of: a redelivered
-- event inserts nothing.
CREATE TABLE notifications (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    read_us    BIGINT
);
-- A user's feed, newest first, and its keyset cursor (created_us, id).
CREATE INDEX notifications_feed ON notifications (user_id, created_us DESC, id DESC);
-- The unread ones alone.
CREATE INDEX notifications_unread ON notifications (user_id, created_us DESC, id DESC) WHERE read_us IS NULL;

-- The devices (user agent family) and networks (IPv4 /24, IPv6 /64) each
-- account logged in from.
CREATE TABLE devices (
    user_id       UUID NOT NULL,
    family        TEXT NOT NULL,
    network       TEXT NOT NULL,
    first_seen_us BIGINT NOT NULL,
    PRIMARY KEY (user_id, family, network)
);

-- Webhook and email messages, one row each, with their attempts' outcome:
-- the retry schedule lives here, not in memory, so a restart loses none.
CREATE TABLE deliveries (
    id              UUID PRIMARY KEY,
    user_id         UUID NOT NULL,
    notification_id UUID NOT NULL,
    channel         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    response_code   INTEGER NOT NULL DEFAULT 0,
    latency_ms      INTEGER NOT NULL DEFAULT 0,
    error           TEXT NOT NULL DEFAULT '',
    created_us      BIGINT NOT NULL,
    last_attempt_us BIGINT,
    -- When the next attempt is due (or a claimed attempt's lease ends);
    -- NULL once none is.
    next_attempt_us BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_us) WHERE next_attempt_us IS NOT NULL;
CREATE INDEX deliveries_user ON deliveries (user_id, created_us DESC, id DESC);
