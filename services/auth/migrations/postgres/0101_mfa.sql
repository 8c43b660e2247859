-- Wrong second factors are counted apart from wrong passwords.
ALTER TABLE credentials ADD COLUMN mfa_failed_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE credentials ADD COLUMN mfa_locked_until TIMESTAMPTZ;

-- The TOTP secret is sealed with the MFA key. 2FA is on once enabled_at is
-- set; last_step is the highest time step ever accepted, and no step at or
-- before it is accepted again.
CREATE TABLE totp_factors (
    user_id    UUID PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    enabled_at TIMESTAMPTZ,
    last_step  BIGINT
);

-- Keyed hashes of the current set; a new set replaces the old.
CREATE TABLE backup_codes (
    user_id    UUID NOT NULL,
    code_hash  BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    PRIMARY KEY (user_id, code_hash)
);

-- A phone for SMS codes (sealed), and the code that verifies it.
CREATE TABLE sms_factors (
    user_id         UUID PRIMARY KEY,
    phone           BYTEA NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    verified_at     TIMESTAMPTZ,
    code_hash       BYTEA,
    code_expires_at TIMESTAMPTZ
);

-- The first step of a login with 2FA on: the mfa_token (hashed), good once
-- and briefly, and the SMS code sent for it, if any.
CREATE TABLE mfa_challenges (
    token_hash          BYTEA PRIMARY KEY,
    user_id             UUID NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL,
    consumed_at         TIMESTAMPTZ,
    sms_code_hash       BYTEA,
    sms_code_expires_at TIMESTAMPTZ
);
CREATE INDEX mfa_challenges_by_user ON mfa_challenges (user_id);
