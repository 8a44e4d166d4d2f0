-- When each revoked certificate expires. A CRL lists a serial until a week past that (RFC 5280 lets an entry
-- go once its certificate has expired; the week covers robots whose clock lags): per-robot identities are
-- revoked at every agent restart, and without this the CRL, which every bundle of the keystore carries, would
-- grow with every reboot for as long as the enclaves live. NULL: not known (imported CRLs, revocations recorded
-- before this column), listed for as long as the CA lives.
ALTER TABLE revocations ADD COLUMN not_after TEXT;
