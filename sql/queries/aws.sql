-- name: create_aws_staging
-- The samples one AWS reading made of one meter, COPYed here, and the resources it listed
-- without a sample (`at` and `value` NULL); dropped at commit.
DROP TABLE IF EXISTS stage_aws, aws_resource, aws_sample;
CREATE TEMP TABLE stage_aws (
    natural_id text NOT NULL, name text, instance_guid text, details jsonb NOT NULL,
    at timestamptz, value bigint,
    CHECK ((at IS NULL) = (value IS NULL))
) ON COMMIT DROP;

-- name: copy_stage_aws
-- COPY target for one sample: a gauge's value from `at` on, or a counter's sum for the hour
-- starting at `at`; or a resource listed without a sample (both NULL).
COPY stage_aws (natural_id, name, instance_guid, details, at, value) FROM STDIN

-- name: insert_aws_reading
-- The reading itself, whatever its outcome; `covers` is the span a daily or counted reading
-- settled (its samples there are final).
INSERT INTO billing.reading (meter, source, taken_at, status, resources, error, dagster_run_id,
                             covers)
VALUES (%(meter)s, 'aws', %(taken_at)s, %(status)s, %(resources)s, %(error)s, %(run_id)s,
        %(covers)s)
RETURNING id;

-- name: attribute_aws_resources
-- Each staged AWS resource's CF service instance, named by its `Instance GUID` tag, and so its
-- space; its kind is the meter's own (priced) kind, or a stub that holds the usage for the
-- billing team: `untagged` (no tag) or `unknown-instance` (a tag no landed instance has).
CREATE TEMP TABLE aws_resource ON COMMIT DROP AS
SELECT DISTINCT ON (s.natural_id)
       s.natural_id, s.name, s.instance_guid, si.space_guid,
       s.details || jsonb_build_object('instance_guid', s.instance_guid) AS details,
       CASE WHEN s.instance_guid IS NULL THEN 'untagged'
            WHEN si.id IS NULL THEN 'unknown-instance'
            ELSE %(kind)s END AS kind_natural_id
  FROM stage_aws s
  LEFT JOIN billing.resource si
         ON si.meter = 'cfservices' AND si.natural_id = lower(s.instance_guid)
 ORDER BY s.natural_id, s.at DESC NULLS LAST;

-- name: insert_aws_kinds
-- The kinds the reading's resources fall in; one the catalog has not named is a stub, flagged
-- as unknown like any other (untagged and unknown-instance always are).
INSERT INTO billing.resource_kind (meter, natural_id, name, first_seen_at)
SELECT DISTINCT %(meter)s, kind_natural_id, NULL::text, %(taken_at)s::timestamptz
  FROM aws_resource
ON CONFLICT (meter, natural_id) DO NOTHING
RETURNING natural_id;

-- name: upsert_aws_resources
-- Create the AWS resources seen for the first time; refresh name, space and tags of the others
-- (an instance landed later attributes its resource from then on).
INSERT INTO billing.resource AS r (meter, natural_id, name, space_guid, details, first_seen_at)
SELECT %(meter)s, natural_id, name, space_guid, details, %(taken_at)s FROM aws_resource
ON CONFLICT (meter, natural_id) DO UPDATE
   SET name = coalesce(EXCLUDED.name, r.name),
       space_guid = coalesce(EXCLUDED.space_guid, r.space_guid),
       details = EXCLUDED.details
 WHERE r.name IS DISTINCT FROM coalesce(EXCLUDED.name, r.name)
    OR r.space_guid IS DISTINCT FROM coalesce(EXCLUDED.space_guid, r.space_guid)
    OR r.details IS DISTINCT FROM EXCLUDED.details;

-- name: resolve_aws_samples
-- Each staged sample with its resource's and kind's ids (after upsert_aws_resources), for the
-- observation or count insert below.
CREATE TEMP TABLE aws_sample ON COMMIT DROP AS
SELECT r.id AS resource_id, k.id AS kind_id, s.at, s.value
  FROM stage_aws s
  JOIN aws_resource a ON a.natural_id = s.natural_id
  JOIN billing.resource r ON r.meter = %(meter)s AND r.natural_id = s.natural_id
  JOIN billing.resource_kind k ON k.meter = %(meter)s AND k.natural_id = a.kind_natural_id
 WHERE s.at IS NOT NULL;

-- name: insert_aws_observations
-- A gauge's samples as observations: the value holds from `at` until the resource's next one.
-- A sample read again unchanged (a day re-read while it settles) adds nothing. A sampled
-- gauge's reading (`repeats_known`: sizes read now, never corrected afterwards) also skips a
-- size equal to the resource's newest known one; a daily sample does not, since a later
-- correction of the day before would then be carried over the skipped day.
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT s.resource_id, s.at, %(reading_id)s, s.kind_id, s.value
  FROM aws_sample s
 WHERE NOT (%(repeats_known)s AND EXISTS (
        SELECT 1 FROM billing.resource_state st
         WHERE st.resource_id = s.resource_id AND st.observed_at <= s.at
           AND st.rate = s.value AND st.resource_kind_id = s.kind_id))
   AND NOT EXISTS (
        SELECT 1
          FROM (SELECT o.rate, o.resource_kind_id FROM billing.observation o
                 WHERE o.resource_id = s.resource_id AND o.observed_at = s.at
                 ORDER BY o.seq DESC LIMIT 1) same
         WHERE same.rate = s.value AND same.resource_kind_id = s.kind_id);

