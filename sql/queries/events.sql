-- name: create_event_staging
-- One page of usage events, in API order (pos); both streams' tables exist for every page.
-- `new`: the event was landed by this page (set by the landing, read by the steps after it).
DROP TABLE IF EXISTS stage_app_event;
CREATE TEMP TABLE stage_app_event (
    pos integer NOT NULL, guid text NOT NULL, created_at timestamptz NOT NULL, state text,
    previous_state text, app_guid text, app_name text, process_guid text, process_type text,
    space_guid text, space_name text, org_guid text, instance_count integer,
    previous_instance_count integer, memory_in_mb integer, previous_memory_in_mb integer,
    new boolean NOT NULL DEFAULT false
) ON COMMIT DROP;
DROP TABLE IF EXISTS stage_service_event;
CREATE TEMP TABLE stage_service_event (
    pos integer NOT NULL, guid text NOT NULL, created_at timestamptz NOT NULL, state text,
    service_instance_guid text, service_instance_name text, service_instance_type text,
    service_plan_guid text, service_plan_name text, service_offering_name text,
    service_broker_name text, space_guid text, space_name text, org_guid text,
    new boolean NOT NULL DEFAULT false
) ON COMMIT DROP;

-- name: copy_stage_app_event
-- COPY target for one page of app usage events.
COPY stage_app_event (pos, guid, created_at, state, previous_state, app_guid, app_name,
                      process_guid, process_type, space_guid, space_name, org_guid,
                      instance_count, previous_instance_count, memory_in_mb,
                      previous_memory_in_mb) FROM STDIN

-- name: copy_stage_service_event
-- COPY target for one page of service usage events.
COPY stage_service_event (pos, guid, created_at, state, service_instance_guid,
                          service_instance_name, service_instance_type, service_plan_guid,
                          service_plan_name, service_offering_name, service_broker_name,
                          space_guid, space_name, org_guid) FROM STDIN

-- name: insert_events_reading
-- The reading one page of events makes: the changes of `meter` known inside `covers`.
INSERT INTO billing.reading
       (meter, source, taken_at, status, resources, error, dagster_run_id, covers)
VALUES (%(meter)s, 'events', %(taken_at)s, %(status)s, %(events)s, %(error)s, %(run_id)s,
        %(covers)s)
RETURNING id;

-- name: land_app_events
-- Land a page of app usage events once each (by guid) and mark the staged rows landed now
-- (`new`), so the steps after it read the page, not the landed table by guid again.
WITH new_events AS (
    INSERT INTO billing.app_usage_event
           (guid, created_at, state, previous_state, app_guid, app_name, process_guid,
            process_type, space_guid, space_name, org_guid, instance_count,
            previous_instance_count, memory_in_mb, previous_memory_in_mb, reading_id)
    SELECT guid, created_at, state, previous_state, app_guid, app_name, process_guid,
           process_type, space_guid, space_name, org_guid, instance_count,
           previous_instance_count, memory_in_mb, previous_memory_in_mb, %(reading_id)s
      FROM stage_app_event
     ORDER BY pos
    ON CONFLICT (guid) DO NOTHING
    RETURNING guid
),
marked AS (
    UPDATE stage_app_event s SET new = true FROM new_events n WHERE s.guid = n.guid
)
SELECT count(*) AS new_events FROM new_events;

