-- A robot may report a clock skew of up to a year (3.2e10 ms): INTEGER (32 bits) overflows past 24.8 days.
ALTER TABLE robot_reports ALTER COLUMN clock_skew_ms TYPE BIGINT;
