-- Reference data: who the customers are, which Cloud Foundry orgs and spaces they own, what can
-- be metered (meters and resource kinds) and at what price. Loaded from the catalog files and
-- refreshed from Cloud Foundry; a row we learn about from usage before its details is a stub
-- (name NULL) so that the usage is kept and the gap is visible.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE billing.tier (
    name text PRIMARY KEY,
    credits_per_month bigint NOT NULL CHECK (credits_per_month >= 0)
);

CREATE TABLE billing.customer (
    id text PRIMARY KEY,                      -- stable id from the catalog, e.g. 'gsa-tts'
    name text NOT NULL,
    tier text REFERENCES billing.tier (name)
);

CREATE TABLE billing.cf_org (
    guid text PRIMARY KEY,
    name text,                                -- NULL: seen in usage, not yet in an org listing
    customer_id text REFERENCES billing.customer (id),
    is_stub boolean GENERATED ALWAYS AS (name IS NULL) STORED,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);

CREATE TABLE billing.cf_space (
    guid text PRIMARY KEY,
    org_guid text REFERENCES billing.cf_org (guid),   -- NULL only while the space is a stub
    name text,                                        -- NULL: not yet in a space listing
    is_stub boolean GENERATED ALWAYS AS (name IS NULL) STORED,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
CREATE INDEX cf_space_org_guid ON billing.cf_space (org_guid);

CREATE TABLE billing.meter (
    name text PRIMARY KEY,
    description text NOT NULL,
    unit text NOT NULL                        -- unit of a measurement's value
);
INSERT INTO billing.meter (name, description, unit) VALUES
    ('cfapps', 'Memory of running app processes (instances x memory_in_mb)', 'MiB-second'),
    ('cfservices', 'Presence of managed service instances, by service plan', 'instance-second');

-- What a price is attached to: cfapps has one kind (app memory); cfservices has one kind per
-- service plan, identified by the plan guid.
CREATE TABLE billing.resource_kind (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter text NOT NULL REFERENCES billing.meter (name),
    natural_id text NOT NULL,
    name text,                                -- NULL: seen in usage, no name known yet
    details jsonb NOT NULL DEFAULT '{}',      -- e.g. service_offering, service_plan
    is_stub boolean GENERATED ALWAYS AS (name IS NULL) STORED,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (meter, natural_id)
);
INSERT INTO billing.resource_kind (meter, natural_id, name)
VALUES ('cfapps', 'app-memory', 'App memory');

-- A price in microcredits per `unit` of the measurement's unit-seconds. Two prices of one kind
-- can never be valid at the same instant: the database refuses the overlap.
CREATE TABLE billing.price (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource_kind_id bigint NOT NULL REFERENCES billing.resource_kind (id),
    microcredits_per_unit bigint NOT NULL CHECK (microcredits_per_unit >= 0),
    unit bigint NOT NULL CHECK (unit > 0),
    valid_during tstzrange NOT NULL
        CHECK (NOT isempty(valid_during) AND NOT lower_inf(valid_during)),
    source text,                              -- catalog file and entry it came from
    CONSTRAINT price_no_overlap
        EXCLUDE USING gist (resource_kind_id WITH =, valid_during WITH &&)
);

-- Interagency agreements: credits bought for a period of performance (business dates, New York).
CREATE TABLE billing.iaa (
    id text PRIMARY KEY,                      -- agreement number
    customer_id text NOT NULL REFERENCES billing.customer (id),
    credits_microcredits bigint NOT NULL CHECK (credits_microcredits > 0),
    period_of_performance daterange NOT NULL CHECK (NOT isempty(period_of_performance)
        AND NOT lower_inf(period_of_performance) AND NOT upper_inf(period_of_performance))
);
