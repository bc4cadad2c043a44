-- name: create_snapshot_staging
-- Temporary tables that one snapshot is COPYed into; dropped at commit (and first, in case
-- the caller's transaction still holds them from an earlier landing).
DROP TABLE IF EXISTS stage_org, stage_space, stage_kind, stage_resource;
CREATE TEMP TABLE stage_org (guid text NOT NULL, name text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE stage_space (
    guid text NOT NULL, org_guid text, name text NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE stage_kind (
    meter text NOT NULL, natural_id text NOT NULL, name text NOT NULL, details jsonb NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE stage_resource (
    meter text NOT NULL, natural_id text NOT NULL, name text, space_guid text,
    details jsonb NOT NULL, kind_natural_id text NOT NULL, rate bigint NOT NULL
) ON COMMIT DROP;

-- name: analyze_snapshot_staging
-- Statistics for the planner: temporary tables are never analysed automatically.
ANALYZE stage_org;
ANALYZE stage_space;
ANALYZE stage_kind;
ANALYZE stage_resource;

-- name: copy_stage_org
-- COPY target for the organizations read.
COPY stage_org (guid, name) FROM STDIN

-- name: copy_stage_space
-- COPY target for the spaces read.
COPY stage_space (guid, org_guid, name) FROM STDIN

-- name: copy_stage_kind
-- COPY target for resource kinds whose names were read (service plans).
COPY stage_kind (meter, natural_id, name, details) FROM STDIN

-- name: copy_stage_resource
-- COPY target for every resource observed, with its kind and rate.
COPY stage_resource (meter, natural_id, name, space_guid, details, kind_natural_id, rate)
FROM STDIN

-- name: upsert_orgs
-- Refresh org names; an org first seen here is created, a stub gets its name.
INSERT INTO billing.cf_org AS o (guid, name, first_seen_at, last_seen_at)
SELECT DISTINCT ON (guid) guid, name, %(taken_at)s, %(taken_at)s FROM stage_org
ON CONFLICT (guid) DO UPDATE
   SET name = EXCLUDED.name, last_seen_at = greatest(o.last_seen_at, EXCLUDED.last_seen_at);

-- name: upsert_spaces
-- Refresh spaces; an org a space points at that we have never listed becomes a stub org.
WITH stub_orgs AS (
    INSERT INTO billing.cf_org (guid, name, first_seen_at, last_seen_at)
    SELECT DISTINCT s.org_guid, NULL::text, %(taken_at)s::timestamptz, %(taken_at)s::timestamptz
      FROM stage_space s
     WHERE s.org_guid IS NOT NULL
    ON CONFLICT (guid) DO NOTHING
)
INSERT INTO billing.cf_space AS sp (guid, org_guid, name, first_seen_at, last_seen_at)
SELECT DISTINCT ON (guid) guid, org_guid, name, %(taken_at)s, %(taken_at)s FROM stage_space
ON CONFLICT (guid) DO UPDATE
   SET name = EXCLUDED.name,
       org_guid = coalesce(EXCLUDED.org_guid, sp.org_guid),
       last_seen_at = greatest(sp.last_seen_at, EXCLUDED.last_seen_at);

-- name: insert_stub_spaces
-- A space a resource points at that is in no space listing: a stub, so the usage is kept.
INSERT INTO billing.cf_space (guid, org_guid, name, first_seen_at, last_seen_at)
SELECT DISTINCT r.space_guid, NULL::text, NULL::text, %(taken_at)s::timestamptz,
       %(taken_at)s::timestamptz
  FROM stage_resource r
 WHERE r.space_guid IS NOT NULL
ON CONFLICT (guid) DO NOTHING;

-- name: upsert_kinds
-- Name the resource kinds read (service plans); a stub kind gets its name.
INSERT INTO billing.resource_kind AS k (meter, natural_id, name, details, first_seen_at)
SELECT DISTINCT ON (meter, natural_id) meter, natural_id, name, details, %(taken_at)s
  FROM stage_kind
ON CONFLICT (meter, natural_id) DO UPDATE
   SET name = EXCLUDED.name, details = k.details || EXCLUDED.details;

-- name: insert_stub_kinds
-- A kind used by a resource but named nowhere: a stub (name NULL), flagged as unknown.
INSERT INTO billing.resource_kind (meter, natural_id, name, first_seen_at)
SELECT DISTINCT r.meter, r.kind_natural_id, NULL::text, %(taken_at)s::timestamptz
  FROM stage_resource r
ON CONFLICT (meter, natural_id) DO NOTHING
RETURNING meter, natural_id;

-- name: insert_new_resources
-- Create the resources observed for the first time.
INSERT INTO billing.resource (meter, natural_id, name, space_guid, details, first_seen_at)
SELECT DISTINCT ON (s.meter, s.natural_id)
       s.meter, s.natural_id, s.name, s.space_guid, s.details, %(taken_at)s
  FROM stage_resource s
 WHERE NOT EXISTS (SELECT 1 FROM billing.resource r
                    WHERE r.meter = s.meter AND r.natural_id = s.natural_id)
ON CONFLICT (meter, natural_id) DO NOTHING;

-- name: update_changed_resources
-- Refresh name, space and details of known resources, writing only the rows that changed.
UPDATE billing.resource r
   SET name = coalesce(s.name, r.name),
       space_guid = coalesce(s.space_guid, r.space_guid),
       details = s.details
  FROM stage_resource s
 WHERE r.meter = s.meter AND r.natural_id = s.natural_id
   AND (r.name IS DISTINCT FROM coalesce(s.name, r.name)
        OR r.space_guid IS DISTINCT FROM coalesce(s.space_guid, r.space_guid)
        OR r.details IS DISTINCT FROM s.details);

-- name: insert_reading
-- One reading per meter and snapshot, whatever its outcome.
INSERT INTO billing.reading (meter, source, taken_at, status, resources, error, dagster_run_id)
VALUES (%(meter)s, 'snapshot', %(taken_at)s, %(status)s, %(resources)s, %(error)s, %(run_id)s)
RETURNING id;

-- name: insert_observations
-- The observed state of the meter's resources at the snapshot's instant, where it differs from
-- what was known at that instant (billing.resource_state, when that is not newer than the
-- snapshot): a resource first seen, started, stopped, scaled or re-planned. A repeat of the
-- known state is not stored; the derivation carries that state forward all the same.
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT r.id, %(taken_at)s, %(reading_id)s, k.id, s.rate
  FROM stage_resource s
  JOIN billing.resource r ON r.meter = s.meter AND r.natural_id = s.natural_id
  JOIN billing.resource_kind k ON k.meter = s.meter AND k.natural_id = s.kind_natural_id
  LEFT JOIN billing.resource_state st ON st.resource_id = r.id
 WHERE s.meter = %(meter)s
   AND (st.resource_id IS NULL OR st.observed_at > %(taken_at)s
        OR st.resource_kind_id <> k.id OR st.rate <> s.rate);

-- name: insert_absence_observations
-- After a complete reading, a resource of the meter that was running and is no longer listed
-- has stopped or gone: record rate 0 from this instant. The candidates are the resources whose
-- newest state is running (or is newer than this snapshot: then the state at its instant is
-- looked up), less those the snapshot listed.
WITH candidates AS MATERIALIZED (
    SELECT st.resource_id
      FROM billing.resource_state st
      JOIN billing.resource r ON r.id = st.resource_id
     WHERE r.meter = %(meter)s AND (st.rate > 0 OR st.observed_at > %(taken_at)s)
    EXCEPT
    SELECT r.id
      FROM stage_resource s
      JOIN billing.resource r ON r.meter = s.meter AND r.natural_id = s.natural_id
     WHERE s.meter = %(meter)s
)
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT c.resource_id, %(taken_at)s, %(reading_id)s, last.resource_kind_id, 0
  FROM candidates c
 CROSS JOIN LATERAL (
        SELECT o.rate, o.resource_kind_id
          FROM billing.observation o
         WHERE o.resource_id = c.resource_id AND o.observed_at <= %(taken_at)s
         ORDER BY o.observed_at DESC, o.seq DESC
         LIMIT 1) last
 WHERE last.rate > 0;
