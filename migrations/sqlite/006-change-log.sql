-- What changed, in commit order, kept for a while: every process serving robots (replicas, workers) follows
-- it to drop its caches and answer its long polls, and one that was away catches up from where it stopped.
-- A row is written in the same transaction as the change it describes, so a change is never lost nor
-- announced before it is visible. Rows older than the retention are trimmed.

CREATE TABLE change_log (
  id      INTEGER PRIMARY KEY,     -- previous id + 1, given under the writer's lock: commit order
  at      TEXT NOT NULL,
  change  TEXT NOT NULL            -- JSON (server/events/changes.ts: Change)
) STRICT;
CREATE INDEX change_log_at ON change_log (at);
