-- name: ensure_accounts
-- Every customer has one account of every type, and every agreement a credit_pool (its lot).
INSERT INTO billing.account (customer_id, account_type, iaa_id)
SELECT c.id, t.name, NULL FROM billing.customer c CROSS JOIN billing.account_type t
 UNION ALL
SELECT i.customer_id, 'credit_pool', i.id FROM billing.iaa i
ON CONFLICT ON CONSTRAINT account_customer_type_agreement DO NOTHING;

-- name: post_month_usage
-- Post a business month's usage: per customer and price line, the month's quantity priced
-- and rounded once (half-even), compared with what is already posted for that month. A
-- customer with nothing posted gets a usage_post; one whose charges changed since gets an
-- adjustment of the difference. Unchanged customers get nothing. This writes the transactions
-- and their lines; their entries (which agreement's lot each hour draws from) follow in the
-- same database transaction, and the balance trigger checks every transaction at commit.
WITH current_lines AS (
    SELECT customer_id, resource_kind_id, microcredits_per_unit, unit,
           sum(quantity) AS quantity,
           billing.div_round_half_even(sum(quantity)::numeric * microcredits_per_unit,
                                       unit)::bigint AS amount
      FROM billing.hourly_posting
     WHERE hour_start >= %(month_start)s AND hour_start < %(month_end)s
       AND customer_id IS NOT NULL AND price_id IS NOT NULL
     GROUP BY customer_id, resource_kind_id, microcredits_per_unit, unit
),
posted_lines AS (
    SELECT t.customer_id, l.resource_kind_id, l.microcredits_per_unit, l.unit,
           sum(l.quantity) AS quantity, sum(l.amount_microcredits)::bigint AS amount
      FROM billing.ledger_transaction t
      JOIN billing.posting_line l ON l.transaction_id = t.id
     WHERE t.business_month = %(business_month)s
     GROUP BY t.customer_id, l.resource_kind_id, l.microcredits_per_unit, l.unit
),
diff AS (
    SELECT customer_id, resource_kind_id, microcredits_per_unit, unit,
           coalesce(c.quantity, 0) - coalesce(p.quantity, 0) AS quantity,
           coalesce(c.amount, 0) - coalesce(p.amount, 0) AS amount
      FROM current_lines c
      FULL JOIN posted_lines p
           USING (customer_id, resource_kind_id, microcredits_per_unit, unit)
     WHERE coalesce(c.quantity, 0) <> coalesce(p.quantity, 0)
        OR coalesce(c.amount, 0) <> coalesce(p.amount, 0)
),
totals AS (
    SELECT customer_id, sum(amount)::bigint AS amount
      FROM diff GROUP BY customer_id HAVING sum(amount) <> 0
),
prior AS (
    SELECT customer_id, count(*) AS n
      FROM billing.ledger_transaction
     WHERE business_month = %(business_month)s
       AND transaction_type IN ('usage_post', 'adjustment')
     GROUP BY customer_id
),
new_tx AS (
    INSERT INTO billing.ledger_transaction
           (transaction_type, idempotency_key, customer_id, effective_at, description,
            business_month)
    SELECT CASE WHEN prior.n IS NULL THEN 'usage_post' ELSE 'adjustment' END,
           CASE WHEN prior.n IS NULL
                THEN 'usage_post:' || t.customer_id || ':' || %(month_label)s
                ELSE 'adjustment:' || t.customer_id || ':' || %(month_label)s || ':' || prior.n
           END,
           t.customer_id, %(month_start)s,
           CASE WHEN prior.n IS NULL THEN 'usage of ' || %(month_label)s
                ELSE 'change in ' || %(month_label)s || ' usage after it was posted'
           END,
           %(business_month)s
      FROM totals t
      LEFT JOIN prior USING (customer_id)
    RETURNING id, customer_id, transaction_type, idempotency_key
),
lines AS (
    INSERT INTO billing.posting_line
           (transaction_id, resource_kind_id, microcredits_per_unit, unit, quantity,
            amount_microcredits)
    SELECT n.id, d.resource_kind_id, d.microcredits_per_unit, d.unit, d.quantity, d.amount
      FROM new_tx n
      JOIN diff d USING (customer_id)
    RETURNING transaction_id
)
SELECT n.id AS transaction_id, n.customer_id, n.transaction_type, n.idempotency_key,
       t.amount AS amount_microcredits,
       (SELECT count(*) FROM lines l WHERE l.transaction_id = n.id) AS lines
  FROM new_tx n
  JOIN totals t USING (customer_id)
 ORDER BY n.customer_id;

-- name: post_iaa_ends
-- Expire what is left in an agreement's lot when its period of performance (as modified) has
-- ended by the end of the month (debit its credit_pool, credit credits_expired), once. Only hours inside
-- the period draw from the lot, so its balance is what is left. (Months are posted in order
-- by the schedule; an agreement that ended before the first month ever posted expires with
-- that month.)
WITH due AS (
    SELECT a.id, a.customer_id, a.ends_at
      FROM billing.agreement a
     WHERE a.ends_at <= %(month_end)s
       AND NOT EXISTS (SELECT 1 FROM billing.ledger_transaction t
                        WHERE t.idempotency_key = 'iaa_pop_end:' || a.id)
),
remaining AS (
    SELECT d.*, b.balance_microcredits AS left_microcredits
      FROM due d
      JOIN billing.account_balance b
        ON b.customer_id = d.customer_id AND b.account_type = 'credit_pool' AND b.iaa_id = d.id
),
new_tx AS (
    INSERT INTO billing.ledger_transaction
           (transaction_type, idempotency_key, customer_id, effective_at, description)
    SELECT 'iaa_pop_end', 'iaa_pop_end:' || r.id, r.customer_id, r.ends_at,
           'credits left when agreement ' || r.id || ' ended'
      FROM remaining r
     WHERE r.left_microcredits > 0
    RETURNING id, customer_id, idempotency_key
),
entries AS (
    INSERT INTO billing.ledger_entry (transaction_id, account_id, direction, amount_microcredits)
    SELECT n.id, a.id, side.direction, r.left_microcredits
      FROM new_tx n
      JOIN remaining r ON n.idempotency_key = 'iaa_pop_end:' || r.id
     CROSS JOIN (VALUES ('credit_pool', 1), ('credits_expired', -1))
           AS side (account_type, direction)
      JOIN billing.account a
        ON a.customer_id = n.customer_id AND a.account_type = side.account_type
       AND a.iaa_id IS NOT DISTINCT FROM
           (CASE WHEN side.account_type = 'credit_pool' THEN r.id END)
    RETURNING transaction_id
)
SELECT n.customer_id, 'iaa_pop_end' AS transaction_type, n.idempotency_key,
       r.left_microcredits AS amount_microcredits
  FROM new_tx n
  JOIN remaining r ON n.idempotency_key = 'iaa_pop_end:' || r.id
 WHERE EXISTS (SELECT 1 FROM entries e WHERE e.transaction_id = n.id)
 ORDER BY n.customer_id;

-- name: post_agreement_credits
-- Post the credits that arrive in agreements' lots by the end of the month, each once, as a
-- transaction of its own: an agreement's purchase when its period begins (iaa_pop_start: debit
-- receivable, credit the agreement's credit_pool), and each modification that adds or removes
-- credits when it takes effect (iaa_modification; credits removed the reverse). A
-- modification that only moves the period's end posts nothing: the lot expires at the new end.
WITH arriving AS (
    SELECT 'iaa_pop_start' AS transaction_type, 'iaa_pop_start:' || i.id AS idempotency_key,
           i.id AS iaa_id, i.customer_id, i.credits_microcredits AS amount,
           lower(i.period_of_performance)::timestamp AT TIME ZONE 'America/New_York'
               AS effective_at,
           'credits of agreement ' || i.id || ' available' AS description
      FROM billing.iaa i
     UNION ALL
    SELECT 'iaa_modification', 'iaa_modification:' || m.iaa_id || ':' || m.id, m.iaa_id,
           i.customer_id, m.credits_microcredits,
           m.effective::timestamp AT TIME ZONE 'America/New_York',
           'modification ' || m.id || ' of agreement ' || m.iaa_id || ': '
           || abs(m.credits_microcredits) || ' microcredits '
           || CASE WHEN m.credits_microcredits > 0 THEN 'added' ELSE 'removed' END
      FROM billing.iaa_modification m
      JOIN billing.iaa i ON i.id = m.iaa_id
     WHERE m.credits_microcredits <> 0
),
due AS (
    SELECT * FROM arriving a
     WHERE a.effective_at < %(month_end)s
       AND NOT EXISTS (SELECT 1 FROM billing.ledger_transaction t
                        WHERE t.idempotency_key = a.idempotency_key)
),
new_tx AS (
    INSERT INTO billing.ledger_transaction
           (transaction_type, idempotency_key, customer_id, effective_at, description)
    SELECT transaction_type, idempotency_key, customer_id, effective_at, description FROM due
    RETURNING id, idempotency_key
),
entries AS (
    INSERT INTO billing.ledger_entry (transaction_id, account_id, direction, amount_microcredits)
    SELECT n.id, a.id, side.direction * sign(d.amount)::smallint, abs(d.amount)
      FROM new_tx n
      JOIN due d USING (idempotency_key)
     CROSS JOIN (VALUES ('receivable', 1), ('credit_pool', -1)) AS side (account_type, direction)
      JOIN billing.account a
        ON a.customer_id = d.customer_id AND a.account_type = side.account_type
       AND a.iaa_id IS NOT DISTINCT FROM
           (CASE WHEN side.account_type = 'credit_pool' THEN d.iaa_id END)
    RETURNING transaction_id
)
SELECT d.customer_id, d.transaction_type, d.idempotency_key,
       d.amount AS amount_microcredits
  FROM new_tx n
  JOIN due d USING (idempotency_key)
 WHERE EXISTS (SELECT 1 FROM entries e WHERE e.transaction_id = n.id)
 ORDER BY d.customer_id, d.effective_at, d.idempotency_key;

-- name: month_hourly_charges
-- Every customer's exact charge per hour of a business month (priced, owned usage), read once
-- per posting for all the customers it posts (one scan of the month, not one per customer).
SELECT customer_id, hour_start, sum(amount_microcredits) AS amount
  FROM billing.hourly_posting
 WHERE customer_id IS NOT NULL AND price_id IS NOT NULL
   AND hour_start >= %(month_start)s AND hour_start < %(month_end)s
 GROUP BY customer_id, hour_start
 ORDER BY customer_id, hour_start;

-- name: month_posted_total
-- What a customer's posted lines of a business month add up to (usage posts and adjustments).
SELECT coalesce(sum(l.amount_microcredits), 0)::bigint AS amount
  FROM billing.ledger_transaction t
  JOIN billing.posting_line l ON l.transaction_id = t.id
 WHERE t.customer_id = %(customer_id)s AND t.business_month = %(business_month)s;

-- name: month_draws
-- What a customer's earlier postings of a business month drew, per hour and agreement (NULL:
-- overage), net of what they gave back.
SELECT d.hour_start, d.iaa_id, sum(d.amount_microcredits)::bigint AS amount
  FROM billing.ledger_draw d
  JOIN billing.ledger_transaction t ON t.id = d.transaction_id
 WHERE t.customer_id = %(customer_id)s AND t.business_month = %(business_month)s
 GROUP BY d.hour_start, d.iaa_id
