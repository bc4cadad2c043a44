-- name: delete_postings
-- Remove a window's priced postings before they are derived again (same transaction).
DELETE FROM billing.hourly_posting
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: derive_postings
-- Price every measurement of the window at the price valid at the start of its hour, charge it
-- to the customer that owns its org (by guid) at that hour, and roll it up per hour, space
-- and resource kind (with the space's org, the customer and the price). Unpriced usage and
-- usage of orgs with no owner are kept with NULL price or customer.
-- The measurements are summed per hour, space and kind first, and only those sums are joined:
-- a space has one org, an org one owner at an instant and a kind one price at an instant (the
-- catalog's exclusion constraints), so each sum is one posting row. The sums are taken one
-- hour at a time (an index range of the measurements' primary key per hour, a small aggregate
-- per hour) and come out in hour order, the order of the grain index. That relies on an
-- hour's measurements sitting together in the table (derive_measurements writes them so):
-- with every hour scattered over the table it was no faster than one aggregate of the window.
-- bench/pricing.py, 7.43M measurements: joining first and grouping after 26-35 s; summing
-- the whole window in one hash table 16-19 s; per hour, with the narrower grain of migration
-- 0014, 7-8 s (the statement).
INSERT INTO billing.hourly_posting
       (hour_start, org_guid, space_guid, customer_id, resource_kind_id, price_id,
        microcredits_per_unit, unit, quantity, amount_microcredits, resources)
WITH usage AS (
    SELECT h.hour_start, s.space_guid, s.resource_kind_id, s.quantity, s.resources
      FROM generate_series(%(window_start)s::timestamptz,
                           %(window_end)s::timestamptz - interval '1 hour',
                           interval '1 hour') AS h (hour_start)
     CROSS JOIN LATERAL (
        SELECT r.space_guid, m.resource_kind_id, sum(m.value) AS quantity,
               count(*) AS resources
          FROM billing.hourly_measurement m
          JOIN billing.resource r ON r.id = m.resource_id
         WHERE m.hour_start = h.hour_start
         GROUP BY r.space_guid, m.resource_kind_id) s
)
SELECT u.hour_start, sp.org_guid, u.space_guid, ow.customer_id, u.resource_kind_id, p.id,
       p.microcredits_per_unit, p.unit, u.quantity,
       u.quantity::numeric * p.microcredits_per_unit / p.unit, u.resources
  FROM usage u
  LEFT JOIN billing.cf_space sp ON sp.guid = u.space_guid
  LEFT JOIN billing.org_ownership ow
         ON ow.org_guid = sp.org_guid AND ow.valid_during @> u.hour_start
  LEFT JOIN billing.price p
         ON p.resource_kind_id = u.resource_kind_id AND p.valid_during @> u.hour_start;

-- name: postings_by_customer
-- Priced usage of a window per customer, for metadata (exact amounts, not yet rounded).
SELECT customer_id, sum(amount_microcredits) AS amount_microcredits, sum(resources) AS rows
  FROM billing.hourly_posting
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
   AND customer_id IS NOT NULL AND price_id IS NOT NULL
 GROUP BY customer_id
 ORDER BY customer_id;

-- name: held_usage
-- Usage of a window that cannot be charged yet: no price, or no customer for its org, per
-- kind and org. Grouped by ids, the org's guid compared bytewise, and named afterwards: the
-- rows are sorted by narrow keys without the locale's rules (grouping the window's rows by
-- their names took 68 s for a month of a 20k-app foundation's 8.4M postings, bench/year.py).
WITH held AS (
    SELECT hp.price_id IS NULL AS unpriced, hp.resource_kind_id,
           hp.org_guid COLLATE "C" AS org_guid, count(DISTINCT hp.hour_start) AS hours,
           sum(hp.resources) AS resource_hours, sum(hp.quantity) AS quantity
      FROM billing.hourly_posting hp
     WHERE hp.hour_start >= %(window_start)s AND hp.hour_start < %(window_end)s
       AND (hp.price_id IS NULL OR hp.customer_id IS NULL)
     GROUP BY 1, 2, 3
)
SELECT CASE WHEN h.unpriced THEN 'no price' ELSE 'no customer' END AS reason,
       k.meter, coalesce(k.name, k.natural_id) AS kind, coalesce(o.name, h.org_guid) AS org,
       h.hours, h.resource_hours, h.quantity
  FROM held h
  JOIN billing.resource_kind k ON k.id = h.resource_kind_id
  LEFT JOIN billing.cf_org o ON o.guid = h.org_guid
 ORDER BY h.resource_hours DESC, h.quantity DESC, 1, 2, 3, 4;  -- the largest first

-- name: record_unknown_kinds
-- Resource kinds whose usage could not be priced (no name, or no price covering the hours
-- they were used), recorded for review. Only kinds not reported before are returned, with
-- where they were seen.
WITH seen AS (
    SELECT hp.resource_kind_id,
           CASE WHEN k.name IS NULL THEN 'no name' ELSE 'no price' END AS reason,
           min(hp.hour_start) AS first_hour, max(hp.hour_start) AS last_hour,
           count(DISTINCT hp.hour_start)::integer AS hours,
           sum(hp.resources)::integer AS resources, sum(hp.quantity) AS quantity
      FROM billing.hourly_posting hp
      JOIN billing.resource_kind k ON k.id = hp.resource_kind_id
     WHERE hp.price_id IS NULL
     GROUP BY hp.resource_kind_id, 2
),
new AS (
    INSERT INTO billing.unknown_kind_review
           (resource_kind_id, reason, first_hour, last_hour, hours, resources, quantity)
    SELECT resource_kind_id, reason, first_hour, last_hour, hours, resources, quantity
      FROM seen
    ON CONFLICT (resource_kind_id, reason) DO NOTHING
    RETURNING *
)
SELECT n.reason, k.meter, k.natural_id, k.name, n.first_hour, n.last_hour, n.hours,
       n.resources, n.quantity,
       (SELECT array_agg(DISTINCT coalesce(o.name, hp.org_guid, '(unknown org)'))
          FROM billing.hourly_posting hp
          LEFT JOIN billing.cf_org o ON o.guid = hp.org_guid
         WHERE hp.resource_kind_id = n.resource_kind_id AND hp.price_id IS NULL) AS orgs
  FROM new n
  JOIN billing.resource_kind k ON k.id = n.resource_kind_id
 ORDER BY k.meter, k.natural_id;

-- name: catalog_loads_after
-- Catalog loads the re-pricing sensor has not handled yet.
SELECT id, loaded_at, checksum FROM billing.catalog_load WHERE id > %(after_id)s ORDER BY id;

-- name: hours_to_reprice
-- Hours with postings that a catalog load may have changed: their price changed, or their
-- org's owner changed at that hour. Held hours whose gap a load filled are among them.
SELECT DISTINCT hp.hour_start
  FROM billing.hourly_posting hp
  JOIN billing.catalog_load cl ON cl.id > %(after_id)s AND cl.id <= %(up_to_id)s
 WHERE cl.changed_prices @> hp.hour_start
    OR EXISTS (SELECT 1 FROM billing.ownership_change oc
                WHERE oc.catalog_load_id = cl.id AND oc.org_guid = hp.org_guid
                  AND oc.changed @> hp.hour_start)
 ORDER BY hp.hour_start;

-- name: unknown_kinds_for_review
-- Everything in the unknown-kind review table, with the kind's names.
SELECT u.reason, k.meter, k.natural_id, k.name, u.first_hour, u.last_hour, u.hours,
       u.resources, u.quantity, u.reported_at
  FROM billing.unknown_kind_review u
  JOIN billing.resource_kind k ON k.id = u.resource_kind_id
 ORDER BY k.meter, coalesce(k.name, k.natural_id), u.reason;

-- name: latest_catalog_load
-- The newest catalog load (none: id NULL).
SELECT max(id) AS id FROM billing.catalog_load;

-- name: all_held_usage
-- Every hour's usage that cannot be charged yet, whenever it was priced (the view
-- billing.held_usage, migration 0017), the largest first.
SELECT * FROM billing.held_usage
 ORDER BY resource_hours DESC, quantity DESC, reason, meter, kind, org;
