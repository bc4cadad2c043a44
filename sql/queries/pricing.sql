-- name: delete_postings
-- Remove a window's priced postings before they are derived again (same transaction).
DELETE FROM billing.hourly_posting
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s;

-- name: derive_postings
-- Price every measurement of the window at the price valid at the start of its hour and roll
-- it up per hour, space, org, customer, resource kind and price. Unpriced usage and usage of orgs
-- with no customer are kept with NULL price or customer.
INSERT INTO billing.hourly_posting
       (hour_start, org_guid, space_guid, customer_id, resource_kind_id, price_id,
        microcredits_per_unit, unit, quantity, amount_microcredits, resources)
SELECT m.hour_start, o.guid, r.space_guid, co.customer_id, m.resource_kind_id, p.id,
       p.microcredits_per_unit, p.unit, sum(m.value),
       sum(m.value)::numeric * p.microcredits_per_unit / p.unit, count(*)
  FROM billing.hourly_measurement m
  JOIN billing.resource r ON r.id = m.resource_id
  LEFT JOIN billing.cf_space sp ON sp.guid = r.space_guid
  LEFT JOIN billing.cf_org o ON o.guid = sp.org_guid
  LEFT JOIN billing.customer_org co ON co.org_name = o.name
  LEFT JOIN billing.price p
         ON p.resource_kind_id = m.resource_kind_id AND p.valid_during @> m.hour_start
 WHERE m.hour_start >= %(window_start)s AND m.hour_start < %(window_end)s
 GROUP BY m.hour_start, o.guid, r.space_guid, co.customer_id, m.resource_kind_id, p.id,
          p.microcredits_per_unit, p.unit;

-- name: postings_by_customer
-- Priced usage of a window per customer, for metadata (exact amounts, not yet rounded).
SELECT customer_id, sum(amount_microcredits) AS amount_microcredits, sum(resources) AS rows
  FROM billing.hourly_posting
 WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
   AND customer_id IS NOT NULL AND price_id IS NOT NULL
 GROUP BY customer_id
 ORDER BY customer_id;

-- name: held_usage
-- Usage of a window that cannot be charged yet: no price, or no customer for its org.
SELECT CASE WHEN hp.price_id IS NULL THEN 'no price' ELSE 'no customer' END AS reason,
       k.meter, coalesce(k.name, k.natural_id) AS kind, coalesce(o.name, hp.org_guid) AS org,
       count(DISTINCT hp.hour_start) AS hours, sum(hp.resources) AS resource_hours,
       sum(hp.quantity) AS quantity
  FROM billing.hourly_posting hp
  JOIN billing.resource_kind k ON k.id = hp.resource_kind_id
  LEFT JOIN billing.cf_org o ON o.guid = hp.org_guid
 WHERE hp.hour_start >= %(window_start)s AND hp.hour_start < %(window_end)s
   AND (hp.price_id IS NULL OR hp.customer_id IS NULL)
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4;
