-- The fault campaign's SQL: what a run left in the database, in a form two databases can be
-- compared by (natural keys, no surrogate ids). Comparison only: nothing here bills.

-- name: measurement_rows
-- Every measurement, by hour, meter, resource and kind.
SELECT m.hour_start, r.meter, r.natural_id AS resource, k.natural_id AS kind, m.value
  FROM billing.hourly_measurement m
  JOIN billing.resource r ON r.id = m.resource_id
  JOIN billing.resource_kind k ON k.id = m.resource_kind_id
 ORDER BY 1, 2, 3, 4;

-- name: coverage_rows
-- What the project says of each hour and meter.
SELECT hour_start, meter, status, uncovered_seconds, uncertain_resources
  FROM billing.hour_coverage
 ORDER BY 1, 2;

-- name: posting_rows
-- Every priced posting, exact amounts, price terms instead of price ids.
SELECT p.hour_start, p.org_guid, p.space_guid, p.customer_id, k.meter, k.natural_id AS kind,
       p.microcredits_per_unit, p.unit, p.quantity, p.amount_microcredits, p.resources
  FROM billing.hourly_posting p
  JOIN billing.resource_kind k ON k.id = p.resource_kind_id
 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8;

-- name: ledger_rows
-- Every ledger entry with its transaction's natural key.
SELECT t.transaction_type, t.idempotency_key, t.customer_id, t.effective_at, t.business_month,
       a.account_type || coalesce(':' || a.iaa_id, '') AS account, e.direction,
       e.amount_microcredits
  FROM billing.ledger_transaction t
  JOIN billing.ledger_entry e ON e.transaction_id = t.id
  JOIN billing.account a ON a.id = e.account_id
 ORDER BY 2, 6, 7, 8;

-- name: event_rows
-- Every landed usage event (a lost one or a doubled one shows here).
SELECT 'app' AS stream, guid, created_at FROM billing.app_usage_event
 UNION ALL
SELECT 'service', guid, created_at FROM billing.service_usage_event
 ORDER BY 1, 2;

-- name: ledger_balance
-- Transactions whose entries do not sum to zero, and the signed sum of all entries.
SELECT count(*) FILTER (WHERE signed <> 0) AS unbalanced_transactions,
       coalesce(sum(signed), 0)::bigint AS net
  FROM (SELECT transaction_id, sum(direction * amount_microcredits) AS signed
          FROM billing.ledger_entry GROUP BY transaction_id) t;

-- name: reading_errors
-- The errors recorded by the readings of a landing (a snapshot's failed or partial meters).
SELECT meter, status, error
  FROM billing.reading
 WHERE taken_at = %(taken_at)s AND error IS NOT NULL
 ORDER BY meter;

-- Tampering: what the application's own role might try against the posted ledger. Each must
-- be refused by the database.

-- name: tamper_update_entry
UPDATE billing.ledger_entry SET amount_microcredits = amount_microcredits + 1
 WHERE id = (SELECT min(id) FROM billing.ledger_entry);

-- name: tamper_delete_entry
DELETE FROM billing.ledger_entry WHERE id = (SELECT max(id) FROM billing.ledger_entry);

-- name: tamper_update_transaction
UPDATE billing.ledger_transaction SET effective_at = effective_at + interval '1 month'
 WHERE id = (SELECT min(id) FROM billing.ledger_transaction);

-- name: tamper_delete_transaction
DELETE FROM billing.ledger_transaction
 WHERE id = (SELECT max(id) FROM billing.ledger_transaction);

-- name: tamper_truncate_ledger
TRUNCATE billing.ledger_transaction CASCADE;

-- name: tamper_update_posting_line
UPDATE billing.posting_line SET amount_microcredits = 0
 WHERE transaction_id = (SELECT min(transaction_id) FROM billing.posting_line);

-- name: tamper_truncate_posting_lines
TRUNCATE billing.posting_line;

-- name: tamper_unbalanced_transaction
-- One entry: a charge with no credit against it.
WITH tx AS (
    INSERT INTO billing.ledger_transaction
           (transaction_type, idempotency_key, customer_id, effective_at, description)
    SELECT 'adjustment', 'tamper:' || customer_id, customer_id, now(), 'a one-sided entry'
      FROM billing.account ORDER BY id LIMIT 1
    RETURNING id, customer_id
)
INSERT INTO billing.ledger_entry (transaction_id, account_id, direction, amount_microcredits)
SELECT tx.id, a.id, 1, 1000000
  FROM tx JOIN billing.account a ON a.customer_id = tx.customer_id
 WHERE a.account_type = 'receivable';

-- name: tamper_delete_usage_event
DELETE FROM billing.app_usage_event
 WHERE guid = (SELECT min(guid) FROM billing.app_usage_event);

-- name: tamper_update_usage_event
UPDATE billing.service_usage_event SET created_at = created_at + interval '1 hour'
 WHERE guid = (SELECT min(guid) FROM billing.service_usage_event);

-- name: tamper_truncate_observations
TRUNCATE billing.observation;

-- name: tamper_update_draw
UPDATE billing.ledger_draw SET iaa_id = NULL
 WHERE transaction_id = (SELECT min(transaction_id) FROM billing.ledger_draw);

-- name: tamper_replication_role
-- With replica role, ordinary triggers (the append-only ones) do not fire.
SET session_replication_role = replica;

-- name: catalog_rows
-- The catalog as loaded: a refused load must leave every row of it as it was.
SELECT 'tier' AS what, to_jsonb(t) - 'id' AS row FROM billing.tier t
 UNION ALL SELECT 'customer', to_jsonb(c) FROM billing.customer c
 UNION ALL SELECT 'customer_tier', to_jsonb(ct) FROM billing.customer_tier ct
 UNION ALL SELECT 'org_ownership', to_jsonb(o) FROM billing.org_ownership o
 UNION ALL SELECT 'resource_kind', to_jsonb(k) FROM billing.resource_kind k
 UNION ALL SELECT 'price', to_jsonb(p) FROM billing.price p
 UNION ALL SELECT 'iaa', to_jsonb(i) FROM billing.iaa i
 UNION ALL SELECT 'iaa_modification', to_jsonb(m) FROM billing.iaa_modification m
 UNION ALL SELECT 'catalog_load', to_jsonb(l) FROM billing.catalog_load l
 ORDER BY 1, 2;
