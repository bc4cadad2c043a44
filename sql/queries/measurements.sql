-- name: delete_measurements
-- Remove a window's measurements before they are derived again (same transaction).
DELETE FROM billing.hourly_measurement
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: derive_measurements
-- Integrate every resource's observed rate over each UTC hour of the window: the state at the
-- window's start (its last observation before it) carried forward, changed at each observation
-- inside the window. Segments are [observation, next observation of the same resource).
-- Written in the primary key's order, so that the table's pages hold one hour after another:
-- the index grows at its right edge instead of everywhere at once, and pricing reads an hour
-- from a few pages (bench/backfill.py, 744 hours of a 10k-app foundation, 10.2M rows: derived
-- in 116 s unordered, 68 s ordered; priced afterwards in 75 s, then 38 s).
INSERT INTO billing.hourly_measurement (hour_start, resource_id, resource_kind_id, value)
WITH hours AS (
    SELECT h AS hour_start, h + interval '1 hour' AS hour_end
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
),
start_state AS (
    -- a resource stopped or gone before the window with nothing observed since (its newest
    -- state is rate 0 from before the window: every app deleted since billing began) uses
    -- nothing in it and is not looked up, so an hour costs what is running, not what ever ran
    SELECT st.resource_id, last.observed_at, last.seq, last.resource_kind_id, last.rate
      FROM billing.resource_state st
     CROSS JOIN LATERAL (
            SELECT o.observed_at, o.seq, o.resource_kind_id, o.rate
              FROM billing.observation o
             WHERE o.resource_id = st.resource_id AND o.observed_at < %(window_start)s
             ORDER BY o.observed_at DESC, o.seq DESC
             LIMIT 1) last
     WHERE st.rate > 0 OR st.observed_at >= %(window_start)s
),
points AS (
    SELECT resource_id, observed_at, seq, resource_kind_id, rate FROM start_state
    UNION ALL
    SELECT resource_id, observed_at, seq, resource_kind_id, rate
      FROM billing.observation
     WHERE observed_at >= %(window_start)s AND observed_at < %(window_end)s
),
segments AS (
    SELECT resource_id, resource_kind_id, rate,
           greatest(observed_at, %(window_start)s::timestamptz) AS seg_start,
           coalesce(lead(observed_at) OVER (PARTITION BY resource_id ORDER BY observed_at, seq),
                    %(window_end)s::timestamptz) AS seg_end
      FROM points
)
SELECT h.hour_start, s.resource_id, s.resource_kind_id,
       sum(s.rate * extract(epoch FROM least(s.seg_end, h.hour_end)
                                        - greatest(s.seg_start, h.hour_start)))::bigint
  FROM segments s
  JOIN hours h ON s.seg_start < h.hour_end AND s.seg_end > h.hour_start
 WHERE s.rate > 0 AND s.seg_end > s.seg_start  -- a state that held for no time used nothing
 GROUP BY h.hour_start, s.resource_id, s.resource_kind_id
 ORDER BY h.hour_start, s.resource_id, s.resource_kind_id;

-- name: delete_coverage
-- Remove a window's coverage flags before they are derived again.
DELETE FROM billing.hour_coverage
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: newest_reading
-- The newest reading a derivation starting now can see (0 before the first landing).
SELECT coalesce(max(id), 0) AS id FROM billing.reading;