HAVING sum(d.amount_microcredits) <> 0;

-- name: customer_lots
-- A customer's agreements as lots: the period as modified (UTC instants), what is left,
-- whether expired, and the credits its posted modifications added, with the instant each
-- arrived (an hour draws only credits that had arrived by then).
SELECT a.id AS iaa_id, a.starts_at, a.ends_at,
       greatest(b.balance_microcredits, 0) AS remaining,
       EXISTS (SELECT 1 FROM billing.ledger_transaction t
                WHERE t.idempotency_key = 'iaa_pop_end:' || a.id) AS expired,
       coalesce((SELECT jsonb_agg(jsonb_build_array(
                            m.effective::timestamp AT TIME ZONE 'America/New_York',
                            m.credits_microcredits) ORDER BY m.effective, m.id)
                   FROM billing.iaa_modification m
                   JOIN billing.ledger_transaction t
                     ON t.idempotency_key = 'iaa_modification:' || m.iaa_id || ':' || m.id
                  WHERE m.iaa_id = a.id AND m.credits_microcredits > 0), '[]') AS arrivals
  FROM billing.agreement a
  JOIN billing.account_balance b
    ON b.customer_id = a.customer_id AND b.account_type = 'credit_pool' AND b.iaa_id = a.id
 WHERE a.customer_id = %(customer_id)s;

