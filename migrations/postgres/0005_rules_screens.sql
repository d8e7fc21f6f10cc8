-- hlsgate store, version 5 (PostgreSQL): where a stream may be watched from, and screens per
-- account. Unix milliseconds.
-- A user's stream's access rules and referrers: JSON lists ('' for none).
ALTER TABLE streams ADD COLUMN IF NOT EXISTS access_rules TEXT NOT NULL DEFAULT '';
ALTER TABLE streams ADD COLUMN IF NOT EXISTS referers TEXT NOT NULL DEFAULT '';
-- A user's own screen limit (NULL: admin.max_screens_per_user; never above it).
ALTER TABLE users ADD COLUMN IF NOT EXISTS max_screens BIGINT;
-- The account (user) whose credential a viewer session plays with, and why it was ended.
ALTER TABLE viewer_sessions ADD COLUMN IF NOT EXISTS account BIGINT;
ALTER TABLE viewer_sessions ADD COLUMN IF NOT EXISTS ended_reason TEXT;
CREATE INDEX IF NOT EXISTS viewer_sessions_by_account ON viewer_sessions (account, last_seen);
