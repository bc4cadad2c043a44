-- Which landed data each hour was measured from, so that data landing later for an hour
-- already measured (usage events committed late at CF, an S3 day's sample published after its
-- hours were measured, a CloudWatch sum that grew after its hour settled) can be found and the
-- hour measured again (remeasure_sensor). `measured_through` is the newest reading id the
-- derivation could see when it began: every reading with a greater id landed after it.
-- Hours derived before this migration have none and are left as they are.
ALTER TABLE billing.hour_coverage ADD COLUMN measured_through bigint;
CREATE INDEX hour_coverage_measured_through ON billing.hour_coverage (measured_through);