-- name: customer_accounts
-- A customer's accounts: (type, agreement or NULL) -> id.
SELECT account_type, iaa_id, id FROM billing.account WHERE customer_id = %(customer_id)s;

-- name: insert_entry
-- One entry of a usage transaction.
INSERT INTO billing.ledger_entry (transaction_id, account_id, direction, amount_microcredits)
VALUES (%(transaction_id)s, %(account_id)s, %(direction)s, %(amount)s);

-- name: copy_draws
-- What a usage transaction drew (or gave back) per hour and agreement.
COPY billing.ledger_draw (transaction_id, hour_start, iaa_id, amount_microcredits) FROM STDIN

-- name: ledger_imbalances
-- Transactions whose entries do not sum to zero, and the whole ledger's net (should be none
-- and zero: the trigger prevents it, this check proves it).
SELECT t.id, t.idempotency_key, sum(e.amount_microcredits::numeric * e.direction) AS net
  FROM billing.ledger_transaction t
  LEFT JOIN billing.ledger_entry e ON e.transaction_id = t.id
 GROUP BY t.id, t.idempotency_key
HAVING coalesce(sum(e.amount_microcredits::numeric * e.direction), 0) <> 0
    OR count(e.id) < 2;

-- name: ledger_totals
-- Debits and credits of the whole ledger.
SELECT coalesce(sum(amount_microcredits) FILTER (WHERE direction = 1), 0)::bigint AS debits,
       coalesce(sum(amount_microcredits) FILTER (WHERE direction = -1), 0)::bigint AS credits,
       count(DISTINCT transaction_id) AS transactions
  FROM billing.ledger_entry;

