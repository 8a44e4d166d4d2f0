-- Grants, robots, enrollment, bindings and what robots report (PostgreSQL; the same schema as
-- migrations/sqlite/003-access.sql; "user" is quoted: unquoted it is a PostgreSQL keyword).

CREATE TABLE grants (
  id              TEXT PRIMARY KEY,
  "user"          TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
  keystore        TEXT NOT NULL REFERENCES keystores (name) ON DELETE CASCADE,
  pattern         TEXT NOT NULL,
  capabilities    TEXT NOT NULL,       -- JSON array, validated against the closed set when written
  robot_selector  TEXT,                -- JSON object or NULL
  created_by      TEXT NOT NULL,
  created_at      TEXT NOT NULL
);
CREATE INDEX grants_user ON grants ("user");

CREATE TABLE robots (
  name             TEXT PRIMARY KEY,
  labels           TEXT NOT NULL,      -- JSON object
  public_key       TEXT,               -- SPKI PEM of the device key; NULL until enrolled
  key_id           TEXT,               -- SHA-256 of the SPKI DER; robot tokens carry it
  enrolled_at      TEXT,
  agent_version    TEXT,
  created_at       TEXT NOT NULL,
  updated_at       TEXT NOT NULL
);

CREATE TABLE enrollment_tokens (
  token_hash   TEXT PRIMARY KEY,       -- SHA-256 of the token; the token itself is never stored
  robot        TEXT NOT NULL REFERENCES robots (name) ON DELETE CASCADE,
  expires_at   TEXT NOT NULL,
  used_at      TEXT,
  created_by   TEXT NOT NULL,
  created_at   TEXT NOT NULL
);

CREATE TABLE used_assertions (
  jti          TEXT PRIMARY KEY,
  robot        TEXT NOT NULL,
  expires_at   TEXT NOT NULL
);
CREATE INDEX used_assertions_expiry ON used_assertions (expires_at);

CREATE TABLE bindings (
  id           TEXT PRIMARY KEY,
  keystore     TEXT NOT NULL,
  enclave      TEXT NOT NULL,
  robot        TEXT REFERENCES robots (name) ON DELETE CASCADE,
  selector     TEXT,                   -- JSON object; exactly one of robot / selector is set
  -- The grant that allowed a member to bind (NULL: an admin did). Deleting the grant removes the binding.
  grant_id     TEXT REFERENCES grants (id) ON DELETE CASCADE,
  created_by   TEXT NOT NULL,
  created_at   TEXT NOT NULL,
  FOREIGN KEY (keystore, enclave) REFERENCES enclaves (keystore, path) ON DELETE CASCADE,
  CHECK ((robot IS NULL) <> (selector IS NULL))
);
CREATE INDEX bindings_robot ON bindings (robot);
CREATE INDEX bindings_enclave ON bindings (keystore, enclave);

CREATE TABLE robot_reports (
  robot          TEXT PRIMARY KEY REFERENCES robots (name) ON DELETE CASCADE,
  revision       TEXT,
  filesystem     TEXT,
  clock_skew_ms  INTEGER,
  agent_version  TEXT,
  enclaves       TEXT,                 -- JSON: what the agent holds, with expiry
  reported_at    TEXT NOT NULL,
  last_seen_at   TEXT NOT NULL
);
