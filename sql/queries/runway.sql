-- name: runway_snapshot
-- Read the runway report from one snapshot (a posting midway must not count a month twice).
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: runway_as_of
-- The end of the newest hour with priced, owned usage: the instant the runway is measured at.
SELECT max(hour_start) + interval '1 hour' AS as_of
  FROM billing.hourly_posting
 WHERE customer_id IS NOT NULL AND price_id IS NOT NULL;

-- name: runway_customers
-- Every customer, by id, with its tier of the business month (the one in effect on its first
-- day; NULL: none) and the tier's monthly allotment in microcredits.
SELECT c.id AS customer_id, c.name, ct.tier,
       t.credits_per_month * 1000000 AS allotment_microcredits
  FROM billing.customer c
  LEFT JOIN billing.customer_tier ct
    ON ct.customer_id = c.id AND ct.valid_during @> %(month)s::date
  LEFT JOIN billing.tier t ON t.name = ct.tier
 ORDER BY c.id;

-- name: runway_daily_usage
-- Each customer's exact charge per 24-hour day before as_of (day 0 ends at as_of), `days` days.
SELECT hp.customer_id, d.day, sum(hp.amount_microcredits) AS amount
  FROM generate_series(0, %(days)s::int - 1) AS d (day)
  JOIN billing.hourly_posting hp
    ON hp.hour_start >= %(as_of)s - (d.day + 1) * interval '24 hours'
   AND hp.hour_start < %(as_of)s - d.day * interval '24 hours'
 WHERE hp.customer_id IS NOT NULL AND hp.price_id IS NOT NULL
 GROUP BY hp.customer_id, d.day;

-- name: runway_unposted_hours
-- Each customer's exact charge per hour after its last month with a usage_post, up to as_of.
SELECT hp.customer_id,
       date_trunc('month', hp.hour_start AT TIME ZONE 'America/New_York')::date AS business_month,
       hp.hour_start, sum(hp.amount_microcredits) AS amount
  FROM billing.hourly_posting hp
  JOIN billing.customer_unposted_from u ON u.customer_id = hp.customer_id
 WHERE hp.price_id IS NOT NULL AND hp.hour_start >= u.unposted_from
   AND hp.hour_start < %(as_of)s
 GROUP BY hp.customer_id, hp.hour_start
 ORDER BY hp.customer_id, hp.hour_start;

-- name: runway_month_totals
-- Per customer and month (unposted, or from month_start) to as_of: charged as post_month_usage.
WITH lines AS (
    SELECT hp.customer_id,
           date_trunc('month', hp.hour_start AT TIME ZONE 'America/New_York')::date
               AS business_month,
           billing.div_round_half_even(sum(hp.quantity)::numeric * hp.microcredits_per_unit,
                                       hp.unit) AS amount
      FROM billing.hourly_posting hp
      JOIN billing.customer_unposted_from u ON u.customer_id = hp.customer_id
     WHERE hp.price_id IS NOT NULL AND hp.hour_start < %(as_of)s
       AND hp.hour_start >= least(u.unposted_from, %(month_start)s)
     GROUP BY hp.customer_id, 2, hp.resource_kind_id, hp.microcredits_per_unit, hp.unit
)
SELECT customer_id, business_month, sum(amount)::bigint AS amount
  FROM lines
 GROUP BY customer_id, business_month
 ORDER BY customer_id, business_month;

-- name: runway_agreements
-- Each agreement: credited to its lot, drawn from it, and its credits not posted yet (not begun).
SELECT a.id AS iaa_id, a.customer_id, a.starts_at, a.ends_at,
       coalesce((SELECT sum(e.amount_microcredits * -e.direction)
                   FROM billing.ledger_entry e
                   JOIN billing.ledger_transaction t ON t.id = e.transaction_id
                   JOIN billing.account acc ON acc.id = e.account_id
                  WHERE acc.account_type = 'credit_pool' AND acc.iaa_id = a.id
                    AND t.transaction_type IN ('iaa_pop_start', 'iaa_modification')), 0)
           ::bigint AS credited,
       coalesce((SELECT sum(d.amount_microcredits) FROM billing.ledger_draw d
                  WHERE d.iaa_id = a.id), 0)::bigint AS drawn,
       CASE WHEN EXISTS (SELECT 1 FROM billing.ledger_transaction t
                          WHERE t.idempotency_key = 'iaa_pop_start:' || a.id)
            THEN 0 ELSE a.bought_microcredits END AS pending_start
  FROM billing.agreement a
 ORDER BY a.customer_id, a.ends_at, a.starts_at, a.id;

-- name: runway_pending_modifications
-- Modifications of credits not posted yet, with the instant they arrive (New York effective date).
SELECT m.iaa_id, m.effective::timestamp AT TIME ZONE 'America/New_York' AS arrives_at,
       m.credits_microcredits AS credits
  FROM billing.iaa_modification m
 WHERE m.credits_microcredits <> 0
   AND NOT EXISTS (SELECT 1 FROM billing.ledger_transaction t
                    WHERE t.idempotency_key = 'iaa_modification:' || m.iaa_id || ':' || m.id)
 ORDER BY m.iaa_id, m.effective, m.id;

-- name: runway_posted_overage
-- The overage the ledger holds per customer and business month (net of what was given back).
SELECT t.customer_id, t.business_month, sum(d.amount_microcredits)::bigint AS amount
  FROM billing.ledger_draw d
  JOIN billing.ledger_transaction t ON t.id = d.transaction_id
 WHERE d.iaa_id IS NULL
 GROUP BY t.customer_id, t.business_month
HAVING sum(d.amount_microcredits) > 0;

-- name: record_runway_alerts
-- Record runway alerts, each once; returns only those this statement raised (not a concurrent's).
INSERT INTO billing.runway_alert (customer_id, iaa_id, alert, details)
SELECT a.customer_id, a.iaa_id, a.alert, a.details::jsonb
  FROM unnest(%(customer_ids)s::text[], %(iaa_ids)s::text[], %(alerts)s::text[],
              %(details)s::text[]) AS a (customer_id, iaa_id, alert, details)
ON CONFLICT ON CONSTRAINT runway_alert_once DO NOTHING
RETURNING customer_id, iaa_id, alert;
