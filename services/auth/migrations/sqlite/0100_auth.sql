CREATE TABLE credentials (
    user_id       BLOB PRIMARY KEY,
    password_hash TEXT NOT NULL,
    -- Consecutive failed attempts; an attempt counts before it is verified.
    failed_count  INTEGER NOT NULL DEFAULT 0,
    locked_until  TEXT,
    updated_at    TEXT NOT NULL
);

CREATE TABLE sessions (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revoke_reason TEXT,
    ip            TEXT NOT NULL,
    user_agent    TEXT NOT NULL,
    amr           TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- One family per session: every refresh token ever issued for it, hashed.
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- A key is published (JWKS) from created_at and signs from active_from, so
-- that every verifier has fetched it before the first token it signs.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    active_from TEXT NOT NULL
);
