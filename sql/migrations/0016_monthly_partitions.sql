-- The two fact tables that grow with every hour, measurements and priced postings, become
-- partitioned by business month (America/New_York, as the ledger's months) of hour_start
-- (native range partitioning, which RDS PostgreSQL 15 has). Every reader and writer selects an
-- hour range, so each statement touches one month's tables and indexes (two for a window
-- across a month's end) however many years are kept; a month can be vacuumed, analysed or
-- re-indexed on its own.
--
-- A partition is billing.<table>_YYYY_MM. billing.create_month_partitions creates the missing
-- ones for a span of hours; the writers call it (billing_dagster/database.py,
-- ensure_month_partitions) in a short transaction of its own before they write, for their
-- window and the month after it. Creating a partition waits for every transaction reading the
-- parent table and makes new readers wait behind it, so it is done a month ahead, not in the
-- middle of a long derivation. There is no default partition: a row for a month with no
-- partition is refused ("no partition of relation ... found for row"), never put aside.

CREATE FUNCTION billing.create_month_partitions(span_start timestamptz, span_end timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    month timestamp := date_trunc('month', span_start AT TIME ZONE 'America/New_York');
    parent text;
    part text;
BEGIN
    WHILE month AT TIME ZONE 'America/New_York' < span_end LOOP
        FOREACH parent IN ARRAY ARRAY['hourly_measurement', 'hourly_posting'] LOOP
            part := parent || '_' || to_char(month, 'YYYY_MM');
            IF to_regclass('billing.' || part) IS NULL THEN
                -- one creator at a time; the next finds the table made
                PERFORM pg_advisory_xact_lock(hashtext('billing.create_month_partitions'));
                IF to_regclass('billing.' || part) IS NULL THEN
                    EXECUTE format('CREATE TABLE billing.%I PARTITION OF billing.%I '
                                   'FOR VALUES FROM (%L) TO (%L)', part, parent,
                                   month AT TIME ZONE 'America/New_York',
                                   (month + interval '1 month') AT TIME ZONE 'America/New_York');
                    RETURN NEXT part;
                END IF;
            END IF;
        END LOOP;
        month := month + interval '1 month';
    END LOOP;
END;
$$;

ALTER TABLE billing.hourly_measurement RENAME TO hourly_measurement_before_0016;
ALTER TABLE billing.hourly_measurement_before_0016
    RENAME CONSTRAINT hourly_measurement_pkey TO hourly_measurement_before_0016_pkey;
ALTER TABLE billing.hourly_posting RENAME TO hourly_posting_before_0016;
ALTER INDEX billing.hourly_posting_grain RENAME TO hourly_posting_before_0016_grain;

-- The same columns, defaults and checks, partitioned (the tables' meaning: migrations 0002 and
-- 0007 for the measurements, 0005 and 0014 for the postings); the keys include hour_start, as
-- a partitioned table's unique keys must.
CREATE TABLE billing.hourly_measurement
    (LIKE billing.hourly_measurement_before_0016 INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
     PRIMARY KEY (hour_start, resource_id, resource_kind_id))
    PARTITION BY RANGE (hour_start);
CREATE TABLE billing.hourly_posting
    (LIKE billing.hourly_posting_before_0016 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (hour_start);
CREATE UNIQUE INDEX hourly_posting_grain ON billing.hourly_posting
    (hour_start, space_guid COLLATE "C", resource_kind_id) NULLS NOT DISTINCT;

-- The months already written, this month and the next.
SELECT count(*) FROM billing.create_month_partitions(
    least((SELECT min(hour_start) FROM billing.hourly_measurement_before_0016),
          (SELECT min(hour_start) FROM billing.hourly_posting_before_0016), now()),
    greatest((SELECT max(hour_start) FROM billing.hourly_measurement_before_0016),
             (SELECT max(hour_start) FROM billing.hourly_posting_before_0016), now())
        + interval '2 months');

INSERT INTO billing.hourly_measurement
SELECT hour_start, resource_id, resource_kind_id, value, interpolated
  FROM billing.hourly_measurement_before_0016
 ORDER BY hour_start, resource_id, resource_kind_id;
INSERT INTO billing.hourly_posting
SELECT hour_start, org_guid, space_guid, customer_id, resource_kind_id, price_id,
       microcredits_per_unit, unit, quantity, amount_microcredits, resources
  FROM billing.hourly_posting_before_0016
 ORDER BY hour_start, space_guid COLLATE "C", resource_kind_id;

DROP TABLE billing.hourly_measurement_before_0016, billing.hourly_posting_before_0016;
