-- hlsgate store, version 2 (PostgreSQL): token modes. Times are unix milliseconds.
-- Public keys users registered for JWT playback tokens (IVS ImportPlaybackKeyPair).
CREATE TABLE IF NOT EXISTS playback_keys (
    kid         TEXT    PRIMARY KEY,                 -- answered at registration
    user_id     BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    pem         TEXT    NOT NULL,                    -- public key, SPKI PEM
    fingerprint TEXT    NOT NULL,                    -- SHA-256 of the DER, hex
    created_at  BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS playback_keys_by_user ON playback_keys (user_id);

-- JWT viewer ids revoked per stream (IVS `aws:viewer-id`).
CREATE TABLE IF NOT EXISTS revoked_viewers (
    stream_id  TEXT    NOT NULL,
    viewer_id  TEXT    NOT NULL,
    revoked_at BIGINT  NOT NULL,
    PRIMARY KEY (stream_id, viewer_id)
);