-- name: ensure_event_orgs_and_spaces
-- Orgs and spaces named in the page's events: stubs for orgs (events carry no org name),
-- spaces with their name and org; a stub space gets the event's name. Those already known
-- (named, with their org) are left out before the insert, not refused one by one by it.
WITH events AS (
    SELECT space_guid, space_name, org_guid FROM stage_app_event
    UNION ALL
    SELECT space_guid, space_name, org_guid FROM stage_service_event
),
orgs AS (
    INSERT INTO billing.cf_org (guid, name, first_seen_at, last_seen_at)
    SELECT DISTINCT org_guid, NULL::text, %(taken_at)s::timestamptz, %(taken_at)s::timestamptz
      FROM events e
     WHERE org_guid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM billing.cf_org o WHERE o.guid = e.org_guid)
    ON CONFLICT (guid) DO NOTHING
)
INSERT INTO billing.cf_space AS sp (guid, org_guid, name, first_seen_at, last_seen_at)
SELECT DISTINCT ON (space_guid) space_guid, org_guid, space_name, %(taken_at)s, %(taken_at)s
  FROM events e
 WHERE space_guid IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM billing.cf_space known
                    WHERE known.guid = e.space_guid AND known.name IS NOT NULL
                      AND known.org_guid IS NOT NULL)
ON CONFLICT (guid) DO UPDATE
   SET name = coalesce(sp.name, EXCLUDED.name), org_guid = coalesce(sp.org_guid, EXCLUDED.org_guid)
 WHERE sp.name IS NULL OR sp.org_guid IS NULL;

-- name: ensure_event_processes
-- Processes first seen in the page's new events become resources (known ones are left out
-- before the insert). A statement of its own: the observations that join to these rows are
-- inserted by the next statement, which sees them (a later CTE of the same statement would
-- not).
INSERT INTO billing.resource (meter, natural_id, name, space_guid, details, first_seen_at)
SELECT DISTINCT ON (process_guid) 'cfapps', process_guid, app_name || '/' || process_type,
       space_guid, jsonb_build_object('app_guid', app_guid, 'process_type', process_type),
       created_at
  FROM stage_app_event s
 WHERE s.new AND process_guid IS NOT NULL AND state IN ('STARTED', 'STOPPED')
   AND NOT EXISTS (SELECT 1 FROM billing.resource r
                    WHERE r.meter = 'cfapps' AND r.natural_id = s.process_guid)
 ORDER BY process_guid, pos
ON CONFLICT (meter, natural_id) DO NOTHING;

-- name: app_event_observations
-- Each new STARTED/STOPPED event of this reading becomes an observation of its process:
-- STARTED uses instances x memory, STOPPED nothing. An event's time is never before an
-- earlier event of the same process (API order wins over clocks).
WITH mapped AS (
    SELECT r.id AS resource_id, s.pos, s.created_at, s.process_guid,
           CASE WHEN s.state = 'STARTED' THEN s.instance_count::bigint * s.memory_in_mb
                ELSE 0 END AS rate
      FROM stage_app_event s
      JOIN billing.resource r ON r.meter = 'cfapps' AND r.natural_id = s.process_guid
     WHERE s.new AND s.state IN ('STARTED', 'STOPPED')
),
timed AS (
    SELECT m.*, greatest(max(m.created_at) OVER (PARTITION BY m.resource_id ORDER BY m.pos),
                         coalesce(earlier.created_at, '-infinity')) AS observed_at
      FROM mapped m
      LEFT JOIN LATERAL (
            SELECT max(e.created_at) AS created_at FROM billing.app_usage_event e
             WHERE e.process_guid = m.process_guid AND e.reading_id <> %(reading_id)s
      ) earlier ON true
),
skewed AS (
    INSERT INTO billing.uncertain_usage (meter, resource_id, during, reason, reading_id)
    SELECT 'cfapps', resource_id,
           tstzrange(created_at, observed_at + (observed_at - created_at)),
           'an event stamped before the event it follows (a controller''s clock): its time '
           || 'is known only to within the disagreement', %(reading_id)s
      FROM timed WHERE observed_at > created_at
)
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT t.resource_id, t.observed_at, %(reading_id)s, k.id, t.rate
  FROM timed t
  JOIN billing.resource_kind k ON k.meter = 'cfapps' AND k.natural_id = 'app-memory'
 ORDER BY t.pos;

