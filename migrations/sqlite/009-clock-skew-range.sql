-- A robot may report a clock skew of up to a year (3.2e10 ms). SQLite's INTEGER holds 64 bits already; this
-- file keeps the two dialects' histories alike (migrations/postgres/009 widens the column there).
SELECT 1;
