-- Usage facts are written in bulk (an hourly snapshot of a 100k-app foundation is ~165k
-- observations; an hour of measurements ~140k rows). Per-row foreign-key checks tripled the
-- cost of landing them, and refreshing resource.last_seen_at rewrote every resource row every
-- hour. Both go: observations and measurements are only ever written by set-based statements
-- that join them to their resource, kind and reading, so the references hold by construction;
-- when a resource was last seen is what its observations say.

ALTER TABLE billing.observation
    DROP CONSTRAINT observation_resource_id_fkey,
    DROP CONSTRAINT observation_reading_id_fkey,
    DROP CONSTRAINT observation_resource_kind_id_fkey;

ALTER TABLE billing.hourly_measurement
    DROP CONSTRAINT hourly_measurement_resource_id_fkey,
    DROP CONSTRAINT hourly_measurement_resource_kind_id_fkey;

ALTER TABLE billing.resource DROP COLUMN last_seen_at;
