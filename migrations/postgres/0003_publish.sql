-- hlsgate store, version 3 (PostgreSQL): publishers. Times are unix milliseconds.
-- One stream key per stream, stored as a keyed hash (the key is shown once).
CREATE TABLE IF NOT EXISTS stream_keys (
    stream_id  BIGINT  PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
    key_hash   TEXT    NOT NULL UNIQUE,              -- HMAC-SHA256 of the key, hex
    created_at BIGINT  NOT NULL
);

-- Streams being published now (nginx-rtmp / SRS callbacks).
CREATE TABLE IF NOT EXISTS stream_live (
    stream_id    BIGINT  PRIMARY KEY REFERENCES streams (id) ON DELETE CASCADE,
    publisher_ip TEXT    NOT NULL,
    client_id    TEXT    NOT NULL,
    live_since   BIGINT  NOT NULL
);
