-- name: lock_catalog
-- Serialise catalog loads with each other and with ledger posting (which reads agreements and
-- posts their credits) until the end of the transaction.
SELECT pg_advisory_xact_lock(hashtext('billing.catalog')),
       pg_advisory_xact_lock(hashtext('billing.ledger'));

-- name: create_catalog_staging
-- Temporary tables that one catalog is COPYed into; dropped at commit (and first, in case the
-- caller's transaction still holds them from an earlier load).
DROP TABLE IF EXISTS catalog_tier, catalog_customer, catalog_customer_org, catalog_kind,
    catalog_price, catalog_iaa, catalog_changes;
CREATE TEMP TABLE catalog_tier (name text NOT NULL, credits_per_month bigint NOT NULL)
    ON COMMIT DROP;
CREATE TEMP TABLE catalog_customer (id text NOT NULL, name text NOT NULL, tier text NOT NULL)
    ON COMMIT DROP;
CREATE TEMP TABLE catalog_customer_org (org_name text NOT NULL, customer_id text NOT NULL)
    ON COMMIT DROP;
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
CREATE TEMP TABLE catalog_changes (
    changed_prices tstzmultirange NOT NULL, changed_orgs text[] NOT NULL
) ON COMMIT DROP;

-- name: copy_catalog_tier
-- COPY target for the tiers.
COPY catalog_tier (name, credits_per_month) FROM STDIN

-- name: copy_catalog_customer
-- COPY target for the customers.
COPY catalog_customer (id, name, tier) FROM STDIN

-- name: copy_catalog_customer_org
-- COPY target for the org-to-customer mapping.
COPY catalog_customer_org (org_name, customer_id) FROM STDIN

-- name: copy_catalog_kind
-- COPY target for the resource kinds.
COPY catalog_kind (meter, natural_id, name, details) FROM STDIN

-- name: copy_catalog_price
-- COPY target for the prices, by kind name.
COPY catalog_price (kind, microcredits_per_unit, unit, valid_from, valid_to, source) FROM STDIN

-- name: copy_catalog_iaa
-- COPY target for the agreements.
COPY catalog_iaa (id, customer_id, credits_microcredits, pop_start, pop_end) FROM STDIN

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

-- name: record_catalog_changes
-- Before anything is replaced: the instants at which some kind's price differs between the
-- stored prices and the catalog's (the validity ranges of prices in one set and not the other,
-- less the instants where both sets agree on the terms), and the orgs whose customer differs.
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
),
changed_orgs AS (
    SELECT org_name
      FROM billing.customer_org o
      FULL JOIN catalog_customer_org n USING (org_name)
     WHERE o.customer_id IS DISTINCT FROM n.customer_id
)
SELECT coalesce((SELECT range_agg(changed) FROM changed_ranges), '{}'::tstzmultirange),
       coalesce((SELECT array_agg(org_name ORDER BY org_name) FROM changed_orgs), '{}')
RETURNING changed_prices, changed_orgs;

-- name: delete_catalog_orgs
-- The org-to-customer mapping is the catalog's: drop the orgs it no longer lists.
DELETE FROM billing.customer_org o
 WHERE NOT EXISTS (SELECT 1 FROM catalog_customer_org n WHERE n.org_name = o.org_name);

-- name: upsert_catalog_orgs
-- Map each org the catalog lists to its customer.
INSERT INTO billing.customer_org AS o (org_name, customer_id)
SELECT org_name, customer_id FROM catalog_customer_org
ON CONFLICT (org_name) DO UPDATE
   SET customer_id = EXCLUDED.customer_id
 WHERE o.customer_id IS DISTINCT FROM EXCLUDED.customer_id;

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
-- Record the load with what it changed; the re-pricing sensor picks it up.
INSERT INTO billing.catalog_load (source, checksum, summary, changed_prices, changed_orgs)
SELECT %(source)s, %(checksum)s, %(summary)s, changed_prices, changed_orgs FROM catalog_changes
RETURNING id;
