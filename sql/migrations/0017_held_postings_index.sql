-- Held postings (no price for their kind, or no customer for their org) are read on their own
-- by every pricing run and by held_usage: the window's held usage, the kinds not reported yet
-- (record_unknown_kinds) and everything held whenever it was priced (all_held_usage). Without an
-- index those reads scan every posting ever priced, which grows with the year although held
-- usage is normally a handful of rows waiting for the catalog. A partial index holds only the
-- held rows, so the reads cost what is held; a posting that is charged (price and customer
-- known, nearly all of them) adds nothing to it.
CREATE INDEX hourly_posting_held ON billing.hourly_posting (hour_start)
 WHERE price_id IS NULL OR customer_id IS NULL;

-- Everything held, whenever it was priced, per reason, meter, kind and org: what the held_usage
-- asset reports (its metadata lists the largest rows; this view has them all, for SQL):
-- the first and last hour, hours, resource-hours, quantity and, for usage with a price but no
-- customer, what it would cost (usage with no price has no amount yet).
CREATE VIEW billing.held_usage AS
SELECT CASE WHEN hp.price_id IS NULL AND k.name IS NULL THEN 'no name'
            WHEN hp.price_id IS NULL THEN 'no price'
            ELSE 'no customer' END AS reason,
       k.meter, coalesce(k.name, k.natural_id) AS kind,
       coalesce(o.name, hp.org_guid, '(unknown org)') AS org,
       min(hp.hour_start) AS first_hour, max(hp.hour_start) AS last_hour,
       count(DISTINCT hp.hour_start) AS hours, sum(hp.resources) AS resource_hours,
       sum(hp.quantity) AS quantity, sum(hp.amount_microcredits) AS microcredits_exact
  FROM billing.hourly_posting hp
  JOIN billing.resource_kind k ON k.id = hp.resource_kind_id
  LEFT JOIN billing.cf_org o ON o.guid = hp.org_guid
 WHERE hp.price_id IS NULL OR hp.customer_id IS NULL
 GROUP BY 1, 2, 3, 4;
