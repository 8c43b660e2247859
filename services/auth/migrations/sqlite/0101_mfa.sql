-- Wrong second factors are counted apart from wrong passwords.
ALTER TABLE credentials ADD COLUMN mfa_failed_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE credentials ADD COLUMN mfa_locked_until TEXT;

-- The TOTP secret is sealed with the MFA key. 2FA is on once enabled_at is
-- set; last_step is the highest time step ever accepted, and no step at or
-- before it is accepted again.
CREATE TABLE totp_factors (
    user_id    BLOB PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at TEXT NOT NULL,
    enabled_at TEXT,
    last_step  INTEGER
);

-- Keyed hashes of the current set; a new set replaces the old.
CREATE TABLE backup_codes (
    user_id    BLOB NOT NULL,
    code_hash  BLOB NOT NULL,
    created_at TEXT NOT NULL,
    used_at    TEXT,
    PRIMARY KEY (user_id, code_hash)
);

-- A phone for SMS codes (sealed), and the code that verifies it.
CREATE TABLE sms_factors (
    user_id         BLOB PRIMARY KEY,
    phone           BLOB NOT NULL,
    created_at      TEXT NOT NULL,
    verified_at     TEXT,
    code_hash       BLOB,
    code_expires_at TEXT
);

-- The first step of a login with 2FA on: the mfa_token (hashed), good once
-- and briefly, and the SMS code sent for it, if any.
CREATE TABLE mfa_challenges (
    token_hash          BLOB PRIMARY KEY,
    user_id             BLOB NOT NULL,
    created_at          TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    consumed_at         TEXT,
    sms_code_hash       BLOB,
    sms_code_expires_at TEXT
);
CREATE INDEX mfa_challenges_by_user ON mfa_challenges (user_id);
