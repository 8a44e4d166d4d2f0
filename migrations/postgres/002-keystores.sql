-- Keystores (trust domains) and their enclaves (PostgreSQL; as migrations/sqlite/002-keystores.sql). Every
-- private key column holds a sealed secret (server/secrets/seal.ts), never PEM.

CREATE TABLE keystores (
  name                 TEXT PRIMARY KEY,
  domain_id            INTEGER NOT NULL,
  shared_ca            INTEGER NOT NULL CHECK (shared_ca IN (0, 1)),
  identity_ca_cert     TEXT NOT NULL,
  identity_ca_key      TEXT,            -- sealed; NULL for an import without CA keys ("import-only")
  permissions_ca_cert  TEXT NOT NULL,
  permissions_ca_key   TEXT,            -- sealed; NULL for import-only
  governance_xml       TEXT NOT NULL,
  governance_p7s       TEXT NOT NULL,
  crl_pem              TEXT,            -- NULL until the first revocation
  crl_number           INTEGER NOT NULL DEFAULT 0,
  validity_days        INTEGER NOT NULL, -- default for new enclaves
  backdate_seconds     INTEGER NOT NULL,
  origin               TEXT NOT NULL CHECK (origin IN ('generated', 'imported')),
  created_at           TEXT NOT NULL,
  updated_at           TEXT NOT NULL
);

CREATE TABLE enclaves (
  keystore         TEXT NOT NULL REFERENCES keystores (name) ON DELETE CASCADE,
  path             TEXT NOT NULL,
  cert_pem         TEXT NOT NULL,
  key_sealed       TEXT NOT NULL,
  serial           TEXT NOT NULL,
  not_before       TEXT NOT NULL,
  not_after        TEXT NOT NULL,
  policy_xml       TEXT,               -- the sros2 policy (XIncludes resolved) when source = 'policy'
  -- Where the permissions came from. 'imported' permissions are kept rule for rule on rotation (only the
  -- validity changes): regenerating them from the allow-all default would silently widen them.
  permissions_source TEXT NOT NULL CHECK (permissions_source IN ('default', 'policy', 'imported')),
  permissions_xml  TEXT NOT NULL,
  permissions_p7s  TEXT NOT NULL,
  status           TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
  created_at       TEXT NOT NULL,
  updated_at       TEXT NOT NULL,
  PRIMARY KEY (keystore, path)
);

CREATE TABLE revocations (
  keystore     TEXT NOT NULL REFERENCES keystores (name) ON DELETE CASCADE,
  serial       TEXT NOT NULL,
  enclave      TEXT NOT NULL,
  revoked_at   TEXT NOT NULL,
  PRIMARY KEY (keystore, serial)
);
