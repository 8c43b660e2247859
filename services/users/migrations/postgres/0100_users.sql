CREATE TABLE users (
    id           UUID PRIMARY KEY,
    -- Normalised (trimmed, lowercase), so uniqueness is case-insensitive.
    email        TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    status       TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    version      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
