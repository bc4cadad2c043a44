-- What the landed data determines, resource by resource and hour by hour.
--
-- A 'history' reading is the state at the oldest usage event CF still held when a stream was
-- first read (or re-read after its cursor was purged), rebuilt from those events and the base
-- snapshot: a process's state before its first retained event is that event's previous state,
-- and a resource with no retained event kept the state the snapshot read throughout. Its
-- `covers` is the span from that event to the base snapshot: every change in it is landed.
ALTER TABLE billing.reading DROP CONSTRAINT reading_source_check;
ALTER TABLE billing.reading ADD CONSTRAINT reading_source_check
    CHECK (source IN ('snapshot', 'events', 'history'));

-- Where the landed data leaves one resource's usage uncertain for a while, and why: an event
-- stamped before the event it follows (a controller's clock), or an instance whose plan before
-- its first retained re-plan is unknown. Hours it overlaps are not called complete.
CREATE TABLE billing.uncertain_usage (
    meter text NOT NULL REFERENCES billing.meter (name),
    resource_id bigint NOT NULL REFERENCES billing.resource (id),
    during tstzrange NOT NULL CHECK (NOT isempty(during)),
    reason text NOT NULL,
    reading_id bigint NOT NULL REFERENCES billing.reading (id)
);
CREATE INDEX uncertain_usage_during ON billing.uncertain_usage USING gist (meter, during);

-- An hour is 'complete' only when usage events cover all of it (on top of a base snapshot or
-- of the rebuilt history) and no resource's usage in it is uncertain; 'uncertain' when they
-- cover it but some resources are uncertain; 'carried' when part of it is not covered by events
-- (the last known state is carried over those seconds); 'gap' when nothing is known at its
-- start. `basis` says what its values rest on, `reason` why it is not complete.
ALTER TABLE billing.hour_coverage DROP CONSTRAINT hour_coverage_status_check;
ALTER TABLE billing.hour_coverage ADD CONSTRAINT hour_coverage_status_check
    CHECK (status IN ('complete', 'uncertain', 'carried', 'gap', 'interpolated'));
ALTER TABLE billing.hour_coverage
    ADD COLUMN basis text CHECK (basis IN ('events', 'both', 'snapshot')),
    ADD COLUMN uncertain_resources integer NOT NULL DEFAULT 0,
    ADD COLUMN uncertain_resource_seconds bigint NOT NULL DEFAULT 0,
    ADD COLUMN reason text;

-- A stream whose read found no event old enough to read after still knows up to when it is
-- covered: its cursor then has no guid, and the next read starts from the oldest event.
ALTER TABLE billing.event_cursor
    ALTER COLUMN after_guid DROP NOT NULL,
    ALTER COLUMN after_created_at DROP NOT NULL;