-- name: land_service_events
-- Land a page of service usage events once each (by guid) and mark the staged rows landed now
-- (`new`).
WITH new_events AS (
    INSERT INTO billing.service_usage_event
           (guid, created_at, state, service_instance_guid, service_instance_name,
            service_instance_type, service_plan_guid, service_plan_name, service_offering_name,
            service_broker_name, space_guid, space_name, org_guid, reading_id)
    SELECT guid, created_at, state, service_instance_guid, service_instance_name,
           service_instance_type, service_plan_guid, service_plan_name, service_offering_name,
           service_broker_name, space_guid, space_name, org_guid, %(reading_id)s
      FROM stage_service_event
     ORDER BY pos
    ON CONFLICT (guid) DO NOTHING
    RETURNING guid
),
marked AS (
    UPDATE stage_service_event s SET new = true FROM new_events n WHERE s.guid = n.guid
)
SELECT count(*) AS new_events FROM new_events;

-- name: ensure_event_plans_and_instances
-- Plans named in the page's events become kinds (a stub kind gets its name), managed instances
-- first seen in its new events resources (neither part reads the other's rows; known ones are
-- left out before the insert). A statement of its own, before the observations that join
-- to them.
WITH kinds AS (
    INSERT INTO billing.resource_kind AS k (meter, natural_id, name, details, first_seen_at)
    SELECT DISTINCT ON (service_plan_guid) 'cfservices', service_plan_guid,
           service_offering_name || '/' || service_plan_name,
           jsonb_build_object('service_offering', service_offering_name,
                              'service_plan', service_plan_name),
           created_at
      FROM stage_service_event s
     WHERE service_instance_type = 'managed_service_instance' AND service_plan_guid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM billing.resource_kind known
                        WHERE known.meter = 'cfservices'
                          AND known.natural_id = s.service_plan_guid AND known.name IS NOT NULL)
     ORDER BY service_plan_guid, pos
    ON CONFLICT (meter, natural_id) DO UPDATE SET name = EXCLUDED.name WHERE k.name IS NULL
)
INSERT INTO billing.resource (meter, natural_id, name, space_guid, details, first_seen_at)
SELECT DISTINCT ON (service_instance_guid) 'cfservices', service_instance_guid,
       service_instance_name, space_guid, '{}'::jsonb, created_at
  FROM stage_service_event s
 WHERE s.new AND service_instance_type = 'managed_service_instance'
   AND NOT EXISTS (SELECT 1 FROM billing.resource r
                    WHERE r.meter = 'cfservices' AND r.natural_id = s.service_instance_guid)
 ORDER BY service_instance_guid, pos
ON CONFLICT (meter, natural_id) DO NOTHING;

-- name: service_event_observations
-- Each new event of a managed instance becomes an observation: CREATED/UPDATED present on the
-- event's plan, DELETED gone. User-provided instances have no plan and are not billed.
WITH mapped AS (
    SELECT r.id AS resource_id, s.pos, s.created_at, s.service_instance_guid,
           s.service_plan_guid, CASE WHEN s.state = 'DELETED' THEN 0 ELSE 1 END AS rate
      FROM stage_service_event s
      JOIN billing.resource r
        ON r.meter = 'cfservices' AND r.natural_id = s.service_instance_guid
     WHERE s.new AND s.service_instance_type = 'managed_service_instance'
       AND s.state IN ('CREATED', 'UPDATED', 'DELETED')
),
timed AS (
    SELECT m.*, greatest(max(m.created_at) OVER (PARTITION BY m.resource_id ORDER BY m.pos),
                         coalesce(earlier.created_at, '-infinity')) AS observed_at
      FROM mapped m
      LEFT JOIN LATERAL (
            SELECT max(e.created_at) AS created_at FROM billing.service_usage_event e
             WHERE e.service_instance_guid = m.service_instance_guid
               AND e.reading_id <> %(reading_id)s
      ) earlier ON true
),
skewed AS (
    INSERT INTO billing.uncertain_usage (meter, resource_id, during, reason, reading_id)
    SELECT 'cfservices', resource_id,
           tstzrange(created_at, observed_at + (observed_at - created_at)),
           'an event stamped before the event it follows (a controller''s clock): its time '
           || 'is known only to within the disagreement', %(reading_id)s
      FROM timed WHERE observed_at > created_at
)
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT t.resource_id, t.observed_at, %(reading_id)s, k.id, t.rate
  FROM timed t
  JOIN billing.resource_kind k
    ON k.meter = 'cfservices' AND k.natural_id = coalesce(t.service_plan_guid, 'no-plan')
 ORDER BY t.pos;

