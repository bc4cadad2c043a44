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

CREATE TRIGGER app_usage_event_append_only
    BEFORE UPDATE OR DELETE ON billing.app_usage_event
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_usage_change();
CREATE TRIGGER app_usage_event_no_truncate
    BEFORE TRUNCATE ON billing.app_usage_event
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_usage_change();
CREATE TRIGGER service_usage_event_append_only
    BEFORE UPDATE OR DELETE ON billing.service_usage_event
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_usage_change();
CREATE TRIGGER service_usage_event_no_truncate
    BEFORE TRUNCATE ON billing.service_usage_event
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_usage_change();
CREATE TRIGGER observation_append_only
    BEFORE UPDATE OR DELETE ON billing.observation
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_usage_change();
CREATE TRIGGER observation_no_truncate
    BEFORE TRUNCATE ON billing.observation
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_usage_change();
