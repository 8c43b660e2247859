-- Failed logins to emails without an account, counted like an account's so
-- that a lockout answers alike whether the email exists or not. Keyed by the
-- SHA-256 of the normalized email: strangers' addresses are not kept.
CREATE TABLE unknown_login_failures (
    email_key    BYTEA PRIMARY KEY,
    failed_count BIGINT NOT NULL,
    locked_until TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX unknown_login_failures_by_age ON unknown_login_failures (updated_at);
