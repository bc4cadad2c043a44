-- Metered services read from AWS: storage of RDS instances, OpenSearch domains and S3 buckets,
-- and SES sends and attachment bytes. Each AWS resource is tied to the CF service instance
-- named by its `Instance GUID` tag (the brokers tag every resource they create), and through it
-- to a space, an org and a customer.
--
-- A meter's `basis` says how its readings determine an hour:
--   events   CF usage events give every change, to the second (cfapps, cfservices);
--   sampled  a gauge read at each AWS reading and held until the next one (RDS, OpenSearch
--            storage): an hour is complete once readings no more than `max_reading_interval`
--            apart span it, carried by design between them;
--   daily    a gauge AWS itself samples once a day (S3 BucketSizeBytes in CloudWatch, stamped
--            00:00 UTC): each day's sample holds for that day; an hour is complete once its
--            day's samples are published and landed;
--   counted  a count per UTC hour (CloudWatch sums of SES sends and attachment bytes): an
--            hour is complete once a reading made after it settled has landed it.
ALTER TABLE billing.meter
    ADD COLUMN basis text NOT NULL DEFAULT 'events'
        CHECK (basis IN ('events', 'sampled', 'daily', 'counted')),
    ADD COLUMN max_reading_interval interval;

INSERT INTO billing.meter (name, description, unit, basis, max_reading_interval) VALUES
    ('rds_storage', 'Storage allocated to RDS database instances (GiB)', 'GiB-second',
     'sampled', interval '2 hours'),
    ('opensearch_storage', 'EBS storage of OpenSearch domains: volume GiB x data nodes',
     'GiB-second', 'sampled', interval '2 hours'),
    ('s3_storage', 'Bytes stored in S3 buckets, as AWS samples them once a day', 'byte-second',
     'daily', NULL),
    ('ses_sends', 'Messages sent through SES configuration sets', 'send', 'counted', NULL),
    ('ses_attachment_bytes', 'Bytes of attachments sent through SES configuration sets', 'byte',
     'counted', NULL);

ALTER TABLE billing.reading DROP CONSTRAINT reading_source_check;
ALTER TABLE billing.reading ADD CONSTRAINT reading_source_check
    CHECK (source IN ('snapshot', 'events', 'history', 'aws'));

ALTER TABLE billing.hour_coverage DROP CONSTRAINT hour_coverage_basis_check;
ALTER TABLE billing.hour_coverage ADD CONSTRAINT hour_coverage_basis_check
    CHECK (basis IN ('events', 'both', 'snapshot', 'sampled', 'daily', 'counted'));

-- What a counted meter's resource used in one UTC hour, as one AWS reading found it (a sum of
-- CloudWatch datapoints). An hour is read again while it settles (late datapoints raise its
-- sum), so each reading adds its own row and the newest reading's row is the hour's value.
CREATE TABLE billing.counted_usage (
    resource_id bigint NOT NULL REFERENCES billing.resource (id),
    hour_start timestamptz NOT NULL CHECK (hour_start = date_trunc('hour', hour_start)),
    reading_id bigint NOT NULL REFERENCES billing.reading (id),
    resource_kind_id bigint NOT NULL REFERENCES billing.resource_kind (id),
    value bigint NOT NULL CHECK (value >= 0),
    PRIMARY KEY (resource_id, hour_start, reading_id)
);
CREATE INDEX counted_usage_hour_start ON billing.counted_usage (hour_start);
CALL billing.make_append_only('counted_usage', 'refuse_usage_change');

-- A month of one customer's S3 storage in byte-seconds passes bigint's range (10 TB for a
-- month is ~3e19), so the quantities summed over a month are numeric; one resource's hour
-- still fits a bigint (up to 2.5 PB held for the hour).
ALTER TABLE billing.posting_line ALTER COLUMN quantity TYPE numeric;
ALTER TABLE billing.unknown_kind_review ALTER COLUMN quantity TYPE numeric;
