-- The double-entry ledger. Accounts have a type with a normal balance (+1 debit, -1 credit);
-- a transaction groups entries whose signed amounts sum to zero, enforced by a deferred
-- constraint trigger at commit. Posted rows are never updated or deleted: a correction is a new
-- adjustment transaction.

CREATE TABLE billing.account_type (
    name text PRIMARY KEY,
    normal_balance smallint NOT NULL CHECK (normal_balance IN (1, -1)),
    description text NOT NULL
);
INSERT INTO billing.account_type (name, normal_balance, description) VALUES
    ('credit_pool', -1, 'liability: credits paid for and not used yet'),
    ('credits_used', -1, 'revenue: credits consumed by usage'),
    ('credits_expired', -1, 'revenue: credits left when a period of performance ends'),
    ('receivable', 1, 'asset: what the agency owes under its agreement');

CREATE TABLE billing.account (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL REFERENCES billing.customer (id),
    account_type text NOT NULL REFERENCES billing.account_type (name),
    UNIQUE (customer_id, account_type)
);

CREATE TABLE billing.ledger_transaction (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_type text NOT NULL
        CHECK (transaction_type IN ('iaa_pop_start', 'usage_post', 'iaa_pop_end', 'adjustment')),
    idempotency_key text NOT NULL UNIQUE,     -- e.g. usage_post:gsa-tts:2025-03
    customer_id text NOT NULL REFERENCES billing.customer (id),
    effective_at timestamptz NOT NULL,        -- the business instant it belongs to
    posted_at timestamptz NOT NULL DEFAULT now(),
    description text NOT NULL,
    adjusts_transaction_id bigint REFERENCES billing.ledger_transaction (id)
);

CREATE TABLE billing.ledger_entry (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id bigint NOT NULL REFERENCES billing.ledger_transaction (id),
    account_id bigint NOT NULL REFERENCES billing.account (id),
    direction smallint NOT NULL CHECK (direction IN (1, -1)),
    amount_microcredits bigint NOT NULL CHECK (amount_microcredits > 0)
);
CREATE INDEX ledger_entry_transaction_id ON billing.ledger_entry (transaction_id);
CREATE INDEX ledger_entry_account_id ON billing.ledger_entry (account_id);

CREATE FUNCTION billing.assert_transaction_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tx_id bigint;
    imbalance numeric;
    entries integer;
BEGIN
    IF TG_TABLE_NAME = 'ledger_transaction' THEN
        tx_id := NEW.id;
    ELSE
        tx_id := NEW.transaction_id;
    END IF;
    SELECT coalesce(sum(amount_microcredits::numeric * direction), 0), count(*)
      INTO imbalance, entries
      FROM billing.ledger_entry
     WHERE transaction_id = tx_id;
    IF entries < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries; a transaction needs at least a '
                        'debit and a credit', tx_id, entries
            USING ERRCODE = 'check_violation';
    END IF;
    IF imbalance <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: debits minus credits = % '
                        'microcredits', tx_id, imbalance
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ledger_entry_balanced
    AFTER INSERT ON billing.ledger_entry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing.assert_transaction_balanced();

CREATE CONSTRAINT TRIGGER ledger_transaction_balanced
    AFTER INSERT ON billing.ledger_transaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing.assert_transaction_balanced();

CREATE FUNCTION billing.refuse_ledger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: post an adjustment transaction instead of %',
                    TG_TABLE_NAME, lower(TG_OP)
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_transaction_append_only
    BEFORE UPDATE OR DELETE ON billing.ledger_transaction
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_ledger_change();
CREATE TRIGGER ledger_transaction_no_truncate
    BEFORE TRUNCATE ON billing.ledger_transaction
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_ledger_change();
CREATE TRIGGER ledger_entry_append_only
    BEFORE UPDATE OR DELETE ON billing.ledger_entry
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_ledger_change();
CREATE TRIGGER ledger_entry_no_truncate
    BEFORE TRUNCATE ON billing.ledger_entry
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_ledger_change();