-- name: insert_sampled_absences
-- After a complete reading of a sampled gauge, a resource it held above zero that is no longer
-- listed (an RDS instance or a domain deleted) holds 0 from this reading on.
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT r.id, %(taken_at)s, %(reading_id)s, last.resource_kind_id, 0
  FROM billing.resource r
 CROSS JOIN LATERAL (
        SELECT o.rate, o.resource_kind_id FROM billing.observation o
         WHERE o.resource_id = r.id AND o.observed_at <= %(taken_at)s
         ORDER BY o.observed_at DESC, o.seq DESC LIMIT 1) last
 WHERE r.meter = %(meter)s AND last.rate > 0
   AND NOT EXISTS (SELECT 1 FROM stage_aws s WHERE s.natural_id = r.natural_id);

-- name: insert_daily_absences
-- For each day a complete daily reading settled, a resource with no sample that day (a bucket
-- deleted or emptied) holds 0 from the day's start, if it held more before.
INSERT INTO billing.observation (resource_id, observed_at, reading_id, resource_kind_id, rate)
SELECT r.id, d.day, %(reading_id)s, last.resource_kind_id, 0
  FROM billing.resource r
 CROSS JOIN generate_series(%(settled_from)s::timestamptz,
                            %(settled_to)s::timestamptz - interval '1 day',
                            interval '1 day') AS d (day)
 CROSS JOIN LATERAL (
        SELECT o.rate, o.resource_kind_id FROM billing.observation o
         WHERE o.resource_id = r.id AND o.observed_at <= d.day
         ORDER BY o.observed_at DESC, o.seq DESC LIMIT 1) last
 WHERE r.meter = %(meter)s AND last.rate > 0
   AND NOT EXISTS (SELECT 1 FROM stage_aws s WHERE s.natural_id = r.natural_id AND s.at = d.day);

-- name: insert_counted_usage
-- A counter's hourly sums, each as this reading found it; an hour read again with the same sum
-- adds nothing (the newest reading's sum is the hour's value).
INSERT INTO billing.counted_usage (resource_id, hour_start, reading_id, resource_kind_id, value)
SELECT s.resource_id, s.at, %(reading_id)s, s.kind_id, s.value
  FROM aws_sample s
 WHERE NOT EXISTS (
        SELECT 1
          FROM (SELECT c.value, c.resource_kind_id FROM billing.counted_usage c
                  JOIN billing.reading rd ON rd.id = c.reading_id
                 WHERE c.resource_id = s.resource_id AND c.hour_start = s.at
                 ORDER BY rd.taken_at DESC, c.reading_id DESC LIMIT 1) newest
         WHERE newest.value = s.value AND newest.resource_kind_id = s.kind_id);

-- name: known_aws_resources
-- A meter's resources seen since `since` (first listed, or with usage) and the Instance GUID
-- they were tagged with, so that a reading also asks CloudWatch about those no longer listed
-- (a bucket deleted yesterday still has samples), attributed as they were.
SELECT r.natural_id, r.details ->> 'instance_guid' AS instance_guid
  FROM billing.resource r
 WHERE r.meter = %(meter)s
   AND (r.first_seen_at >= %(since)s
        OR EXISTS (SELECT 1 FROM billing.observation o
                 WHERE o.resource_id = r.id AND o.observed_at >= %(since)s)
        OR EXISTS (SELECT 1 FROM billing.counted_usage c
                    WHERE c.resource_id = r.id AND c.hour_start >= %(since)s));

-- name: aws_reading_summary
-- What one landed reading holds, for logs and Dagster metadata: resources, the unit total of
-- its samples, and the resources left unattributed (untagged or naming an unknown instance).
SELECT count(*) AS resources,
       count(*) FILTER (WHERE kind_natural_id = 'untagged') AS untagged,
       count(*) FILTER (WHERE kind_natural_id = 'unknown-instance') AS unknown_instance,
       coalesce(jsonb_agg(jsonb_build_object('resource', natural_id, 'kind', kind_natural_id,
                                             'instance_guid', instance_guid)
                          ORDER BY natural_id)
                FILTER (WHERE kind_natural_id IN ('untagged', 'unknown-instance')),
                '[]'::jsonb) AS unattributed
  FROM aws_resource;

-- name: metered_services_by_customer
-- Each customer's usage of the AWS meters in a window, in the meter's natural unit (GiB-hours
-- of storage, GiB-days of S3, sends, MiB of attachments) and the exact microcredits priced;
-- usage of no customer (an org no customer owns, or unattributed AWS resources) under NULL.
SELECT hp.customer_id, k.meter, m.unit,
       sum(hp.quantity) AS quantity,
       round(sum(hp.amount_microcredits))::bigint AS microcredits,
       count(DISTINCT hp.hour_start) AS hours
  FROM billing.hourly_posting hp
  JOIN billing.resource_kind k ON k.id = hp.resource_kind_id
  JOIN billing.meter m ON m.name = k.meter
 WHERE m.basis <> 'events'
   AND hp.hour_start >= %(window_start)s AND hp.hour_start < %(window_end)s
 GROUP BY hp.customer_id, k.meter, m.unit
 ORDER BY hp.customer_id NULLS LAST, k.meter;