-- name: stamp_coverage
-- Record on a derived window's hours the newest reading their derivation could see.
UPDATE billing.hour_coverage SET measured_through = %(measured_through)s
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: derive_coverage
-- For each hour and meter, what the landed data determines. Usage events cover a span when
-- every change in it is landed (pages of events on top of a base snapshot, or the history
-- rebuilt from CF's retained events): an hour they cover entirely, with no resource uncertain
-- in it, is 'complete'; covered but with uncertain resources, 'uncertain'. Seconds not covered
-- are 'carried' from the last known state, or a 'gap' when nothing is known at the hour's start
-- (a snapshot alone never proves that nothing changed after it). Partial or failed readings
-- inside the hour are counted in every case.
INSERT INTO billing.hour_coverage
       (hour_start, meter, status, basis, state_from, uncovered_seconds, uncertain_resources,
        uncertain_resource_seconds, incomplete_readings, reason)
WITH hours AS (
    SELECT h AS hour_start, h + interval '1 hour' AS hour_end,
           tstzrange(h, h + interval '1 hour') AS span
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
),
event_coverage AS (
    SELECT meter, range_agg(covers) AS covered,
           range_agg(covers) FILTER (WHERE source = 'history') AS rebuilt
      FROM billing.reading
     WHERE source IN ('events', 'history') AND status = 'complete' AND covers IS NOT NULL
     GROUP BY meter
),
known AS (
    SELECT h.hour_start, h.hour_end, m.name AS meter,
           coalesce((SELECT sum(extract(epoch FROM upper(part) - lower(part)))
                       FROM unnest(ec.covered * tstzmultirange(h.span)) AS part), 0)::integer
               AS covered_seconds,
           coalesce(ec.rebuilt @> h.span, false) AS rebuilt,
           lower(ec.covered) AS covered_from, upper(ec.covered) AS covered_to,
           (SELECT max(taken_at) FROM billing.reading r
             WHERE r.meter = m.name AND r.source = 'snapshot' AND r.status = 'complete'
               AND r.taken_at <= h.hour_start) AS state_from,
           (SELECT count(*) FROM billing.reading r
             WHERE r.meter = m.name AND r.status <> 'complete'
               AND r.taken_at >= h.hour_start AND r.taken_at < h.hour_end) AS incomplete,
           uu.resources, uu.resource_seconds, uu.reasons
      FROM hours h
     CROSS JOIN billing.meter m
      LEFT JOIN event_coverage ec ON ec.meter = m.name
     CROSS JOIN LATERAL (
            SELECT count(DISTINCT u.resource_id)::integer AS resources,
                   coalesce(sum(extract(epoch FROM upper(u.during * h.span)
                                                 - lower(u.during * h.span))), 0)::bigint
                       AS resource_seconds,
                   string_agg(DISTINCT u.reason, '; ' ORDER BY u.reason) AS reasons
              FROM billing.uncertain_usage u
             WHERE u.meter = m.name AND u.during && h.span) uu
     WHERE m.basis = 'events'
)
SELECT hour_start, meter,
       CASE WHEN covered_seconds = 3600 AND resources = 0 THEN 'complete'
            WHEN covered_seconds = 3600 THEN 'uncertain'
            WHEN state_from IS NULL AND (covered_from IS NULL OR covered_from > hour_start)
                THEN 'gap'
            ELSE 'carried' END,
       CASE WHEN covered_seconds = 3600 AND rebuilt THEN 'events'
            WHEN covered_seconds > 0 THEN 'both'
            WHEN state_from IS NOT NULL THEN 'snapshot' END,
       state_from, 3600 - covered_seconds, resources, resource_seconds, incomplete,
       CASE WHEN covered_seconds = 3600 THEN reasons
            WHEN covered_to IS NULL THEN 'no usage events landed'
            WHEN hour_end > covered_to THEN 'usage events not landed to the end of the hour yet'
            WHEN hour_start < covered_from
                THEN 'before the oldest usage event CF still held when landing began'
            ELSE 'usage events missing: CF no longer had them when they were read (cursor '
                 'purged); the state is carried from the last known one' END
  FROM known;

-- name: derive_counted_measurements
-- Counted meters (SES): each resource's hour is the sum the newest reading of that hour found.
INSERT INTO billing.hourly_measurement (hour_start, resource_id, resource_kind_id, value)
SELECT hour_start, resource_id, resource_kind_id, value
  FROM (SELECT DISTINCT ON (c.hour_start, c.resource_id)
               c.hour_start, c.resource_id, c.resource_kind_id, c.value
          FROM billing.counted_usage c
          JOIN billing.reading rd ON rd.id = c.reading_id
         WHERE c.hour_start >= %(window_start)s AND c.hour_start < %(window_end)s
         ORDER BY c.hour_start, c.resource_id, rd.taken_at DESC, c.reading_id DESC) newest
 WHERE value > 0;

-- name: derive_aws_coverage
-- For each hour and AWS meter, what its readings determine (see billing.meter.basis):
-- sampled gauges are complete once complete readings no further apart than the meter's
-- max_reading_interval span the hour (the size read is held between readings: carried by
-- design); daily gauges once their day's samples are settled; counters once a reading made
-- after the hour settled has read it. Otherwise carried from the last value, or a gap. A
-- meter never read (a deployment without AWS, a test of CF alone) gets no rows.
INSERT INTO billing.hour_coverage
       (hour_start, meter, status, basis, state_from, uncovered_seconds, uncertain_resources,
        uncertain_resource_seconds, incomplete_readings, reason)
WITH hours AS (
    SELECT h AS hour_start, h + interval '1 hour' AS hour_end,
           tstzrange(h, h + interval '1 hour') AS span
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
),
settled AS (
    SELECT meter, range_agg(covers) AS covered FROM billing.reading
     WHERE source = 'aws' AND status = 'complete' AND covers IS NOT NULL GROUP BY meter
),
known AS (
    SELECT h.hour_start, h.hour_end, m.name AS meter, m.basis, m.max_reading_interval,
           coalesce(st.covered @> h.span, false) AS settled,
           before.taken_at AS state_from, after.taken_at AS next_reading,
           (SELECT max(gap) FROM (
                SELECT r.taken_at - lag(r.taken_at) OVER (ORDER BY r.taken_at) AS gap
                  FROM billing.reading r
                 WHERE r.meter = m.name AND r.source = 'aws' AND r.status = 'complete'
                   AND r.taken_at BETWEEN before.taken_at AND after.taken_at) g) AS widest,
           (SELECT max(upper(part)) FROM unnest(st.covered) AS part
             WHERE upper(part) <= h.hour_start) AS settled_to,
           (SELECT count(*) FROM billing.reading r
             WHERE r.meter = m.name AND r.status <> 'complete'
               AND r.taken_at >= h.hour_start AND r.taken_at < h.hour_end) AS incomplete
      FROM hours h
     CROSS JOIN billing.meter m
      LEFT JOIN settled st ON st.meter = m.name
     CROSS JOIN LATERAL (SELECT max(r.taken_at) AS taken_at FROM billing.reading r
                          WHERE r.meter = m.name AND r.source = 'aws'
                            AND r.status = 'complete' AND r.taken_at <= h.hour_start) before
     CROSS JOIN LATERAL (SELECT min(r.taken_at) AS taken_at FROM billing.reading r
                          WHERE r.meter = m.name AND r.source = 'aws'
                            AND r.status = 'complete' AND r.taken_at >= h.hour_end) after
     WHERE m.basis <> 'events'
       -- a meter this deployment has never read has no hours to judge
       AND EXISTS (SELECT 1 FROM billing.reading r WHERE r.meter = m.name)
),
judged AS (
    SELECT *,
           CASE WHEN basis = 'sampled' THEN
                    CASE WHEN state_from IS NULL THEN 'gap'
                         WHEN next_reading IS NULL OR widest > max_reading_interval
                             THEN 'carried'
                         ELSE 'complete' END
                WHEN settled THEN 'complete'
                WHEN basis = 'daily' AND settled_to IS NOT NULL THEN 'carried'
                ELSE 'gap' END AS status
      FROM known
)
SELECT hour_start, meter, status, CASE WHEN status = 'complete' THEN basis END,
       CASE WHEN basis = 'sampled' THEN state_from END,
       CASE WHEN status = 'complete' THEN 0 ELSE 3600 END, 0, 0, incomplete,
       CASE WHEN basis = 'sampled' AND status = 'complete'
                THEN 'sampled at each AWS reading, held until the next (carried by design)'
            WHEN basis = 'daily' AND status = 'complete'
                THEN 'AWS samples it once a day; the day''s sample holds for its hours '
                     '(carried by design)'
            WHEN status = 'complete' THEN 'hourly sums read after the hour settled'
            WHEN basis = 'sampled' AND state_from IS NULL
                THEN 'no complete AWS reading at or before the hour''s start'
            WHEN basis = 'sampled' AND next_reading IS NULL
                THEN 'no complete AWS reading since the hour ended yet; the size read at '
                     || to_char(state_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                     || ' is carried'
            WHEN basis = 'sampled'
                THEN 'complete AWS readings ' || widest::text || ' apart around this hour '
                     || '(more than ' || max_reading_interval::text || '); sizes held from '
                     || 'the readings before'
            WHEN basis = 'daily' AND settled_to IS NOT NULL
                THEN 'the daily sample of ' || to_char(hour_start AT TIME ZONE 'UTC',
                     'YYYY-MM-DD') || ' is not published or landed yet; the previous one is '
                     || 'carried'
            WHEN basis = 'daily' THEN 'no daily sample landed up to this day'
            ELSE 'not read since the hour settled (CloudWatch sums land after the hour)' END
  FROM judged;

-- name: window_summary
-- Totals of a derived window for logs and Dagster metadata, by meter (CF meters always,
-- AWS meters once read). The window's measurements are summed per resource and kind first
-- (one hash table), and only those sums are joined to names and counted: counting distinct
-- resources over the joined rows sorted every row of the window (119 s for a month of a
-- 20k-app foundation's 18.4M measurements, bench/year.py).
WITH used AS (
    SELECT resource_id, resource_kind_id, sum(value) AS unit_seconds
      FROM billing.hourly_measurement
     WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
     GROUP BY resource_id, resource_kind_id
)
SELECT m.name AS meter,
       coalesce(sum(u.unit_seconds), 0)::bigint AS unit_seconds,
       count(DISTINCT u.resource_id) AS resources,
       count(DISTINCT u.resource_id) FILTER (WHERE sp.is_stub OR sp.guid IS NULL
                                                 OR o.is_stub OR o.guid IS NULL) AS unattributed,
       count(DISTINCT u.resource_kind_id) FILTER (WHERE k.is_stub) AS unknown_kinds
  FROM billing.meter m
  LEFT JOIN billing.resource_kind k ON k.meter = m.name
  LEFT JOIN used u ON u.resource_kind_id = k.id
  LEFT JOIN billing.resource r ON r.id = u.resource_id
  LEFT JOIN billing.cf_space sp ON sp.guid = r.space_guid
  LEFT JOIN billing.cf_org o ON o.guid = sp.org_guid
 -- an AWS meter this deployment has never read is not listed (as in derive_aws_coverage)
 WHERE m.basis = 'events' OR EXISTS (SELECT 1 FROM billing.reading r WHERE r.meter = m.name)
 GROUP BY m.name
 ORDER BY m.name;

-- name: window_coverage
-- The hours of a window that are not complete, for the hours-complete check.
SELECT hour_start, meter, status, basis, state_from, uncovered_seconds, uncertain_resources,
       uncertain_resource_seconds, incomplete_readings, reason
  FROM billing.hour_coverage
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
   AND (status <> 'complete' OR incomplete_readings > 0)
 ORDER BY hour_start, meter;

-- name: count_measurements
-- How many measurement rows a window holds.
SELECT count(*) AS rows FROM billing.hourly_measurement
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: find_interpolable_hours
-- The window's hours that are really unknown (gap or carried, not one of their seconds covered
-- by usage events) and have a complete hour of the same meter on both sides, with those two
-- neighbours (a temporary table for the two statements below).
CREATE TEMP TABLE interpolable ON COMMIT DROP AS
SELECT * FROM (
    SELECT c.hour_start, c.meter,
           (SELECT max(b.hour_start) FROM billing.hour_coverage b
             WHERE b.meter = c.meter AND b.status = 'complete' AND b.hour_start < c.hour_start)
               AS before_hour,
           (SELECT min(a.hour_start) FROM billing.hour_coverage a
             WHERE a.meter = c.meter AND a.status = 'complete' AND a.hour_start > c.hour_start)
               AS after_hour
      FROM billing.hour_coverage c
     WHERE c.hour_start >= %(window_start)s AND c.hour_start < %(window_end)s
       AND c.status IN ('gap', 'carried') AND c.uncovered_seconds = 3600
) AS flagged
 WHERE before_hour IS NOT NULL AND after_hour IS NOT NULL;

-- name: interpolate_hours
-- Replace each interpolable hour's measurements by the mean of its two neighbours, per
-- resource and kind (a resource absent on one side counts 0 there), rounded half-even.
WITH removed AS (
    DELETE FROM billing.hourly_measurement m
     USING interpolable i, billing.resource_kind k
     WHERE m.hour_start = i.hour_start AND k.id = m.resource_kind_id AND k.meter = i.meter
    RETURNING m.hour_start
)
SELECT count(*) AS removed FROM removed;

-- name: insert_interpolated
-- The interpolated rows themselves, and the hours marked.
WITH neighbours AS (
    SELECT i.hour_start, m.resource_id, m.resource_kind_id,
           coalesce(sum(m.value) FILTER (WHERE m.hour_start = i.before_hour), 0)
         + coalesce(sum(m.value) FILTER (WHERE m.hour_start = i.after_hour), 0) AS both_sides
      FROM interpolable i
      JOIN billing.hourly_measurement m ON m.hour_start IN (i.before_hour, i.after_hour)
      JOIN billing.resource_kind k ON k.id = m.resource_kind_id AND k.meter = i.meter
     GROUP BY i.hour_start, m.resource_id, m.resource_kind_id
),
inserted AS (
    INSERT INTO billing.hourly_measurement
           (hour_start, resource_id, resource_kind_id, value, interpolated)
    SELECT hour_start, resource_id, resource_kind_id,
           billing.div_round_half_even(both_sides, 2)::bigint, true
      FROM neighbours
     WHERE both_sides > 0
)
UPDATE billing.hour_coverage c SET status = 'interpolated'
  FROM interpolable i
 WHERE c.hour_start = i.hour_start AND c.meter = i.meter;
