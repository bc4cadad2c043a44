-- Landed usage is append-only, like the ledger. Cloud Foundry keeps usage events for about a
-- month; after that the rows here are the only record of what ran, so the database refuses to
-- change or remove them (and the observations made of them), whoever asks. The fault campaign
-- also found the posted price lines could be emptied with TRUNCATE: now refused as well.

CREATE FUNCTION billing.refuse_usage_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: landed usage is kept as Cloud Foundry reported it '
                    '(% refused); correct the billing with a catalog change or a ledger '
                    'adjustment, never by editing what was read', TG_TABLE_NAME, lower(TG_OP)
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER posting_line_no_truncate
    BEFORE TRUNCATE ON billing.posting_line
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_ledger_change();

-- billing.make_append_only(table, refusal): trigger <table>_append_only refuses UPDATE and
-- DELETE of any row of billing.<table>, <table>_no_truncate refuses TRUNCATE, both with the
-- trigger function billing.<refusal>() (its message says what to do instead).
CREATE PROCEDURE billing.make_append_only(tbl text, refusal text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON billing.%I '
                   'FOR EACH ROW EXECUTE FUNCTION billing.%I()', tbl || '_append_only', tbl,
                   refusal);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON billing.%I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION billing.%I()', tbl || '_no_truncate', tbl,
                   refusal);
END;
$$;

CALL billing.make_append_only('app_usage_event', 'refuse_usage_change');
CALL billing.make_append_only('service_usage_event', 'refuse_usage_change');
CALL billing.make_append_only('observation', 'refuse_usage_change');
