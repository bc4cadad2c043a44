-- The accuracy suite's SQL: the oracle's rows next to what the project billed. Comparison
-- only: nothing here derives usage or prices it the way the project does.

-- name: create_oracle_usage
-- The oracle's answer for the window (GET /_sim/usage), COPYed in.
CREATE TEMP TABLE oracle_usage (
    hour_start timestamptz NOT NULL, meter text NOT NULL, resource text NOT NULL,
    kind text NOT NULL, unit_seconds bigint NOT NULL, space_guid text, org_guid text,
    PRIMARY KEY (hour_start, meter, resource, kind)
);

-- name: copy_oracle_usage
-- COPY target for the oracle's rows.
COPY oracle_usage (hour_start, meter, resource, kind, unit_seconds, space_guid, org_guid)
FROM STDIN

-- name: create_resource_hour_comparison
-- Every resource-hour either side knows of (a resource, a kind, an hour), the oracle's value
-- and the billed one, with the coverage the project gave that hour of that meter.
CREATE TEMP TABLE resource_hour_comparison AS
WITH billed AS (
    SELECT m.hour_start, r.meter, r.natural_id AS resource, k.natural_id AS kind,
           sum(m.value)::bigint AS value, max(o.guid) AS org_guid
      FROM billing.hourly_measurement m
      JOIN billing.resource r ON r.id = m.resource_id
      JOIN billing.resource_kind k ON k.id = m.resource_kind_id
      LEFT JOIN billing.cf_space sp ON sp.guid = r.space_guid
      LEFT JOIN billing.cf_org o ON o.guid = sp.org_guid
     WHERE m.hour_start >= %(start)s AND m.hour_start < %(end)s
     GROUP BY 1, 2, 3, 4
),
truth AS (
    SELECT hour_start, meter, resource, kind, unit_seconds AS value, org_guid FROM oracle_usage
)
SELECT hour_start, meter, resource, kind,
       coalesce(t.value, 0) AS truth, coalesce(b.value, 0) AS billed,
       coalesce(t.org_guid, b.org_guid) AS org_guid,
       coalesce(c.status, 'not measured') AS status
  FROM billed b
  FULL JOIN truth t USING (hour_start, meter, resource, kind)
  LEFT JOIN billing.hour_coverage c USING (hour_start, meter);

-- name: compare_by_meter_and_status
-- The suite's table: resource-hours, exact, differing, unit-seconds missing and extra.
SELECT meter, status, count(*) AS resource_hours,
       count(*) FILTER (WHERE truth = billed) AS exact,
       count(*) FILTER (WHERE truth <> billed) AS differing,
       -- numeric: a month of S3 byte-seconds passes bigint
       coalesce(sum(greatest(truth - billed, 0)), 0) AS missing,
       coalesce(sum(greatest(billed - truth, 0)), 0) AS extra
  FROM resource_hour_comparison
 GROUP BY meter, status
 ORDER BY meter, status;

-- name: differing_resource_hours
-- The resource-hours that differ, complete hours first (the ones that must not).
SELECT hour_start, meter, resource, kind, truth, billed, status, org_guid
  FROM resource_hour_comparison
 WHERE truth <> billed
 ORDER BY status <> 'complete', hour_start, meter, resource, kind;

-- name: flagged_hours
-- The hours the project did not call complete, with what it says of them.
SELECT hour_start, meter, status, uncovered_seconds, uncertain_resources,
       uncertain_resource_seconds, incomplete_readings, reason
  FROM billing.hour_coverage
 WHERE hour_start >= %(start)s AND hour_start < %(end)s AND status <> 'complete'
 ORDER BY hour_start, meter;

-- name: posted_lines
-- What the ledger holds for the month, per customer and price line.
SELECT t.customer_id, k.meter, k.natural_id AS kind, l.microcredits_per_unit, l.unit,
       sum(l.quantity) AS quantity, sum(l.amount_microcredits)::bigint AS amount
  FROM billing.ledger_transaction t
  JOIN billing.posting_line l ON l.transaction_id = t.id
  JOIN billing.resource_kind k ON k.id = l.resource_kind_id
 WHERE t.business_month = %(business_month)s
 GROUP BY 1, 2, 3, 4, 5
HAVING sum(l.quantity) <> 0 OR sum(l.amount_microcredits) <> 0
 ORDER BY 1, 2, 3, 4, 5;

-- name: minute_one_snapshots
-- cloud-gov/billing's method, from the snapshots the project landed: the state each complete
-- snapshot taken in an hour found is counted as that whole hour (3,600 seconds), the first
-- such snapshot of the hour and meter only. A snapshot stores only what changed, so what it
-- found is each resource's state at its instant (its last observation then).
WITH first_reading AS (
    SELECT DISTINCT ON (date_trunc('hour', taken_at), meter)
           id, meter, taken_at, date_trunc('hour', taken_at) AS hour_start
      FROM billing.reading
     WHERE source = 'snapshot' AND status = 'complete'
       AND taken_at >= %(start)s AND taken_at < %(end)s
     ORDER BY date_trunc('hour', taken_at), meter, taken_at
)
SELECT f.hour_start, f.meter, r.natural_id AS resource, k.natural_id AS kind,
       (st.rate * 3600)::bigint AS value, sp.org_guid
  FROM first_reading f
  JOIN billing.resource r ON r.meter = f.meter
 CROSS JOIN LATERAL (
        SELECT o.rate, o.resource_kind_id FROM billing.observation o
         WHERE o.resource_id = r.id AND o.observed_at <= f.taken_at
         ORDER BY o.observed_at DESC, o.seq DESC LIMIT 1) st
  JOIN billing.resource_kind k ON k.id = st.resource_kind_id
  LEFT JOIN billing.cf_space sp ON sp.guid = r.space_guid
 WHERE st.rate > 0;

-- name: month_draws
-- What the month's usage posting drew per customer, hour and agreement (NULL: overage).
SELECT t.customer_id, d.hour_start, d.iaa_id, sum(d.amount_microcredits)::bigint AS amount
  FROM billing.ledger_draw d
  JOIN billing.ledger_transaction t ON t.id = d.transaction_id
 WHERE t.business_month = %(business_month)s
 GROUP BY 1, 2, 3
HAVING sum(d.amount_microcredits) <> 0
 ORDER BY 1, 2, 3;

-- name: expiries
-- The credits each agreement's expiry took (iaa_pop_end: the credit to credits_expired).
SELECT substr(t.idempotency_key, length('iaa_pop_end:') + 1) AS iaa_id,
       e.amount_microcredits AS amount
  FROM billing.ledger_transaction t
  JOIN billing.ledger_entry e ON e.transaction_id = t.id AND e.direction = -1
 WHERE t.transaction_type = 'iaa_pop_end';
