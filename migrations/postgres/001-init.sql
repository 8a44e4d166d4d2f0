-- Users, the audit chain and server settings (PostgreSQL; the same schema as migrations/sqlite/001-init.sql).

CREATE TABLE users (
  name          TEXT PRIMARY KEY,
  role          TEXT NOT NULL CHECK (role IN ('admin', 'member')),
  password_hash TEXT NOT NULL,
  -- Bumped on password change, demotion or deletion so tokens issued before stop working at once.
  token_epoch   INTEGER NOT NULL DEFAULT 0,
  created_at    TEXT NOT NULL,
  updated_at    TEXT NOT NULL
);

-- Ids are given by the writer (previous id + 1, under the audit head lock), never by a sequence: a sequence
-- hands out numbers outside the transaction, so concurrent writers could commit them out of chain order.
CREATE TABLE audit_log (
  id         BIGINT PRIMARY KEY,
  at         TEXT NOT NULL,
  actor      TEXT NOT NULL,
  actor_kind TEXT NOT NULL CHECK (actor_kind IN ('user', 'robot', 'anonymous', 'system')),
  action     TEXT NOT NULL,
  target     TEXT,
  result     TEXT NOT NULL CHECK (result IN ('success', 'failure', 'denied')),
  grant_id   TEXT,
  details    TEXT,
  prev_hash  TEXT NOT NULL,
  hash       TEXT NOT NULL
);

CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

-- Append-only at the SQL level too: a stray UPDATE or DELETE (or TRUNCATE) aborts. The database owner can still
-- drop these triggers, which is what the hash chain (GET /v1/audit/verify) detects.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
