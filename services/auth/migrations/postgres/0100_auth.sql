CREATE TABLE credentials (
    user_id       UUID PRIMARY KEY,
    password_hash TEXT NOT NULL,
    -- Consecutive failed attempts; an attempt counts before it is verified.
    failed_count  BIGINT NOT NULL DEFAULT 0,
    locked_until  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    revoke_reason TEXT,
    ip            TEXT NOT NULL,
    user_agent    TEXT NOT NULL,
    amr           TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- One family per session: every refresh token ever issued for it, hashed.
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- A key is published (JWKS) from created_at and signs from active_from, so
-- that every verifier has fetched it before the first token it signs.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BYTEA NOT NULL,
    public_key  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    active_from TIMESTAMPTZ NOT NULL
);
