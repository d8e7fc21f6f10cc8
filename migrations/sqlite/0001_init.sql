-- hlsgate store, version 1 (SQLite). Times are unix milliseconds.
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused after a delete
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,                  -- argon2id PHC string
    created_at    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT    PRIMARY KEY,                  -- 32 hex digits, random
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ip         TEXT    NOT NULL,
    user_agent TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, created_at);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);

CREATE TABLE IF NOT EXISTS streams (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,    -- never reused: old tokens name ids
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    base_url   TEXT    NOT NULL,                     -- origin folder, no trailing `/`
    endpoint   TEXT    NOT NULL,                     -- playlist name below it
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS streams_by_user ON streams (user_id);
