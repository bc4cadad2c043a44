-- Credits per agreement. Each agreement's credits are a lot of their own: a credit_pool account
-- of its customer for that agreement (account.iaa_id). An hour's charge draws from the lots of
-- the agreements active at that hour, the one ending first first; what no lot covers is
-- overage, an account of its own (an asset: the agency owes it beyond its agreements). An
-- agreement's expiry takes its own lot's remainder. billing.ledger_draw records, per usage
-- transaction, what each hour drew from which lot (or from overage), so that a later change to
-- a month draws or gives back hour by hour. (The customer-level credit_pool of earlier postings
-- keeps its history; new postings use the lots.)

ALTER TABLE billing.account ADD COLUMN iaa_id text REFERENCES billing.iaa (id);
ALTER TABLE billing.account DROP CONSTRAINT account_customer_id_account_type_key;
ALTER TABLE billing.account ADD CONSTRAINT account_customer_type_agreement
    UNIQUE NULLS NOT DISTINCT (customer_id, account_type, iaa_id);
ALTER TABLE billing.account ADD CONSTRAINT account_lot_is_a_credit_pool
    CHECK (iaa_id IS NULL OR account_type = 'credit_pool');

INSERT INTO billing.account_type (name, normal_balance, description) VALUES
    ('overage', 1, 'asset: usage no active agreement covered, owed beyond the agreements');

CREATE TABLE billing.ledger_draw (
    transaction_id bigint NOT NULL REFERENCES billing.ledger_transaction (id),
    hour_start timestamptz NOT NULL CHECK (hour_start = date_trunc('hour', hour_start)),
    iaa_id text REFERENCES billing.iaa (id),  -- NULL: overage
    amount_microcredits bigint NOT NULL CHECK (amount_microcredits <> 0),  -- < 0: given back
    UNIQUE NULLS NOT DISTINCT (transaction_id, hour_start, iaa_id)
);
CALL billing.make_append_only('ledger_draw', 'refuse_ledger_change');

CREATE OR REPLACE VIEW billing.account_balance AS
SELECT a.id AS account_id, a.customer_id, a.account_type, t.normal_balance,
       coalesce(sum(e.amount_microcredits * e.direction * t.normal_balance), 0)::bigint
           AS balance_microcredits,
       a.iaa_id
  FROM billing.account a
  JOIN billing.account_type t ON t.name = a.account_type
  LEFT JOIN billing.ledger_entry e ON e.account_id = a.id
 GROUP BY a.id, a.customer_id, a.account_type, t.normal_balance, a.iaa_id;
