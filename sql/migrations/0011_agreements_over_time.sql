-- The business over time: who owns an org (by guid, over a period), a customer's tier (with
-- effective dates), agreement modifications (credits added or removed, the period extended or
-- shortened), and the runway alerts raised once per threshold.

-- An org belongs to a customer over a period of UTC instants (NULL bounds: open). The guid is
-- the key: a CF rename changes nothing. An org moved to another customer is two rows with
-- adjacent periods; the database refuses two owners of one org at the same instant.
CREATE TABLE billing.org_ownership (
    org_guid text NOT NULL,
    customer_id text NOT NULL REFERENCES billing.customer (id),
    alias text,                               -- the name the catalog gives the org, for people
    valid_during tstzrange NOT NULL CHECK (NOT isempty(valid_during)),
    source text,                              -- catalog file and entry it came from
    CONSTRAINT org_ownership_one_owner
        EXCLUDE USING gist (org_guid WITH =, valid_during WITH &&)
);

-- What the name-keyed mapping said, carried over for the orgs whose guid is known (the next
-- catalog load, which names orgs by guid, replaces all of it).
INSERT INTO billing.org_ownership (org_guid, customer_id, alias, valid_during, source)
SELECT DISTINCT ON (o.guid) o.guid, co.customer_id, co.org_name, tstzrange(NULL, NULL),
       'migration 0011 (customer_org by name)'
  FROM billing.customer_org co
  JOIN billing.cf_org o ON o.name = co.org_name
 ORDER BY o.guid;
DROP TABLE billing.customer_org;

COMMENT ON COLUMN billing.catalog_load.changed_orgs IS
    'guids of the orgs whose owner changed with the load (names before migration 0011); '
    'the instants are in billing.ownership_change';

-- Per catalog load and org, the instants whose owner the load changed: what re-pricing redoes.
CREATE TABLE billing.ownership_change (
    catalog_load_id bigint NOT NULL REFERENCES billing.catalog_load (id),
    org_guid text NOT NULL,
    changed tstzmultirange NOT NULL,
    PRIMARY KEY (catalog_load_id, org_guid)
);

-- A customer's tier over business dates (New York); a month's tier is the one in effect on
-- its first day. customer.tier stays: the tier of the customer's newest entry.
CREATE TABLE billing.customer_tier (
    customer_id text NOT NULL REFERENCES billing.customer (id),
    tier text NOT NULL REFERENCES billing.tier (name),
    valid_during daterange NOT NULL CHECK (NOT isempty(valid_during)),
    CONSTRAINT customer_tier_one_at_a_time
        EXCLUDE USING gist (customer_id WITH =, valid_during WITH &&)
);
INSERT INTO billing.customer_tier (customer_id, tier, valid_during)
SELECT id, tier, daterange(NULL, NULL) FROM billing.customer WHERE tier IS NOT NULL;

-- A modification of an agreement, from the catalog: credits added (> 0) or removed (< 0) as
-- of a business date, and/or a new last day of the period. Posted as its own ledger
-- transaction (iaa_modification:<agreement>:<modification>); never edited once posted.
CREATE TABLE billing.iaa_modification (
    iaa_id text NOT NULL REFERENCES billing.iaa (id),
    id text NOT NULL,
    effective date NOT NULL,
    credits_microcredits bigint NOT NULL DEFAULT 0,
    pop_end date,                             -- the new last day (inclusive), when it changes
    CHECK (credits_microcredits <> 0 OR pop_end IS NOT NULL),
    PRIMARY KEY (iaa_id, id)
);

-- An agreement as it stands with its modifications: the period ends on the pop_end of its
-- latest modification that sets one; credits are what it bought plus what modifications add.
-- starts_at/ends_at are the UTC instants of the period's first and after-last New York days.
CREATE VIEW billing.agreement AS
SELECT i.id, i.customer_id, i.credits_microcredits AS bought_microcredits,
       (i.credits_microcredits + coalesce(m.added, 0))::bigint AS credits_microcredits,
       daterange(lower(i.period_of_performance),
                 coalesce(e.pop_end + 1, upper(i.period_of_performance))) AS period_of_performance,
       lower(i.period_of_performance)::timestamp AT TIME ZONE 'America/New_York' AS starts_at,
       coalesce(e.pop_end + 1, upper(i.period_of_performance))::timestamp
           AT TIME ZONE 'America/New_York' AS ends_at
  FROM billing.iaa i
  LEFT JOIN LATERAL (SELECT sum(credits_microcredits) AS added
                       FROM billing.iaa_modification WHERE iaa_id = i.id) m ON true
  LEFT JOIN LATERAL (SELECT pop_end FROM billing.iaa_modification
                      WHERE iaa_id = i.id AND pop_end IS NOT NULL
                      ORDER BY effective DESC, id DESC LIMIT 1) e ON true;

-- Per customer, the first instant whose usage is not posted yet: the start of the business
-- month after its last month with a usage_post (-infinity: nothing posted yet).
CREATE VIEW billing.customer_unposted_from AS
SELECT c.id AS customer_id,
       coalesce((SELECT (max(t.business_month) + interval '1 month')::timestamp
                        AT TIME ZONE 'America/New_York'
                   FROM billing.ledger_transaction t
                  WHERE t.customer_id = c.id AND t.transaction_type = 'usage_post'),
                '-infinity') AS unposted_from
  FROM billing.customer c;

ALTER TABLE billing.ledger_transaction
    DROP CONSTRAINT ledger_transaction_transaction_type_check;
ALTER TABLE billing.ledger_transaction ADD CONSTRAINT ledger_transaction_transaction_type_check
    CHECK (transaction_type IN ('iaa_pop_start', 'iaa_modification', 'usage_post',
                                'adjustment', 'iaa_pop_end'));

-- Runway alerts, each raised once: per customer and agreement (NULL: the customer as a whole,
-- e.g. overage) and alert ('75%', '90%', '100%', 'runway', 'overage:2025-05').
CREATE TABLE billing.runway_alert (
    customer_id text NOT NULL REFERENCES billing.customer (id),
    iaa_id text REFERENCES billing.iaa (id),
    alert text NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    details jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT runway_alert_once UNIQUE NULLS NOT DISTINCT (customer_id, iaa_id, alert)
);
