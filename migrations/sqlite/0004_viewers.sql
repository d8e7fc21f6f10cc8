-- hlsgate store, version 4 (SQLite): viewer sessions seen by the edges. Unix milliseconds.
CREATE TABLE IF NOT EXISTS viewer_sessions (
    id         TEXT    PRIMARY KEY,                  -- the token's session id, hex
    stream_id  TEXT    NOT NULL,
    ip         TEXT    NOT NULL,
    user_agent TEXT    NOT NULL,
    edge       TEXT    NOT NULL,                     -- the edge that saw it last
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    revoked_at INTEGER                               -- set by DELETE /api/viewers/{id}
);
CREATE INDEX IF NOT EXISTS viewer_sessions_by_stream ON viewer_sessions (stream_id, last_seen);
CREATE INDEX IF NOT EXISTS viewer_sessions_by_revocation ON viewer_sessions (revoked_at);