-- name: insert_history_reading
-- The state rebuilt at the oldest retained event of a stream: every change from there to the
-- base snapshot is landed, so that span is covered.
INSERT INTO billing.reading
       (meter, source, taken_at, status, resources, error, dagster_run_id, covers)
VALUES (%(meter)s, 'history', %(oldest)s, 'complete', 0, NULL, %(run_id)s,
        tstzrange(%(oldest)s, %(base_at)s))
RETURNING id;

-- name: stage_rebuild_known
-- What is known of a meter's resources without their retained events, for the rebuild below:
-- each one's state at the base snapshot's instant (its last observation then: what the
-- snapshot read, or the state it repeated, or rate 0 from the snapshot's absences for one it no
-- longer listed), where that state or the one believed at the oldest retained event is in use.
-- Dropped at the end of the rebuild's transaction.
CREATE TEMP TABLE rebuild_known ON COMMIT DROP AS
SELECT r.id AS resource_id, at_base.rate, at_base.resource_kind_id
  FROM billing.resource r
 CROSS JOIN LATERAL (
        SELECT o.rate, o.resource_kind_id FROM billing.observation o
         WHERE o.resource_id = r.id AND o.observed_at <= %(base_at)s
         ORDER BY o.observed_at DESC, o.seq DESC LIMIT 1) at_base
  LEFT JOIN LATERAL (
        SELECT o.rate FROM billing.observation o
         WHERE o.resource_id = r.id AND o.observed_at <= %(oldest)s
         ORDER BY o.observed_at DESC, o.seq DESC LIMIT 1) at_oldest ON true
 WHERE r.meter = %(meter)s AND (at_base.rate > 0 OR at_oldest.rate > 0);

-- name: rebuild_app_history
-- The state of every process at the oldest retained app event (%(oldest)s), as observations
-- of the history reading: a process with a retained event after that instant was in its first
-- such event's previous state (previous instances x previous memory if it was STARTED); one
-- with none is as rebuild_known says. A process whose first retained event is at that very
-- instant needs nothing: its event says its state from there on.
WITH first_event AS (
    SELECT DISTINCT ON (e.process_guid) e.process_guid, e.created_at, e.previous_state,
           e.previous_instance_count, e.previous_memory_in_mb
      FROM billing.app_usage_event e
     WHERE e.created_at >= %(oldest)s AND e.process_guid IS NOT NULL
       AND e.state IN ('STARTED', 'STOPPED')
     ORDER BY e.process_guid, e.landed_seq
),
with_events AS (
    SELECT r.id AS resource_id, f.created_at,
           CASE WHEN f.previous_state = 'STARTED'
                THEN f.previous_instance_count::bigint * f.previous_memory_in_mb
                ELSE 0 END AS rate
      FROM first_event f
      JOIN billing.resource r ON r.meter = 'cfapps' AND r.natural_id = f.process_guid
),
state AS (
    SELECT resource_id, rate FROM with_events WHERE created_at > %(oldest)s
    UNION ALL
    SELECT k.resource_id, k.rate FROM rebuild_known k
     WHERE NOT EXISTS (SELECT 1 FROM with_events w WHERE w.resource_id = k.resource_id)
)
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT s.resource_id, %(oldest)s, %(reading_id)s, k.id, s.rate
  FROM state s
  JOIN billing.resource_kind k ON k.meter = 'cfapps' AND k.natural_id = 'app-memory';

