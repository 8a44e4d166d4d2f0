-- Per-robot enclave identities (PostgreSQL; as migrations/sqlite/005-identities.sql, where the why is told).

ALTER TABLE keystores ADD COLUMN identity_mode TEXT NOT NULL DEFAULT 'shared'
  CHECK (identity_mode IN ('shared', 'per-robot'));
ALTER TABLE keystores ADD COLUMN crl_pending INTEGER NOT NULL DEFAULT 0 CHECK (crl_pending IN (0, 1));

ALTER TABLE enclaves ADD COLUMN identity_mode TEXT NOT NULL DEFAULT 'shared'
  CHECK (identity_mode IN ('shared', 'per-robot'));

-- The promise of per-robot mode, held by the database too: no enclave private key is ever stored for it.
CREATE FUNCTION enclaves_per_robot_no_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'a per-robot enclave has no server-side key';
END;
$$;
CREATE TRIGGER enclaves_per_robot_no_key_insert BEFORE INSERT ON enclaves
  FOR EACH ROW WHEN (NEW.identity_mode = 'per-robot' AND NEW.key_sealed <> '')
  EXECUTE FUNCTION enclaves_per_robot_no_key();
CREATE TRIGGER enclaves_per_robot_no_key_update BEFORE UPDATE ON enclaves
  FOR EACH ROW WHEN (NEW.identity_mode = 'per-robot' AND NEW.key_sealed <> '')
  EXECUTE FUNCTION enclaves_per_robot_no_key();

CREATE TABLE robot_identities (
  keystore       TEXT NOT NULL REFERENCES keystores (name) ON DELETE CASCADE,
  serial         TEXT NOT NULL,
  robot          TEXT NOT NULL REFERENCES robots (name) ON DELETE CASCADE,
  enclave        TEXT NOT NULL,
  spki_sha256    TEXT NOT NULL,
  cert_pem       TEXT NOT NULL,
  not_before     TEXT NOT NULL,
  not_after      TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('live', 'superseded', 'revoked')),
  issued_at      TEXT NOT NULL,
  superseded_at  TEXT,
  revoked_at     TEXT,
  PRIMARY KEY (keystore, serial),
  FOREIGN KEY (keystore, enclave) REFERENCES enclaves (keystore, path) ON DELETE CASCADE
);
CREATE INDEX robot_identities_robot ON robot_identities (robot, keystore, enclave, status);
CREATE INDEX robot_identities_enclave ON robot_identities (keystore, enclave, status);

CREATE TABLE identity_keys_seen (
  spki_sha256    TEXT PRIMARY KEY,
  first_seen_at  TEXT NOT NULL
);
