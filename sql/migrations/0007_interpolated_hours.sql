-- A flagged hour (gap or carried) may be filled, when the billing team asks for it, from the
-- complete hours on either side of it; such rows and hours are marked as interpolated.
ALTER TABLE billing.hourly_measurement
    ADD COLUMN interpolated boolean NOT NULL DEFAULT false;

ALTER TABLE billing.hour_coverage DROP CONSTRAINT hour_coverage_status_check;
ALTER TABLE billing.hour_coverage ADD CONSTRAINT hour_coverage_status_check
    CHECK (status IN ('complete', 'carried', 'gap', 'interpolated'));
