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

-- <table>_append_only refuses UPDATE and DELETE of a row, <table>_no_truncate refuses TRUNCATE.
DO $$
DECLARE
    landed text;
BEGIN
    FOREACH landed IN ARRAY ARRAY['app_usage_event', 'service_usage_event', 'observation'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON billing.%I '
                       'FOR EACH ROW EXECUTE FUNCTION billing.refuse_usage_change()',
                       landed || '_append_only', landed);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON billing.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_usage_change()',
                       landed || '_no_truncate', landed);
    END LOOP;
END;
$$;
