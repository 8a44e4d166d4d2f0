-- Permissions envelopes on grants, enclaves whose default permissions come from one, and enrollment tokens
-- that may replace an enrolled robot's device key.

-- JSON {"publish":[...],"subscribe":[...]} of DDS topic patterns, or NULL (unbounded).
ALTER TABLE grants ADD COLUMN permissions_envelope TEXT;

-- 'envelope': the enclave had no policy and was made by a member, so its permissions are their grant's
-- envelope (empty: deny all) instead of sros2's allow-all. NULL: as permissions_source says.
ALTER TABLE enclaves ADD COLUMN default_scope TEXT CHECK (default_scope IS NULL OR default_scope = 'envelope');

-- 1: an administrator asked for re-enrollment; only such a token may replace an existing device key.
ALTER TABLE enrollment_tokens ADD COLUMN reenroll INTEGER NOT NULL DEFAULT 0 CHECK (reenroll IN (0, 1));
