-- name: hours_to_remeasure
-- Hours already measured that data landed since could change, one row per hour (UTC), with the
-- newest reading that makes it stale. `fresh` is what landed after the sensor's cursor, plus
-- what landed lately (a reading that commits after one with a greater id is seen on the next
-- ticks). An hour is stale for a meter when a fresh reading newer than its measurement
--   * changed a resource's state at some instant (an observation: a usage event committed late
--     at CF, an S3 day's sample published or corrected after its hours were measured): every
--     hour from that instant to the resource's next observation;
--   * changed a counted hour (a CloudWatch sum that grew after the hour was measured);
--   * makes a flagged hour decidable: usage events or settled AWS spans covering it, or the
--     first reading after it of a sampled AWS gauge.
-- An hour whose data never comes (events CF purged, an AWS outage longer than its lookback)
-- stays flagged and is not measured again for nothing.
WITH fresh AS (
    SELECT id, meter, source, status, covers, taken_at
      FROM billing.reading
     WHERE id > %(after_id)s OR landed_at >= %(recheck_since)s
),
measured_to AS (
    SELECT max(hour_start) + interval '1 hour' AS hour_end FROM billing.hour_coverage
),
changes AS (
    SELECT f.id AS reading_id, f.meter, o.observed_at AS changed_from,
           coalesce(nxt.observed_at, 'infinity') AS changed_to
      FROM fresh f
      JOIN billing.observation o ON o.reading_id = f.id
     CROSS JOIN measured_to mt
     CROSS JOIN LATERAL (SELECT min(n.observed_at) AS observed_at FROM billing.observation n
                          WHERE n.resource_id = o.resource_id
                            AND n.observed_at > o.observed_at) nxt
     WHERE o.observed_at < mt.hour_end
    UNION ALL
    SELECT f.id, f.meter, c.hour_start, c.hour_start + interval '1 hour'
      FROM fresh f
      JOIN billing.counted_usage c ON c.reading_id = f.id
),
changed AS (
    SELECT hc.hour_start, max(ch.reading_id) AS reading_id
      FROM changes ch
      JOIN billing.hour_coverage hc
        ON hc.meter = ch.meter
       AND hc.hour_start > ch.changed_from - interval '1 hour'
       AND hc.hour_start < ch.changed_to
       AND coalesce(hc.measured_through, 0) < ch.reading_id
     GROUP BY hc.hour_start
),
decidable AS (
    SELECT hc.hour_start, max(f.id) AS reading_id
      FROM billing.hour_coverage hc
      JOIN billing.meter m ON m.name = hc.meter
      JOIN fresh f ON f.meter = hc.meter AND f.status = 'complete'
                  AND f.id > coalesce(hc.measured_through, 0)
     WHERE hc.status <> 'complete'
       AND (f.covers && tstzrange(hc.hour_start, hc.hour_start + interval '1 hour')
            OR (m.basis = 'sampled' AND f.taken_at >= hc.hour_start + interval '1 hour'
                AND NOT EXISTS (
                    SELECT 1 FROM billing.reading r
                     WHERE r.meter = hc.meter AND r.status = 'complete'
                       AND r.id <= coalesce(hc.measured_through, 0)
                       AND r.taken_at >= hc.hour_start + interval '1 hour')))
     GROUP BY hc.hour_start
)
SELECT hour_start, max(reading_id) AS reading_id
  FROM (SELECT * FROM changed UNION ALL SELECT * FROM decidable) stale
 GROUP BY hour_start
 ORDER BY hour_start;
