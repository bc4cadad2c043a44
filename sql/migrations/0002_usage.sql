-- Usage: what was read from Cloud Foundry (readings), the metered things (resources), their
-- state over time (observations) and what that state integrates to per UTC hour (measurements).

-- One attempt to read one meter's state: a snapshot at an instant (events come later).
-- A failed or partial reading is kept: it is how gaps and partial hours are explained.
CREATE TABLE billing.reading (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter text NOT NULL REFERENCES billing.meter (name),
    source text NOT NULL CHECK (source IN ('snapshot', 'events')),
    taken_at timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('complete', 'partial', 'failed')),
    resources integer NOT NULL DEFAULT 0,     -- resources observed by this reading
    error text,                               -- why it is partial or failed
    dagster_run_id text,
    landed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reading_meter_taken_at ON billing.reading (meter, taken_at);

-- A metered thing: an app process (cfapps, by process guid) or a service instance
-- (cfservices, by instance guid).
CREATE TABLE billing.resource (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter text NOT NULL REFERENCES billing.meter (name),
    natural_id text NOT NULL,
    name text,
    space_guid text REFERENCES billing.cf_space (guid),
    details jsonb NOT NULL DEFAULT '{}',      -- e.g. app_guid, process_type
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    UNIQUE (meter, natural_id)
);
CREATE INDEX resource_space_guid ON billing.resource (space_guid);

-- From observed_at on, the resource uses `rate` units per second of the kind (MiB for app
-- memory, 1 for a present service instance); rate 0 means stopped or gone. Timestamps are whole
-- seconds, so integrating rates gives integer unit-seconds. `seq` orders observations of one
-- resource at the same second in the order they were landed.
CREATE TABLE billing.observation (
    resource_id bigint NOT NULL REFERENCES billing.resource (id),
    observed_at timestamptz NOT NULL
        CHECK (observed_at = date_trunc('second', observed_at)),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    reading_id bigint NOT NULL REFERENCES billing.reading (id),
    resource_kind_id bigint NOT NULL REFERENCES billing.resource_kind (id),
    rate bigint NOT NULL CHECK (rate >= 0),
    PRIMARY KEY (resource_id, observed_at, seq)
);
CREATE INDEX observation_observed_at ON billing.observation (observed_at);
CREATE INDEX observation_reading_id ON billing.observation (reading_id);

-- Usage of one resource of one kind in one UTC hour, in unit-seconds.
CREATE TABLE billing.hourly_measurement (
    hour_start timestamptz NOT NULL CHECK (hour_start = date_trunc('hour', hour_start)),
    resource_id bigint NOT NULL REFERENCES billing.resource (id),
    resource_kind_id bigint NOT NULL REFERENCES billing.resource_kind (id),
    value bigint NOT NULL CHECK (value >= 0),
    PRIMARY KEY (hour_start, resource_id, resource_kind_id)
);

-- How well an hour of one meter is known. 'gap': no complete reading at or before the hour's
-- start (uncovered_seconds says how much of the hour is unknown); 'carried': the state at the
-- start comes from a reading older than the configured bound; 'complete' otherwise.
CREATE TABLE billing.hour_coverage (
    hour_start timestamptz NOT NULL CHECK (hour_start = date_trunc('hour', hour_start)),
    meter text NOT NULL REFERENCES billing.meter (name),
    status text NOT NULL CHECK (status IN ('complete', 'carried', 'gap')),
    state_from timestamptz,                   -- newest complete reading at or before the start
    uncovered_seconds integer NOT NULL CHECK (uncovered_seconds BETWEEN 0 AND 3600),
    incomplete_readings integer NOT NULL,     -- partial or failed readings inside the hour
    PRIMARY KEY (hour_start, meter)
);
