-- Partitions as the UI shows them: where billing starts, and what each hourly partition holds
-- (its own metadata and hour_complete check, in runs of many hours and for hours measured
-- outside a Dagster run).

-- name: first_landing
-- When this deployment first read or measured anything; NULL before its first landing.
SELECT least((SELECT min(taken_at) FROM billing.reading),
             (SELECT min(hour_start) FROM billing.hour_coverage)) AS first_landing;

-- name: hour_measurement_summaries
-- Per UTC hour and meter of a window: what the landed data determines of it (its coverage)
-- and its measurements, for each hourly partition's own metadata and hour_complete check.
SELECT c.hour_start, c.meter, c.status, c.reason, c.uncovered_seconds, c.incomplete_readings,
       coalesce(m.rows, 0) AS rows, coalesce(m.resources, 0) AS resources,
       coalesce(m.unit_seconds, 0)::bigint AS unit_seconds
  FROM billing.hour_coverage c
  LEFT JOIN (SELECT hm.hour_start, r.meter, count(*) AS rows,
                    count(DISTINCT hm.resource_id) AS resources, sum(hm.value) AS unit_seconds
               FROM billing.hourly_measurement hm
               JOIN billing.resource r ON r.id = hm.resource_id
              WHERE hm.hour_start >= %(window_start)s AND hm.hour_start < %(window_end)s
              GROUP BY hm.hour_start, r.meter) m USING (hour_start, meter)
 WHERE c.hour_start >= %(window_start)s AND c.hour_start < %(window_end)s
 ORDER BY c.hour_start, c.meter;

-- name: hour_coverage_summaries
-- Per UTC hour and meter of a window: what the landed data determines of it, without counting
-- its measurements (the postings' metadata says only the hour's status).
SELECT hour_start, meter, status, reason, uncovered_seconds, incomplete_readings
  FROM billing.hour_coverage
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
 ORDER BY hour_start, meter;

-- name: hour_posting_summaries
-- Per UTC hour and customer of a window: its priced postings (exact microcredits, before the
-- monthly rounding) and the rows held for want of a price or a customer ('' = no customer).
SELECT hour_start, coalesce(customer_id, '') AS customer, count(*) AS rows,
       coalesce(sum(amount_microcredits), 0) AS microcredits,
       count(*) FILTER (WHERE price_id IS NULL OR customer_id IS NULL) AS held_rows
  FROM billing.hourly_posting
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
 GROUP BY hour_start, customer_id
 ORDER BY hour_start, customer;

-- name: create_month_partitions
-- Create the monthly partitions (business months) of hourly_measurement and hourly_posting that
-- the span of hours [span_start, span_end) needs and that do not exist yet; their names.
SELECT billing.create_month_partitions(%(span_start)s, %(span_end)s) AS created;
