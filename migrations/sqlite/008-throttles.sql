-- Rate-limit state shared by every process on the database: login throttles (per address, per user and
-- address) and failure windows (enrollments, robot logins per address). With several replicas behind a
-- balancer, state held in memory would give an attacker one allowance per replica. `state` is the limiter's
-- own JSON; rows past `expires_at` (ms since the epoch) mean nothing and are swept.
CREATE TABLE throttles (
  key        TEXT PRIMARY KEY,
  state      TEXT NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX throttles_expires ON throttles (expires_at);
