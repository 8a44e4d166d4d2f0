-- What changed, in commit order (PostgreSQL; as migrations/sqlite/006-change-log.sql). Every replica follows
-- it: a NOTIFY on channel enclave_changes wakes them, and one that was away catches up from where it stopped.

CREATE TABLE change_log (
  id      BIGINT PRIMARY KEY,      -- previous id + 1, given under a transaction advisory lock: commit order
  at      TEXT NOT NULL,
  change  TEXT NOT NULL            -- JSON (server/events/changes.ts: Change)
);
CREATE INDEX change_log_at ON change_log (at);
