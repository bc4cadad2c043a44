-- name: statement_customers
-- The customers with a statement for a business month, and its header facts.
-- A customer has one when it has priced usage in the month, a posting of the month, ledger
-- activity effective in it or an agreement active during it. Its tier of the month is the one in
-- effect on the month's first day (NULL: none); posted is what the ledger holds for the month's
-- usage (its lines, rounded once); overage and used are the movements of those accounts in
-- transactions effective in the month.
WITH in_month AS (
    SELECT customer_id FROM billing.hourly_posting
     WHERE customer_id IS NOT NULL AND price_id IS NOT NULL
       AND hour_start >= %(month_start)s AND hour_start < %(month_end)s
     UNION
    SELECT customer_id FROM billing.ledger_transaction
     WHERE business_month = %(business_month)s
        OR (effective_at >= %(month_start)s AND effective_at < %(month_end)s)
     UNION
    SELECT customer_id FROM billing.agreement
     WHERE tstzrange(starts_at, ends_at) && tstzrange(%(month_start)s, %(month_end)s)
),
posted AS (
    SELECT t.customer_id, sum(l.amount_microcredits) AS microcredits
      FROM billing.ledger_transaction t
      JOIN billing.posting_line l ON l.transaction_id = t.id
     WHERE t.business_month = %(business_month)s
     GROUP BY t.customer_id
),
moved AS (
    SELECT t.customer_id,
           sum(e.amount_microcredits * e.direction * ty.normal_balance)
               FILTER (WHERE a.account_type = 'overage') AS overage,
           sum(e.amount_microcredits * e.direction * ty.normal_balance)
               FILTER (WHERE a.account_type = 'credits_used') AS used
      FROM billing.ledger_transaction t
      JOIN billing.ledger_entry e ON e.transaction_id = t.id
      JOIN billing.account a ON a.id = e.account_id
      JOIN billing.account_type ty ON ty.name = a.account_type
     WHERE t.effective_at >= %(month_start)s AND t.effective_at < %(month_end)s
       AND a.account_type IN ('overage', 'credits_used')
     GROUP BY t.customer_id
)
SELECT c.id AS customer_id, c.name AS customer_name, ct.tier, tr.credits_per_month,
       coalesce(p.microcredits, 0)::bigint AS posted_microcredits,
       coalesce(m.overage, 0)::bigint AS overage_microcredits,
       coalesce(m.used, 0)::bigint AS used_microcredits
  FROM in_month x
  JOIN billing.customer c ON c.id = x.customer_id
  LEFT JOIN billing.customer_tier ct
    ON ct.customer_id = c.id AND ct.valid_during @> %(business_month)s::date
  LEFT JOIN billing.tier tr ON tr.name = ct.tier
  LEFT JOIN posted p ON p.customer_id = c.id
  LEFT JOIN moved m ON m.customer_id = c.id
 ORDER BY c.id;

-- name: statement_rows
-- Every customer's month by org, space and resource kind: unit-seconds and exact microcredits.
-- Exact: per price line quantity x microcredits_per_unit / unit in numeric, summed over the
-- prices that applied during the month (never rounded here).
WITH by_price AS (
    SELECT hp.customer_id, coalesce(o.name, hp.org_guid) AS org,
           coalesce(sp.name, hp.space_guid) AS space, k.meter,
           coalesce(k.name, k.natural_id) AS kind,
           sum(hp.quantity) AS unit_seconds,
           sum(hp.quantity) * hp.microcredits_per_unit / hp.unit AS microcredits_exact
      FROM billing.hourly_posting hp
      JOIN billing.resource_kind k ON k.id = hp.resource_kind_id
      LEFT JOIN billing.cf_org o ON o.guid = hp.org_guid
      LEFT JOIN billing.cf_space sp ON sp.guid = hp.space_guid
     WHERE hp.customer_id IS NOT NULL AND hp.price_id IS NOT NULL
       AND hp.hour_start >= %(month_start)s AND hp.hour_start < %(month_end)s
     GROUP BY 1, 2, 3, 4, 5, hp.microcredits_per_unit, hp.unit
)
SELECT customer_id, org, space, meter, kind, sum(unit_seconds)::bigint AS unit_seconds,
       sum(microcredits_exact) AS microcredits_exact
  FROM by_price
 GROUP BY customer_id, org, space, meter, kind
 ORDER BY customer_id, org, space, meter, kind;

