-- hlsgate store, version 4 (PostgreSQL): viewer sessions seen by the edges. Unix milliseconds.
CREATE TABLE IF NOT EXISTS viewer_sessions (
    id         TEXT    PRIMARY KEY,                  -- the token's session id, hex
    stream_id  TEXT    NOT NULL,
    ip         TEXT    NOT NULL,
    user_agent TEXT    NOT NULL,
    edge       TEXT    NOT NULL,                     -- the edge that saw it last
    first_seen BIGINT  NOT NULL,
    last_seen  BIGINT  NOT NULL,
    bytes      BIGINT  NOT NULL,
    revoked_at BIGINT                                -- set by DELETE /api/viewers/{id}
);
CREATE INDEX IF NOT EXISTS viewer_sessions_by_stream ON viewer_sessions (stream_id, last_seen);
CREATE INDEX IF NOT EXISTS viewer_sessions_by_revocation ON viewer_sessions (revoked_at);
