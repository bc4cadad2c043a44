-- name: delete_measurements
-- Remove a window's measurements before they are derived again (same transaction).
DELETE FROM billing.hourly_measurement
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: derive_measurements
-- Integrate every resource's observed rate over each UTC hour of the window: the state at the
-- window's start (its last observation before it) carried forward, changed at each observation
-- inside the window. Segments are [observation, next observation of the same resource).
INSERT INTO billing.hourly_measurement (hour_start, resource_id, resource_kind_id, value)
WITH hours AS (
    SELECT h AS hour_start, h + interval '1 hour' AS hour_end
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
),
start_state AS (
    SELECT r.id AS resource_id, last.observed_at, last.seq, last.resource_kind_id, last.rate
      FROM billing.resource r
     CROSS JOIN LATERAL (
            SELECT o.observed_at, o.seq, o.resource_kind_id, o.rate
              FROM billing.observation o
             WHERE o.resource_id = r.id AND o.observed_at < %(window_start)s
             ORDER BY o.observed_at DESC, o.seq DESC
             LIMIT 1) last
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
 WHERE s.rate > 0
 GROUP BY h.hour_start, s.resource_id, s.resource_kind_id;

-- name: delete_coverage
-- Remove a window's coverage flags before they are derived again.
DELETE FROM billing.hour_coverage
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: derive_coverage
-- For each hour and meter: 'complete' when usage events cover the whole hour (every change
-- known, on top of a base snapshot); otherwise from snapshots: the newest complete snapshot at
-- or before the hour's start (none: a gap, with the seconds before the first complete snapshot
-- inside the hour unknown; older than the bound: carried). Partial or failed readings inside
-- the hour are counted in every case.
INSERT INTO billing.hour_coverage
       (hour_start, meter, status, state_from, uncovered_seconds, incomplete_readings)
WITH hours AS (
    SELECT h AS hour_start, h + interval '1 hour' AS hour_end
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
),
event_coverage AS (
    SELECT meter, range_agg(covers) AS covered
      FROM billing.reading
     WHERE source = 'events' AND status = 'complete' AND covers IS NOT NULL
     GROUP BY meter
),
known AS (
    SELECT h.hour_start, h.hour_end, m.name AS meter,
           coalesce(ec.covered @> tstzrange(h.hour_start, h.hour_end), false) AS by_events,
           (SELECT max(taken_at) FROM billing.reading r
             WHERE r.meter = m.name AND r.source = 'snapshot' AND r.status = 'complete'
               AND r.taken_at <= h.hour_start) AS state_from,
           (SELECT min(taken_at) FROM billing.reading r
             WHERE r.meter = m.name AND r.source = 'snapshot' AND r.status = 'complete'
               AND r.taken_at > h.hour_start AND r.taken_at < h.hour_end) AS first_inside,
           (SELECT count(*) FROM billing.reading r
             WHERE r.meter = m.name AND r.status <> 'complete'
               AND r.taken_at >= h.hour_start AND r.taken_at < h.hour_end) AS incomplete
      FROM hours h
     CROSS JOIN billing.meter m
      LEFT JOIN event_coverage ec ON ec.meter = m.name
)
SELECT hour_start, meter,
       CASE WHEN by_events THEN 'complete'
            WHEN state_from IS NULL THEN 'gap'
            WHEN hour_start - state_from > %(carry_bound)s::interval THEN 'carried'
            ELSE 'complete' END,
       state_from,
       CASE WHEN by_events OR state_from IS NOT NULL THEN 0
            ELSE extract(epoch FROM coalesce(first_inside, hour_end) - hour_start)::integer END,
       incomplete
  FROM known;

-- name: window_summary
-- Totals of a derived window for logs and Dagster metadata, by meter.
SELECT m.name AS meter,
       coalesce(sum(hm.value), 0)::bigint AS unit_seconds,
       count(DISTINCT hm.resource_id) AS resources,
       count(DISTINCT hm.resource_id) FILTER (WHERE sp.is_stub OR sp.guid IS NULL
                                                  OR o.is_stub OR o.guid IS NULL) AS unattributed,
       count(DISTINCT hm.resource_kind_id) FILTER (WHERE k.is_stub) AS unknown_kinds
  FROM billing.meter m
  LEFT JOIN billing.resource_kind k ON k.meter = m.name
  LEFT JOIN billing.hourly_measurement hm
         ON hm.resource_kind_id = k.id
        AND hm.hour_start >= %(window_start)s AND hm.hour_start < %(window_end)s
  LEFT JOIN billing.resource r ON r.id = hm.resource_id
  LEFT JOIN billing.cf_space sp ON sp.guid = r.space_guid
  LEFT JOIN billing.cf_org o ON o.guid = sp.org_guid
 GROUP BY m.name
 ORDER BY m.name;

-- name: window_coverage
-- The hours of a window that are not complete, for the hours-complete check.
SELECT hour_start, meter, status, state_from, uncovered_seconds, incomplete_readings
  FROM billing.hour_coverage
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
   AND (status <> 'complete' OR incomplete_readings > 0)
 ORDER BY hour_start, meter;

-- name: count_measurements
-- How many measurement rows a window holds.
SELECT count(*) AS rows FROM billing.hourly_measurement
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: find_interpolable_hours
-- The window's flagged hours (gap or carried) that have a complete hour of the same meter on
-- both sides, with those two neighbours (a temporary table for the two statements below).
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
       AND c.status IN ('gap', 'carried')
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
