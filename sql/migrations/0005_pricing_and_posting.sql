-- Pricing and posting: the catalog's org-to-customer mapping and its load history, hourly
-- priced postings, the lines behind each usage posting, the unknown-kind review queue, and
-- exact half-even rounding.

-- A customer owns CF orgs by name (org names are unique within a foundation). Matching on the
-- name keeps the catalog reviewable and lets it name an org before any snapshot has seen it.
ALTER TABLE billing.cf_org DROP COLUMN customer_id;
CREATE TABLE billing.customer_org (
    org_name text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES billing.customer (id)
);

-- Each successful catalog load; the re-pricing sensor watches this table.
CREATE TABLE billing.catalog_load (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL,                     -- the catalog directory
    checksum text NOT NULL,                   -- SHA-256 over the catalog files
    summary jsonb NOT NULL,                   -- counts of what was loaded
    changed_prices tstzmultirange NOT NULL,   -- instants whose price changed with this load
    changed_orgs text[] NOT NULL              -- org names whose customer changed with it
);

-- Usage of one hour priced: one row per hour, space (and its org), customer, resource kind and
-- price.
-- quantity is the sum of the measurements' unit-seconds; the price's terms are copied so a
-- catalog reload never changes a derived row behind the monthly posting's back (the re-pricing
-- sensor re-derives the affected hours instead). amount_microcredits = quantity x
-- microcredits_per_unit / unit as numeric, for reading; the monthly posting rounds exactly,
-- once, from quantity and the terms. customer_id NULL: the org belongs to no customer (or is
-- unknown); price_id NULL: no price was valid at the start of the hour. Such rows are kept,
-- flagged and never posted.
CREATE TABLE billing.hourly_posting (
    hour_start timestamptz NOT NULL CHECK (hour_start = date_trunc('hour', hour_start)),
    org_guid text,
    space_guid text,
    customer_id text,
    resource_kind_id bigint NOT NULL,
    price_id bigint,
    microcredits_per_unit bigint,
    unit bigint,
    quantity bigint NOT NULL CHECK (quantity >= 0),
    amount_microcredits numeric,
    resources integer NOT NULL,
    CONSTRAINT hourly_posting_grain UNIQUE NULLS NOT DISTINCT
        (hour_start, space_guid, org_guid, customer_id, resource_kind_id, price_id)
);
CREATE INDEX hourly_posting_customer_hour ON billing.hourly_posting (customer_id, hour_start);

-- Which business month a ledger transaction belongs to (usage posts and their adjustments).
ALTER TABLE billing.ledger_transaction ADD COLUMN business_month date
    CHECK (business_month = date_trunc('month', business_month));
CREATE INDEX ledger_transaction_customer_month
    ON billing.ledger_transaction (customer_id, business_month);

-- The priced lines a usage_post or adjustment transaction is made of: per resource kind and
-- price terms, the quantity and the rounded amount it added (negative in an adjustment that
-- lowers a line). The price terms are copied: a posted line never changes with the catalog.
CREATE TABLE billing.posting_line (
    transaction_id bigint NOT NULL REFERENCES billing.ledger_transaction (id),
    resource_kind_id bigint NOT NULL REFERENCES billing.resource_kind (id),
    microcredits_per_unit bigint NOT NULL,
    unit bigint NOT NULL,
    quantity bigint NOT NULL,
    amount_microcredits bigint NOT NULL,
    PRIMARY KEY (transaction_id, resource_kind_id, microcredits_per_unit, unit)
);
CREATE TRIGGER posting_line_append_only
    BEFORE UPDATE OR DELETE ON billing.posting_line
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_ledger_change();

-- Unknown resource kinds reported to the billing team: no name, or no price covering the hours
-- they were used. One row per kind and reason, written once when first reported.
CREATE TABLE billing.unknown_kind_review (
    resource_kind_id bigint NOT NULL REFERENCES billing.resource_kind (id),
    reason text NOT NULL CHECK (reason IN ('no name', 'no price')),
    first_hour timestamptz NOT NULL,
    last_hour timestamptz NOT NULL,
    hours integer NOT NULL,
    resources integer NOT NULL,
    quantity bigint NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_kind_id, reason)
);

-- numerator / denominator rounded to an integer, ties to even, exactly (numeric arithmetic,
-- no intermediate scale): PostgreSQL's round() rounds ties away from zero.
CREATE FUNCTION billing.div_round_half_even(numerator numeric, denominator numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT sign(numerator) * CASE
               WHEN 2 * r > denominator THEN q + 1
               WHEN 2 * r < denominator THEN q
               ELSE q + mod(q, 2)
           END
      FROM (SELECT div(abs(numerator), denominator) AS q,
                   abs(numerator) - div(abs(numerator), denominator) * denominator AS r) AS parts
$$;

-- Balance of every account: sum(amount x direction x normal balance).
CREATE VIEW billing.account_balance AS
SELECT a.id AS account_id, a.customer_id, a.account_type, t.normal_balance,
       coalesce(sum(e.amount_microcredits * e.direction * t.normal_balance), 0)::bigint
           AS balance_microcredits
  FROM billing.account a
  JOIN billing.account_type t ON t.name = a.account_type
  LEFT JOIN billing.ledger_entry e ON e.account_id = a.id
 GROUP BY a.id, a.customer_id, a.account_type, t.normal_balance;