-- name: ensure_unknown_plan_kind
-- The kind of an instance's usage while its plan is not known (before its first retained
-- re-plan): a stub without a name, so it is flagged and held, never priced as another plan.
INSERT INTO billing.resource_kind (meter, natural_id, name, details, first_seen_at)
VALUES ('cfservices', 'unknown-plan', NULL,
        '{"why": "the plan an instance had before its first retained re-plan event"}',
        %(oldest)s)
ON CONFLICT (meter, natural_id) DO NOTHING;

-- name: rebuild_service_history
-- The state of every managed instance at the oldest retained service event (%(oldest)s): one
-- whose first retained event after that instant is CREATED did not exist yet; DELETED, it was
-- present on that event's plan; UPDATED, it was present on a plan no retained event names
-- (kind unknown-plan, and its usage until that event is recorded as uncertain). One with no
-- retained event is as rebuild_known says.
WITH first_event AS (
    SELECT DISTINCT ON (e.service_instance_guid) e.service_instance_guid, e.created_at,
           e.state, e.service_plan_guid
      FROM billing.service_usage_event e
     WHERE e.created_at >= %(oldest)s
       AND e.service_instance_type = 'managed_service_instance'
     ORDER BY e.service_instance_guid, e.landed_seq
),
with_events AS (
    SELECT r.id AS resource_id, f.created_at, f.state,
           CASE WHEN f.state = 'CREATED' THEN 0 ELSE 1 END AS rate,
           CASE WHEN f.state = 'UPDATED' THEN 'unknown-plan'
                ELSE coalesce(f.service_plan_guid, 'no-plan') END AS kind
      FROM first_event f
      JOIN billing.resource r
        ON r.meter = 'cfservices' AND r.natural_id = f.service_instance_guid
),
uncertain AS (
    INSERT INTO billing.uncertain_usage (meter, resource_id, during, reason, reading_id)
    SELECT 'cfservices', resource_id, tstzrange(%(oldest)s, created_at),
           'plan unknown before the first retained re-plan of an instance older than CF''s '
           || 'retained usage events', %(reading_id)s
      FROM with_events WHERE state = 'UPDATED' AND created_at > %(oldest)s
),
state AS (
    SELECT w.resource_id, w.rate, k.id AS resource_kind_id
      FROM with_events w
      JOIN billing.resource_kind k ON k.meter = 'cfservices' AND k.natural_id = w.kind
     WHERE w.created_at > %(oldest)s
    UNION ALL
    SELECT k.resource_id, k.rate, k.resource_kind_id FROM rebuild_known k
     WHERE NOT EXISTS (SELECT 1 FROM with_events w WHERE w.resource_id = k.resource_id)
)
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT resource_id, %(oldest)s, %(reading_id)s, resource_kind_id, rate FROM state;

-- name: get_event_cursor
-- Where a stream's incremental read stands.
SELECT after_guid, after_created_at, covered_to FROM billing.event_cursor WHERE stream = %(stream)s;

-- name: set_event_cursor
-- Move a stream's cursor (in the same transaction as the page it follows).
INSERT INTO billing.event_cursor (stream, after_guid, after_created_at, covered_to, updated_at)
VALUES (%(stream)s, %(after_guid)s, %(after_created_at)s, %(covered_to)s, now())
ON CONFLICT (stream) DO UPDATE
   SET after_guid = EXCLUDED.after_guid, after_created_at = EXCLUDED.after_created_at,
       covered_to = EXCLUDED.covered_to, updated_at = now();

-- name: reset_event_cursor
-- Forget a stream's cursor (its event was purged at CF); the next read starts from the oldest.
DELETE FROM billing.event_cursor WHERE stream = %(stream)s;