-- name: customer_balances
-- Every customer's balance per account type, in microcredits, and its tier today (New York).
SELECT c.id AS customer_id, c.name,
       (SELECT ct.tier FROM billing.customer_tier ct
         WHERE ct.customer_id = c.id
           AND ct.valid_during @> (now() AT TIME ZONE 'America/New_York')::date) AS tier,
       coalesce(sum(b.balance_microcredits) FILTER (WHERE b.account_type = 'credit_pool'), 0)
           ::bigint AS credit_pool,
       coalesce(sum(b.balance_microcredits) FILTER (WHERE b.account_type = 'credits_used'), 0)
           ::bigint AS credits_used,
       coalesce(sum(b.balance_microcredits) FILTER (WHERE b.account_type = 'credits_expired'),
                0)::bigint AS credits_expired,
       coalesce(sum(b.balance_microcredits) FILTER (WHERE b.account_type = 'receivable'), 0)
           ::bigint AS receivable,
       coalesce(sum(b.balance_microcredits) FILTER (WHERE b.account_type = 'overage'), 0)
           ::bigint AS overage
  FROM billing.customer c
  LEFT JOIN billing.account_balance b ON b.customer_id = c.id
 GROUP BY c.id, c.name, c.tier
 ORDER BY c.id;

-- name: month_coverage
-- How much of a month was measured before it was posted: hours derived and hours flagged,
-- per meter.
SELECT meter, count(*) AS hours_derived,
       count(*) FILTER (WHERE status <> 'complete') AS hours_flagged
  FROM billing.hour_coverage
 WHERE hour_start >= %(month_start)s AND hour_start < %(month_end)s
 GROUP BY meter
 ORDER BY meter;