-- name: statement_agreements
-- Each agreement's lot over a business month: opening, added, drawn, expired, balance at end.
-- Every agreement active during the month or whose lot moved in transactions effective in it,
-- with its period as modified (first and last day, New York dates). Opening: the lot's balance
-- from transactions effective before the month; added: iaa_pop_start and iaa_modification
-- effective in it (< 0: credits removed); drawn: usage_post and adjustment (an adjustment is
-- effective at the start of the month it corrects); expired: iaa_pop_end of a period whose
-- last day is in the month; balance at end: from transactions effective before the month's
-- end, which the closing balance must equal.
WITH dated_entries AS (
    -- an expiry is effective at the instant after the period's last day and belongs to the
    -- month that day ends (the posting of that month posts it)
    SELECT a.iaa_id, t.transaction_type,
           CASE WHEN t.transaction_type = 'iaa_pop_end'
                THEN t.effective_at - interval '1 microsecond' ELSE t.effective_at END AS at,
           e.amount_microcredits * e.direction * ty.normal_balance AS amount
      FROM billing.account a
      JOIN billing.account_type ty ON ty.name = a.account_type
      JOIN billing.ledger_entry e ON e.account_id = a.id
      JOIN billing.ledger_transaction t ON t.id = e.transaction_id
     WHERE a.account_type = 'credit_pool' AND a.iaa_id IS NOT NULL
),
lot_entries AS (
    SELECT iaa_id, transaction_type, at >= %(month_start)s AS in_month, amount
      FROM dated_entries
     WHERE at < %(month_end)s
),
lots AS (
    SELECT iaa_id,
           coalesce(sum(amount) FILTER (WHERE NOT in_month), 0) AS opening,
           coalesce(sum(amount) FILTER (
               WHERE in_month AND transaction_type IN ('iaa_pop_start', 'iaa_modification')),
               0) AS added,
           coalesce(-sum(amount) FILTER (
               WHERE in_month AND transaction_type IN ('usage_post', 'adjustment')), 0) AS drawn,
           coalesce(-sum(amount) FILTER (
               WHERE in_month AND transaction_type = 'iaa_pop_end'), 0) AS expired,
           sum(amount) AS balance_at_end,
           bool_or(in_month) AS moved_in_month
      FROM lot_entries
     GROUP BY iaa_id
)
SELECT ag.customer_id, ag.id AS iaa_id, lower(ag.period_of_performance) AS first_day,
       upper(ag.period_of_performance) - 1 AS last_day,
       coalesce(l.opening, 0)::bigint AS opening_microcredits,
       coalesce(l.added, 0)::bigint AS added_microcredits,
       coalesce(l.drawn, 0)::bigint AS drawn_microcredits,
       coalesce(l.expired, 0)::bigint AS expired_microcredits,
       coalesce(l.balance_at_end, 0)::bigint AS balance_at_end_microcredits
  FROM billing.agreement ag
  LEFT JOIN lots l ON l.iaa_id = ag.id
 WHERE tstzrange(ag.starts_at, ag.ends_at) && tstzrange(%(month_start)s, %(month_end)s)
    OR coalesce(l.moved_in_month, false)
 ORDER BY ag.customer_id, ag.starts_at, ag.id;

-- name: posted_month_by_customer
-- What the ledger holds for a business month per customer: usage posts and adjustments.
SELECT t.customer_id, sum(l.amount_microcredits)::bigint AS posted_microcredits,
       count(DISTINCT t.id) AS transactions
  FROM billing.ledger_transaction t
  JOIN billing.posting_line l ON l.transaction_id = t.id
 WHERE t.business_month = %(business_month)s
 GROUP BY t.customer_id
 ORDER BY t.customer_id;

-- name: month_to_date_hours
-- How much of the business month under way is known, up to `now_hour` (UTC, exclusive): the
-- hours elapsed, measured (any meter derived) and complete (every meter determined).
WITH hours AS (
    SELECT hour_start, bool_and(status = 'complete') AS complete
      FROM billing.hour_coverage
     WHERE hour_start >= %(month_start)s AND hour_start < %(now_hour)s
     GROUP BY hour_start
)
SELECT (extract(epoch FROM %(now_hour)s::timestamptz - %(month_start)s::timestamptz)
        / 3600)::integer AS elapsed,
       count(*)::integer AS measured,
       (count(*) FILTER (WHERE complete))::integer AS complete
  FROM hours;

-- name: month_to_date_customers
-- Each customer's charge so far in the business month under way: exact microcredits of its
-- priced hours (rounded only when the month is posted), and its newest priced hour.
SELECT hp.customer_id, c.name AS customer_name, count(*) AS rows,
       sum(hp.amount_microcredits) AS microcredits_exact, max(hp.hour_start) AS newest_hour
  FROM billing.hourly_posting hp
  JOIN billing.customer c ON c.id = hp.customer_id
 WHERE hp.price_id IS NOT NULL
   AND hp.hour_start >= %(month_start)s AND hp.hour_start < %(now_hour)s
 GROUP BY hp.customer_id, c.name
 ORDER BY hp.customer_id;
