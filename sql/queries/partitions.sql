-- Partitions as the UI shows them: where billing starts, and what hours measured outside a
-- Dagster run hold (so that they can be recorded as materializations).

-- name: first_landing
-- When this deployment first read or measured anything; NULL before its first landing.
SELECT least((SELECT min(taken_at) FROM billing.reading),
             (SELECT min(hour_start) FROM billing.hour_coverage)) AS first_landing;

-- name: hour_summaries
-- Per UTC hour of a window: what its measurements and priced postings hold, and the meters
-- whose hour is not complete, for one materialization per hourly partition.
WITH hours AS (
    SELECT h AS hour_start
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h
),
measured AS (
    SELECT hour_start, count(*) AS rows, count(DISTINCT resource_id) AS resources
      FROM billing.hourly_measurement
     WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
     GROUP BY hour_start
),
priced AS (
    SELECT hour_start, count(*) AS rows, count(DISTINCT customer_id) AS customers,
           coalesce(sum(amount_microcredits), 0) AS microcredits
      FROM billing.hourly_posting
     WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
     GROUP BY hour_start
),
flagged AS (
    SELECT hour_start, array_agg(meter || ' ' || status ORDER BY meter) AS meters
      FROM billing.hour_coverage
     WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
       AND status <> 'complete'
     GROUP BY hour_start
)
SELECT h.hour_start,
       EXISTS (SELECT 1 FROM billing.hour_coverage c WHERE c.hour_start = h.hour_start)
           AS measured,
       coalesce(m.rows, 0) AS measurement_rows, coalesce(m.resources, 0) AS resources,
       coalesce(p.rows, 0) AS posting_rows, coalesce(p.customers, 0) AS customers,
       round(coalesce(p.microcredits, 0))::bigint AS microcredits,
       coalesce(f.meters, '{}') AS flagged
  FROM hours h
  LEFT JOIN measured m USING (hour_start)
  LEFT JOIN priced p USING (hour_start)
  LEFT JOIN flagged f USING (hour_start)
 ORDER BY h.hour_start;
