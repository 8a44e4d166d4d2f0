-- Per-robot enclave identities (issue 14): keys made on the robot, one certificate per robot and enclave.

-- 'shared': the server makes one key + certificate per enclave and every bound robot receives both (as sros2).
-- 'per-robot': the server never makes or stores an enclave key; each bound robot sends a CSR for its own key.
ALTER TABLE keystores ADD COLUMN identity_mode TEXT NOT NULL DEFAULT 'shared'
  CHECK (identity_mode IN ('shared', 'per-robot'));
-- 1 while revocations are recorded that the stored CRL does not list yet (robot re-issues are batched per
-- keystore, see server/keystores/crl.ts); a restart re-signs such CRLs before serving.
ALTER TABLE keystores ADD COLUMN crl_pending INTEGER NOT NULL DEFAULT 0 CHECK (crl_pending IN (0, 1));

-- A per-robot enclave keeps its path, validity and signed permissions (the permissions' subject_name is the
-- enclave's subject, so they serve every robot unchanged) but has no key and no certificate of its own:
-- cert_pem, key_sealed and serial are '' (the columns stay NOT NULL: relaxing that would mean rebuilding a
-- table others reference by foreign key).
ALTER TABLE enclaves ADD COLUMN identity_mode TEXT NOT NULL DEFAULT 'shared'
  CHECK (identity_mode IN ('shared', 'per-robot'));

-- The promise of per-robot mode, held by the database too: no enclave private key is ever stored for it.
CREATE TRIGGER enclaves_per_robot_no_key_insert BEFORE INSERT ON enclaves
  WHEN NEW.identity_mode = 'per-robot' AND NEW.key_sealed <> ''
BEGIN SELECT RAISE(ABORT, 'a per-robot enclave has no server-side key'); END;
CREATE TRIGGER enclaves_per_robot_no_key_update BEFORE UPDATE ON enclaves
  WHEN NEW.identity_mode = 'per-robot' AND NEW.key_sealed <> ''
BEGIN SELECT RAISE(ABORT, 'a per-robot enclave has no server-side key'); END;

-- One row per certificate issued to a robot for a per-robot enclave. Rows go with their robot and keystore;
-- the serials they revoked stay in `revocations` (and so in the CRL).
CREATE TABLE robot_identities (
  keystore       TEXT NOT NULL REFERENCES keystores (name) ON DELETE CASCADE,
  serial         TEXT NOT NULL,        -- upper-case hex, as inspectCertificate gives it
  robot          TEXT NOT NULL REFERENCES robots (name) ON DELETE CASCADE,
  enclave        TEXT NOT NULL,
  spki_sha256    TEXT NOT NULL,
  cert_pem       TEXT NOT NULL,        -- public: the robot's key never reaches the server
  not_before     TEXT NOT NULL,
  not_after      TEXT NOT NULL,
  status         TEXT NOT NULL CHECK (status IN ('live', 'superseded', 'revoked')),
  issued_at      TEXT NOT NULL,
  superseded_at  TEXT,
  revoked_at     TEXT,
  PRIMARY KEY (keystore, serial),
  FOREIGN KEY (keystore, enclave) REFERENCES enclaves (keystore, path) ON DELETE CASCADE
) STRICT;
CREATE INDEX robot_identities_robot ON robot_identities (robot, keystore, enclave, status);
CREATE INDEX robot_identities_enclave ON robot_identities (keystore, enclave, status);

-- Every public key a CSR ever carried (SHA-256 of its SPKI DER). Never deleted, not even with a keystore or a
-- robot: a key that was seen once is never certified again, so a copied key cannot be re-registered.
CREATE TABLE identity_keys_seen (
  spki_sha256    TEXT PRIMARY KEY,
  first_seen_at  TEXT NOT NULL
) STRICT;
