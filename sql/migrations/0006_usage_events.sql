-- Usage events as Cloud Foundry wrote them, kept forever (CF keeps them ~31 days). Each is
-- landed once (by guid) and becomes an observation of its resource. `landed_seq` keeps the
-- API order, which is the order events happened (their timestamps may disagree slightly).

CREATE TABLE billing.app_usage_event (
    guid text PRIMARY KEY,
    landed_seq bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL,
    state text,
    previous_state text,
    app_guid text,
    app_name text,
    process_guid text,
    process_type text,
    space_guid text,
    space_name text,
    org_guid text,
    instance_count integer,
    previous_instance_count integer,
    memory_in_mb integer,
    previous_memory_in_mb integer,
    reading_id bigint NOT NULL REFERENCES billing.reading (id)
);
CREATE INDEX app_usage_event_created_at ON billing.app_usage_event (created_at);

CREATE TABLE billing.service_usage_event (
    guid text PRIMARY KEY,
    landed_seq bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL,
    state text,
    service_instance_guid text,
    service_instance_name text,
    service_instance_type text,
    service_plan_guid text,
    service_plan_name text,
    service_offering_name text,
    service_broker_name text,
    space_guid text,
    space_name text,
    org_guid text,
    reading_id bigint NOT NULL REFERENCES billing.reading (id)
);
CREATE INDEX service_usage_event_created_at ON billing.service_usage_event (created_at);

-- Where each stream's incremental read stands: the guid to read after, and the instant up to
-- which every change of the stream is known.
CREATE TABLE billing.event_cursor (
    stream text PRIMARY KEY,
    after_guid text NOT NULL,
    after_created_at timestamptz NOT NULL,
    covered_to timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- An events reading knows every change of its meter inside `covers`; together with a base
-- state (a complete snapshot at or before the start of the coverage), hours inside it are
-- known exactly.
ALTER TABLE billing.reading ADD COLUMN covers tstzrange;
CREATE INDEX reading_events_covers ON billing.reading USING gist (meter, covers)
    WHERE source = 'events';

-- The latest landed event of a resource bounds the time of the next one (API order wins).
CREATE INDEX app_usage_event_process ON billing.app_usage_event (process_guid, created_at);
CREATE INDEX service_usage_event_instance
    ON billing.service_usage_event (service_instance_guid, created_at);
