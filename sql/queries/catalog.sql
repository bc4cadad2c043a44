-- name: lock_catalog
-- Serialise catalog loads with each other and with ledger posting (which reads agreements and
-- posts their credits) until the end of the transaction.
SELECT pg_advisory_xact_lock(hashtext('billing.catalog')),
       pg_advisory_xact_lock(hashtext('billing.ledger'));

-- name: create_catalog_staging
-- Temporary tables that one catalog is COPYed into; dropped at commit (and first, in case the
-- caller's transaction still holds them from an earlier load).
DROP TABLE IF EXISTS catalog_tier, catalog_customer, catalog_customer_tier, catalog_org,
    catalog_kind, catalog_price, catalog_iaa, catalog_iaa_modification, catalog_changes,
    catalog_ownership_change;
CREATE TEMP TABLE catalog_tier (name text NOT NULL, credits_per_month bigint NOT NULL)
    ON COMMIT DROP;
CREATE TEMP TABLE catalog_customer (id text NOT NULL, name text NOT NULL, tier text NOT NULL)
    ON COMMIT DROP;
CREATE TEMP TABLE catalog_customer_tier (
    customer_id text NOT NULL, tier text NOT NULL, valid_from date, valid_to date
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_org (
    org_guid text NOT NULL, customer_id text NOT NULL, alias text, valid_from timestamptz,
    valid_to timestamptz, source text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_kind (
    meter text NOT NULL, natural_id text NOT NULL, name text NOT NULL, details jsonb NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_price (
    kind text NOT NULL, microcredits_per_unit bigint NOT NULL, unit bigint NOT NULL,
    valid_from timestamptz NOT NULL, valid_to timestamptz, source text NOT NULL,
    resource_kind_id bigint, valid_during tstzrange
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_iaa (
    id text NOT NULL, customer_id text NOT NULL, credits_microcredits bigint NOT NULL,
    pop_start date NOT NULL, pop_end date NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_iaa_modification (
    iaa_id text NOT NULL, id text NOT NULL, effective date NOT NULL,
    credits_microcredits bigint NOT NULL, pop_end date
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_changes (
    changed_prices tstzmultirange NOT NULL, changed_orgs text[] NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE catalog_ownership_change (
    org_guid text NOT NULL, changed tstzmultirange NOT NULL
) ON COMMIT DROP;

-- name: copy_catalog_tier
-- COPY target for the tiers.
COPY catalog_tier (name, credits_per_month) FROM STDIN

-- name: copy_catalog_customer
-- COPY target for the customers.
COPY catalog_customer (id, name, tier) FROM STDIN

-- name: copy_catalog_customer_tier
-- COPY target for the customers' tiers over time.
COPY catalog_customer_tier (customer_id, tier, valid_from, valid_to) FROM STDIN

-- name: copy_catalog_org
-- COPY target for the orgs' owners over time.
COPY catalog_org (org_guid, customer_id, alias, valid_from, valid_to, source) FROM STDIN

-- name: copy_catalog_kind
-- COPY target for the resource kinds.
COPY catalog_kind (meter, natural_id, name, details) FROM STDIN

-- name: copy_catalog_price
-- COPY target for the prices, by kind name.
COPY catalog_price (kind, microcredits_per_unit, unit, valid_from, valid_to, source) FROM STDIN

-- name: copy_catalog_iaa
-- COPY target for the agreements.
COPY catalog_iaa (id, customer_id, credits_microcredits, pop_start, pop_end) FROM STDIN

-- name: copy_catalog_iaa_modification
-- COPY target for the agreements' modifications.
COPY catalog_iaa_modification (iaa_id, id, effective, credits_microcredits, pop_end) FROM STDIN

-- name: upsert_catalog_tiers
-- Add new tiers and update changed ones; a tier gone from the catalog stays (customers and
-- history may refer to it).
INSERT INTO billing.tier AS t (name, credits_per_month)
SELECT name, credits_per_month FROM catalog_tier
ON CONFLICT (name) DO UPDATE
   SET credits_per_month = EXCLUDED.credits_per_month
 WHERE t.credits_per_month IS DISTINCT FROM EXCLUDED.credits_per_month;

-- name: upsert_catalog_customers
-- Add new customers and update changed ones; a customer gone from the catalog stays (its
-- ledger accounts refer to it).
INSERT INTO billing.customer AS c (id, name, tier)
SELECT id, name, tier FROM catalog_customer
ON CONFLICT (id) DO UPDATE
   SET name = EXCLUDED.name, tier = EXCLUDED.tier
 WHERE (c.name, c.tier) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.tier);

-- name: upsert_catalog_kinds
-- Name the catalog's resource kinds (creating those not seen in usage yet) and merge their
-- details; kinds are never deleted, usage refers to them.
INSERT INTO billing.resource_kind AS k (meter, natural_id, name, details)
SELECT meter, natural_id, name, details FROM catalog_kind
ON CONFLICT (meter, natural_id) DO UPDATE
   SET name = EXCLUDED.name, details = k.details || EXCLUDED.details
 WHERE k.name IS DISTINCT FROM EXCLUDED.name OR NOT k.details @> EXCLUDED.details;

-- name: resolve_catalog_prices
-- Each staged price's resource kind id (by the kind's name in the catalog) and validity range.
UPDATE catalog_price p
   SET resource_kind_id = k.id, valid_during = tstzrange(p.valid_from, p.valid_to, '[)')
  FROM catalog_kind ck
  JOIN billing.resource_kind k ON k.meter = ck.meter AND k.natural_id = ck.natural_id
 WHERE ck.name = p.kind;

-- name: record_catalog_ownership_changes
-- Before anything is replaced: per org, the instants at which its owner differs between the
-- stored ownership and the catalog's (the periods in one set and not the other, less the
-- instants where both give the same owner). A changed alias alone changes no instant.
INSERT INTO catalog_ownership_change (org_guid, changed)
WITH old_owner AS (
    SELECT org_guid, customer_id, valid_during FROM billing.org_ownership
),
new_owner AS (
    SELECT org_guid, customer_id, tstzrange(valid_from, valid_to, '[)') AS valid_during
      FROM catalog_org
),
differing AS (
    (SELECT * FROM old_owner EXCEPT SELECT * FROM new_owner)
    UNION ALL
    (SELECT * FROM new_owner EXCEPT SELECT * FROM old_owner)
),
differing_by_org AS (
    SELECT org_guid, range_agg(valid_during) AS during FROM differing GROUP BY org_guid
),
agreeing_by_org AS (
    SELECT o.org_guid, range_agg(o.valid_during * n.valid_during) AS during
      FROM old_owner o
      JOIN new_owner n USING (org_guid, customer_id)
     WHERE o.valid_during && n.valid_during
     GROUP BY o.org_guid
)
SELECT d.org_guid, d.during - coalesce(a.during, '{}'::tstzmultirange)
  FROM differing_by_org d
  LEFT JOIN agreeing_by_org a USING (org_guid)
 WHERE d.during - coalesce(a.during, '{}'::tstzmultirange) <> '{}'::tstzmultirange;

-- name: record_catalog_changes
-- Before anything is replaced: the instants at which some kind's price differs between the
-- stored prices and the catalog's (the validity ranges of prices in one set and not the other,
-- less the instants where both sets agree on the terms), and the orgs whose owner changed
-- (record_catalog_ownership_changes runs first).
INSERT INTO catalog_changes (changed_prices, changed_orgs)
WITH old_price AS (
    SELECT resource_kind_id, microcredits_per_unit, unit, valid_during FROM billing.price
),
new_price AS (
    SELECT resource_kind_id, microcredits_per_unit, unit, valid_during FROM catalog_price
),
differing AS (
    (SELECT * FROM old_price EXCEPT SELECT * FROM new_price)
    UNION ALL
    (SELECT * FROM new_price EXCEPT SELECT * FROM old_price)
),
differing_by_kind AS (
    SELECT resource_kind_id, range_agg(valid_during) AS during
      FROM differing
     GROUP BY resource_kind_id
),
agreeing_by_kind AS (
    SELECT o.resource_kind_id, range_agg(o.valid_during * n.valid_during) AS during
      FROM old_price o
      JOIN new_price n USING (resource_kind_id, microcredits_per_unit, unit)
     WHERE o.valid_during && n.valid_during
     GROUP BY o.resource_kind_id
),
changed_ranges AS (
    SELECT changed
      FROM differing_by_kind d
      LEFT JOIN agreeing_by_kind a USING (resource_kind_id)
     CROSS JOIN unnest(d.during - coalesce(a.during, '{}'::tstzmultirange)) AS changed
)
SELECT coalesce((SELECT range_agg(changed) FROM changed_ranges), '{}'::tstzmultirange),
       coalesce((SELECT array_agg(org_guid ORDER BY org_guid) FROM catalog_ownership_change),
                '{}')
RETURNING changed_prices, changed_orgs;

-- name: replace_catalog_ownership
-- Org ownership is the catalog's: replace all of it (after the changes were recorded).
DELETE FROM billing.org_ownership;
INSERT INTO billing.org_ownership (org_guid, customer_id, alias, valid_during, source)
SELECT org_guid, customer_id, alias, tstzrange(valid_from, valid_to, '[)'), source
  FROM catalog_org;

-- name: replace_catalog_customer_tiers
-- Customers' tiers over time are the catalog's: replace all of them.
DELETE FROM billing.customer_tier;
INSERT INTO billing.customer_tier (customer_id, tier, valid_during)
SELECT customer_id, tier, daterange(valid_from, valid_to, '[)') FROM catalog_customer_tier;

-- name: delete_catalog_prices
-- Prices are the catalog's: drop every stored price whose kind, terms or range it no longer
-- has (first, so that a replacement never overlaps the price it replaces).
DELETE FROM billing.price p
 WHERE NOT EXISTS (SELECT 1 FROM catalog_price n
                    WHERE n.resource_kind_id = p.resource_kind_id
                      AND n.microcredits_per_unit = p.microcredits_per_unit
                      AND n.unit = p.unit
                      AND n.valid_during = p.valid_during);

-- name: update_catalog_price_sources
-- Prices kept as they are get the catalog entry they now come from.
UPDATE billing.price p
   SET source = n.source
  FROM catalog_price n
 WHERE n.resource_kind_id = p.resource_kind_id
   AND n.microcredits_per_unit = p.microcredits_per_unit
   AND n.unit = p.unit
   AND n.valid_during = p.valid_during
   AND p.source IS DISTINCT FROM n.source;

-- name: insert_catalog_prices
-- Add the catalog's prices that are not stored yet.
INSERT INTO billing.price (resource_kind_id, microcredits_per_unit, unit, valid_during, source)
SELECT n.resource_kind_id, n.microcredits_per_unit, n.unit, n.valid_during, n.source
  FROM catalog_price n
 WHERE NOT EXISTS (SELECT 1 FROM billing.price p
                    WHERE p.resource_kind_id = n.resource_kind_id
                      AND p.microcredits_per_unit = n.microcredits_per_unit
                      AND p.unit = n.unit
                      AND p.valid_during = n.valid_during);

-- name: refused_modification_changes
-- Modifications the catalog changes, adds or no longer lists, of which the modification or
-- the agreement's expiry is already posted: refused.
WITH stored AS (
    SELECT iaa_id, id, effective, credits_microcredits, pop_end FROM billing.iaa_modification
),
staged AS (
    SELECT iaa_id, id, effective, credits_microcredits, pop_end FROM catalog_iaa_modification
),
changed AS (
    SELECT iaa_id, id, s.effective IS NOT NULL AS stored, n.effective IS NOT NULL AS listed
      FROM stored s
      FULL JOIN staged n USING (iaa_id, id)
     WHERE (s.effective, s.credits_microcredits, s.pop_end)
           IS DISTINCT FROM (n.effective, n.credits_microcredits, n.pop_end)
)
SELECT c.iaa_id, c.id, c.stored, c.listed,
       EXISTS (SELECT 1 FROM billing.ledger_transaction t
                WHERE t.idempotency_key = 'iaa_pop_end:' || c.iaa_id) AS expired
  FROM changed c
 WHERE EXISTS (SELECT 1 FROM billing.ledger_transaction t
                WHERE t.idempotency_key IN ('iaa_modification:' || c.iaa_id || ':' || c.id,
                                            'iaa_pop_end:' || c.iaa_id))
 ORDER BY c.iaa_id, c.id;

-- name: replace_catalog_modifications
-- The modifications are the catalog's (a posted one cannot differ: see
-- refused_modification_changes): drop those it no longer lists, add and update the rest.
DELETE FROM billing.iaa_modification m
 WHERE NOT EXISTS (SELECT 1 FROM catalog_iaa_modification n
                    WHERE n.iaa_id = m.iaa_id AND n.id = m.id);
INSERT INTO billing.iaa_modification AS m (iaa_id, id, effective, credits_microcredits, pop_end)
SELECT iaa_id, id, effective, credits_microcredits, pop_end FROM catalog_iaa_modification
ON CONFLICT (iaa_id, id) DO UPDATE
   SET effective = EXCLUDED.effective, credits_microcredits = EXCLUDED.credits_microcredits,
       pop_end = EXCLUDED.pop_end
 WHERE (m.effective, m.credits_microcredits, m.pop_end)
       IS DISTINCT FROM (EXCLUDED.effective, EXCLUDED.credits_microcredits, EXCLUDED.pop_end);

-- name: refused_iaa_changes
-- Agreements the catalog changes (customer, credits or period) whose credits are already
-- posted to the ledger: such a change is refused.
SELECT i.id, i.customer_id, i.credits_microcredits, i.period_of_performance,
       s.customer_id AS new_customer_id, s.credits_microcredits AS new_credits_microcredits,
       daterange(s.pop_start, s.pop_end + 1) AS new_period_of_performance
  FROM billing.iaa i
  JOIN catalog_iaa s ON s.id = i.id
 WHERE (i.customer_id, i.credits_microcredits, i.period_of_performance)
       IS DISTINCT FROM (s.customer_id, s.credits_microcredits, daterange(s.pop_start, s.pop_end + 1))
   AND EXISTS (SELECT 1 FROM billing.ledger_transaction t
                WHERE t.idempotency_key = 'iaa_pop_start:' || i.id)
 ORDER BY i.id;

-- name: upsert_catalog_iaas
-- Add new agreements and update changed ones (none of those is posted: see
-- refused_iaa_changes); an agreement gone from the catalog stays.
INSERT INTO billing.iaa AS i (id, customer_id, credits_microcredits, period_of_performance)
SELECT id, customer_id, credits_microcredits, daterange(pop_start, pop_end + 1)
  FROM catalog_iaa
ON CONFLICT (id) DO UPDATE
   SET customer_id = EXCLUDED.customer_id,
       credits_microcredits = EXCLUDED.credits_microcredits,
       period_of_performance = EXCLUDED.period_of_performance
 WHERE (i.customer_id, i.credits_microcredits, i.period_of_performance)
       IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.credits_microcredits,
                         EXCLUDED.period_of_performance);

-- name: newest_catalog_load
-- The most recent catalog load, to tell whether this catalog is the one already loaded.
SELECT id, checksum FROM billing.catalog_load ORDER BY id DESC LIMIT 1;

-- name: insert_catalog_load
-- Record the load with what it changed (the instants of each org whose owner changed in
-- billing.ownership_change); the re-pricing sensor picks it up.
WITH load AS (
    INSERT INTO billing.catalog_load (source, checksum, summary, changed_prices, changed_orgs)
    SELECT %(source)s, %(checksum)s, %(summary)s, changed_prices, changed_orgs
      FROM catalog_changes
    RETURNING id
),
orgs AS (
    INSERT INTO billing.ownership_change (catalog_load_id, org_guid, changed)
    SELECT load.id, c.org_guid, c.changed FROM load CROSS JOIN catalog_ownership_change c
)
SELECT id FROM load;
