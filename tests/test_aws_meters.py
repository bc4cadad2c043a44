"""The AWS meters against moto's server over real HTTP, landed in real Postgres: a volume
resized mid-hour, a bucket that grows daily, a counter series that starts again, an untagged
bucket, a tag naming an unknown instance, throttling, and an instance deleted while its bucket
remains. Expected values are worked out by hand from what the test put in AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing_dagster.aws.embedded import EmbeddedAws
from billing_dagster.meters import AWS_METERS, MeterSnapshot, ObservedResource
from billing_dagster.meters.opensearch_storage import OpenSearchStorageMeter
from billing_dagster.meters.rds_storage import RdsStorageMeter
from billing_dagster.meters.s3_storage import S3StorageMeter
from billing_dagster.meters.ses_sends import ses_sends_meter
from billing_dagster.usage.aws import land_aws_reading, read_and_land
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import Inventory, Snapshot, land_snapshot
from tests.support import AwsFaultProxy

DAY0 = datetime(2025, 3, 3, tzinfo=UTC)
INSTANCE_1 = "6f1c1c1e-0000-4000-8000-000000000001"
INSTANCE_2 = "6f1c1c1e-0000-4000-8000-000000000002"
GIB = 1 << 30
HOUR = timedelta(hours=1)


@pytest.fixture
def instances(conn):
    return land_two_instances(conn)


def land_two_instances(conn):
    """Two managed service instances landed from CF: INSTANCE_1 in space-1, INSTANCE_2 in
    space-2 (present from DAY0 - 1 day)."""
    land_snapshot(conn, Snapshot(DAY0 - timedelta(days=1), Inventory(
        orgs=[("org-1", "acme-org"), ("org-2", "other-org")],
        spaces=[("space-1", "org-1", "prod"), ("space-2", "org-2", "dev")]),
        [MeterSnapshot("cfservices", [
            ObservedResource(INSTANCE_1, "db", "space-1", "plan-1", 1),
            ObservedResource(INSTANCE_2, "files", "space-2", "plan-1", 1)], [],
            complete=True)]))
    return conn


def tags(guid: str | None) -> list[dict[str, str]]:
    return [] if guid is None else [{"Key": "Instance GUID", "Value": guid},
                                    {"Key": "Organization GUID", "Value": "org-1"}]


def land(conn, aws: EmbeddedAws, meter, at: datetime, **settings):
    """Read one meter at `at` (a virtual instant; AWS's own data carries its timestamps)."""
    from billing_dagster.usage.aws import known_resources

    reading = meter.read(aws.clients(**settings), at, known_resources(conn, meter.name, at))
    return land_aws_reading(conn, reading, meter.basis)


def measured(conn, meter: str) -> dict[tuple[datetime, str, str, str | None], int]:
    """(hour, resource natural id, kind natural id, space) -> unit-seconds of one meter."""
    rows = conn.execute(
        "SELECT m.hour_start, r.natural_id, k.natural_id, r.space_guid, m.value "
        "FROM billing.hourly_measurement m JOIN billing.resource r ON r.id = m.resource_id "
        "JOIN billing.resource_kind k ON k.id = m.resource_kind_id WHERE r.meter = %s",
        (meter,)).fetchall()
    return {(h, n, k, s): v for h, n, k, s, v in rows}


def coverage(conn, meter: str, hour: datetime) -> tuple[str, str]:
    row = conn.execute("SELECT status, coalesce(reason, '') FROM billing.hour_coverage "
                       "WHERE meter = %s AND hour_start = %s", (meter, hour)).fetchone()
    assert row is not None
    return row


def put_bucket_sizes(aws: EmbeddedAws, bucket: str, sizes: dict[datetime, int]) -> None:
    aws.clients().call("cloudwatch", "put_metric_data", Namespace="AWS/S3", MetricData=[
        {"MetricName": "BucketSizeBytes", "Timestamp": day, "Value": size, "Unit": "Bytes",
         "Dimensions": [{"Name": "BucketName", "Value": bucket},
                        {"Name": "StorageType", "Value": "StandardStorage"}]}
        for day, size in sizes.items()])


def create_bucket(aws: EmbeddedAws, name: str, guid: str | None) -> None:
    s3 = aws.clients()
    s3.call("s3", "create_bucket", Bucket=name,
            CreateBucketConfiguration={"LocationConstraint": "us-gov-west-1"})
    if guid is not None:
        s3.call("s3", "put_bucket_tagging", Bucket=name, Tagging={"TagSet": tags(guid)})


def create_database(aws: EmbeddedAws, name: str, gib: int, guid: str | None) -> str:
    created = aws.clients().call(
        "rds", "create_db_instance", DBInstanceIdentifier=name, DBInstanceClass="db.t3.micro",
        Engine="postgres", AllocatedStorage=gib, MasterUsername="admin_user",
        MasterUserPassword="not-a-real-password", Tags=tags(guid))
    return created["DBInstance"]["DBInstanceArn"]


def test_a_volume_resized_mid_hour_is_billed_from_the_reading_that_sees_it(instances, aws):
    arn = create_database(aws, "db-one", 20, INSTANCE_1)
    meter = RdsStorageMeter()
    t9 = DAY0 + 9 * HOUR
    land(instances, aws, meter, t9)
    land(instances, aws, meter, t9 + 30 * timedelta(minutes=1) - timedelta(hours=0))
    aws.clients().call("rds", "modify_db_instance", DBInstanceIdentifier="db-one",
                       AllocatedStorage=50, ApplyImmediately=True)
    land(instances, aws, meter, t9 + timedelta(minutes=40))  # the resize seen at 09:40
    land(instances, aws, meter, t9 + HOUR)
    land(instances, aws, meter, t9 + 2 * HOUR)
    # five readings, two sizes: a reading that finds the size already known stores nothing
    assert instances.execute(
        "SELECT count(*) FROM billing.observation o JOIN billing.resource r "
        "ON r.id = o.resource_id WHERE r.meter = 'rds_storage'").fetchone() == (2,)
    derive_window(instances, t9, t9 + 2 * HOUR)

    got = measured(instances, "rds_storage")
    assert got[t9, arn, "allocated-storage", "space-1"] == 20 * 2400 + 50 * 1200
    assert got[t9 + HOUR, arn, "allocated-storage", "space-1"] == 50 * 3600
    assert coverage(instances, "rds_storage", t9)[0] == "complete"

    # deleted: 0 from the first reading that no longer lists it
    aws.clients().call("rds", "delete_db_instance", DBInstanceIdentifier="db-one",
                       SkipFinalSnapshot=True)
    land(instances, aws, meter, t9 + 2 * HOUR + timedelta(minutes=15))
    land(instances, aws, meter, t9 + 3 * HOUR)
    derive_window(instances, t9 + 2 * HOUR, t9 + 3 * HOUR)
    assert measured(instances, "rds_storage")[
        t9 + 2 * HOUR, arn, "allocated-storage", "space-1"] == 50 * 900


def test_sampled_hours_without_a_reading_after_them_are_carried_not_complete(instances, aws):
    create_database(aws, "db-two", 100, INSTANCE_1)
    t9 = DAY0 + 9 * HOUR
    land(instances, aws, RdsStorageMeter(), t9)
    derive_window(instances, t9 - HOUR, t9 + 2 * HOUR)
    status, reason = coverage(instances, "rds_storage", t9)
    assert status == "carried" and "no complete AWS reading since the hour ended" in reason
    assert coverage(instances, "rds_storage", t9 - HOUR)[0] == "gap"
    # readings too far apart: the hour between is carried, with the interval named
    land(instances, aws, RdsStorageMeter(), t9 + 4 * HOUR)
    derive_window(instances, t9, t9 + 2 * HOUR)
    status, reason = coverage(instances, "rds_storage", t9 + HOUR)
    assert status == "carried" and "04:00:00 apart" in reason


def test_opensearch_storage_is_volume_size_times_data_nodes(instances, aws):
    created = aws.clients().call(
        "opensearch", "create_domain", DomainName="search-one",
        ClusterConfig={"InstanceType": "m6g.large.search", "InstanceCount": 3},
        EBSOptions={"EBSEnabled": True, "VolumeType": "gp3", "VolumeSize": 40},
        TagList=tags(INSTANCE_2))
    arn = created["DomainStatus"]["ARN"]
    t9 = DAY0 + 9 * HOUR
    land(instances, aws, OpenSearchStorageMeter(), t9)
    land(instances, aws, OpenSearchStorageMeter(), t9 + HOUR)
    derive_window(instances, t9, t9 + HOUR)
    assert measured(instances, "opensearch_storage") == {
        (t9, arn, "ebs-storage", "space-2"): 120 * 3600}


def test_a_bucket_that_grows_daily_holds_each_days_sample_for_that_day(instances, aws):
    create_bucket(aws, "bucket-grows", INSTANCE_2)
    put_bucket_sizes(aws, "bucket-grows", {DAY0: 100 * GIB, DAY0 + timedelta(days=1): 300 * GIB})
    meter = S3StorageMeter(lookback_days=3)
    # read on day 1 before its sample is published: day 1 is carried from day 0
    put_later = {DAY0 + timedelta(days=2): 600 * GIB}
    land(instances, aws, meter, DAY0 + timedelta(days=1, hours=6))
    derive_window(instances, DAY0, DAY0 + timedelta(days=3))
    got = measured(instances, "s3_storage")
    assert got[DAY0 + 5 * HOUR, "bucket-grows", "stored-bytes", "space-2"] == 100 * GIB * 3600
    assert got[DAY0 + 30 * HOUR, "bucket-grows", "stored-bytes", "space-2"] == 300 * GIB * 3600
    assert coverage(instances, "s3_storage", DAY0 + 30 * HOUR)[0] == "complete"
    status, reason = coverage(instances, "s3_storage", DAY0 + 50 * HOUR)
    assert status == "carried" and "2025-03-05 is not published" in reason

    put_bucket_sizes(aws, "bucket-grows", put_later)
    land(instances, aws, meter, DAY0 + timedelta(days=2, hours=7))
    land(instances, aws, meter, DAY0 + timedelta(days=2, hours=8))  # again: nothing new
    derive_window(instances, DAY0, DAY0 + timedelta(days=3))
    got = measured(instances, "s3_storage")
    assert got[DAY0 + 50 * HOUR, "bucket-grows", "stored-bytes", "space-2"] == 600 * GIB * 3600
    assert sum(got.values()) == (100 + 300 + 600) * GIB * 86400
    assert coverage(instances, "s3_storage", DAY0 + 50 * HOUR)[0] == "complete"
    assert instances.execute(
        "SELECT count(*) FROM billing.observation o JOIN billing.resource r "
        "ON r.id = o.resource_id WHERE r.meter = 's3_storage'").fetchone() == (3,)


def test_a_deleted_instances_bucket_is_still_billed_to_its_space(instances, aws):
    create_bucket(aws, "bucket-stays", INSTANCE_1)
    put_bucket_sizes(aws, "bucket-stays", {DAY0: 10 * GIB, DAY0 + timedelta(days=1): 10 * GIB})
    # the service instance is deleted in CF; the bucket stays in AWS with its tag
    land_snapshot(instances, Snapshot(DAY0 + HOUR, Inventory([], []), [MeterSnapshot(
        "cfservices", [ObservedResource(INSTANCE_2, "files", "space-2", "plan-1", 1)], [],
        complete=True)]))
    land(instances, aws, S3StorageMeter(), DAY0 + timedelta(days=1, hours=2))
    derive_window(instances, DAY0, DAY0 + timedelta(days=2))
    got = measured(instances, "s3_storage")
    assert {k[2:] for k in got} == {("stored-bytes", "space-1")}
    assert sum(got.values()) == 20 * GIB * 86400


def test_a_deleted_bucket_counts_nothing_from_the_first_day_without_its_sample(instances, aws):
    create_bucket(aws, "bucket-gone", INSTANCE_1)
    create_bucket(aws, "bucket-other", INSTANCE_2)
    put_bucket_sizes(aws, "bucket-gone", {DAY0: 5 * GIB})
    put_bucket_sizes(aws, "bucket-other", {DAY0: GIB, DAY0 + timedelta(days=1): GIB})
    land(instances, aws, S3StorageMeter(), DAY0 + timedelta(hours=3))
    aws.clients().call("s3", "delete_bucket", Bucket="bucket-gone")
    land(instances, aws, S3StorageMeter(), DAY0 + timedelta(days=1, hours=3))
    derive_window(instances, DAY0, DAY0 + timedelta(days=2))
    got = measured(instances, "s3_storage")
    assert sum(v for k, v in got.items() if k[1] == "bucket-gone") == 5 * GIB * 86400


def test_a_bucket_gone_before_its_only_sample_is_published_is_charged_by_its_tags(
        instances, aws):
    # made after day 0's sample (so it has none), listed all afternoon, deleted at 02:00 on
    # day 1; S3 sampled it at 00:00 and publishes that sample at 06:00, when it is gone
    create_bucket(aws, "bucket-brief", INSTANCE_1)
    create_bucket(aws, "bucket-other", INSTANCE_2)
    put_bucket_sizes(aws, "bucket-other", {DAY0: GIB})
    meter = S3StorageMeter()
    for hour in (14, 15, 23):
        landed = land(instances, aws, meter, DAY0 + timedelta(hours=hour))
        assert landed.resources == 2 and landed.samples == 1
    aws.clients().call("s3", "delete_bucket", Bucket="bucket-brief")
    put_bucket_sizes(aws, "bucket-brief", {DAY0 + timedelta(days=1): 3 * GIB})
    put_bucket_sizes(aws, "bucket-other", {DAY0 + timedelta(days=1): GIB})
    landed = land(instances, aws, meter, DAY0 + timedelta(days=1, hours=6, minutes=1))
    assert (landed.untagged, landed.unknown_instance) == (0, 0)
    put_bucket_sizes(aws, "bucket-other", {DAY0 + timedelta(days=2): GIB})
    land(instances, aws, meter, DAY0 + timedelta(days=2, hours=6, minutes=1))
    derive_window(instances, DAY0, DAY0 + timedelta(days=3))
    got = measured(instances, "s3_storage")
    brief = {k: v for k, v in got.items() if k[1] == "bucket-brief"}
    assert {k[2:] for k in brief} == {("stored-bytes", "space-1")}
    assert sum(brief.values()) == 3 * GIB * 86400  # day 1 only: no sample on day 2
    assert all(k[0].date() == (DAY0 + timedelta(days=1)).date() for k in brief)


def test_untagged_and_unknown_instance_resources_are_kept_and_flagged(instances, aws):
    create_bucket(aws, "bucket-untagged", None)
    create_bucket(aws, "bucket-stranger", "0badc0de-0000-4000-8000-00000000dead")
    put_bucket_sizes(aws, "bucket-untagged", {DAY0: 7 * GIB})
    put_bucket_sizes(aws, "bucket-stranger", {DAY0: 9 * GIB})
    landed = land(instances, aws, S3StorageMeter(), DAY0 + timedelta(hours=3))
    assert (landed.untagged, landed.unknown_instance) == (1, 1)
    assert sorted(landed.new_stub_kinds) == ["s3_storage:unknown-instance", "s3_storage:untagged"]
    derive_window(instances, DAY0, DAY0 + timedelta(days=1))
    got = measured(instances, "s3_storage")
    assert got[DAY0, "bucket-untagged", "untagged", None] == 7 * GIB * 3600
    assert got[DAY0, "bucket-stranger", "unknown-instance", None] == 9 * GIB * 3600
    stubs = instances.execute(
        "SELECT natural_id FROM billing.resource_kind WHERE meter = 's3_storage' AND is_stub "
        "ORDER BY 1").fetchall()
    assert stubs == [("unknown-instance",), ("untagged",)]


def put_sends(aws: EmbeddedAws, configuration_set: str, sends: dict[datetime, int]) -> None:
    aws.clients().call("cloudwatch", "put_metric_data", Namespace="AWS/SES", MetricData=[
        {"MetricName": "Send", "Timestamp": at, "Value": count, "Unit": "Count",
         "Dimensions": [{"Name": "ses:configuration-set", "Value": configuration_set}]}
        for at, count in sends.items()])


def test_counted_sends_survive_a_configuration_set_starting_again(instances, aws):
    ses = aws.clients()
    ses.call("sesv2", "create_configuration_set", ConfigurationSetName="mail-one",
             Tags=tags(INSTANCE_1))
    t9 = DAY0 + 9 * HOUR
    put_sends(aws, "mail-one", {t9 + timedelta(minutes=5): 40, t9 + timedelta(minutes=20): 2})
    meter = ses_sends_meter(lookback_hours=3, settle_minutes=10)
    land(instances, aws, meter, t9 + timedelta(minutes=30))  # hour 9 not settled yet
    derive_window(instances, t9, t9 + HOUR)
    status, reason = coverage(instances, "ses_sends", t9)
    assert status == "gap" and "not read since the hour settled" in reason

    # the broker recreates the configuration set: its series starts again from nothing
    ses.call("sesv2", "delete_configuration_set", ConfigurationSetName="mail-one")
    ses.call("sesv2", "create_configuration_set", ConfigurationSetName="mail-one",
             Tags=tags(INSTANCE_1))
    put_sends(aws, "mail-one", {t9 + timedelta(minutes=50): 3,
                                t9 + timedelta(minutes=70): 5})
    land(instances, aws, meter, t9 + timedelta(hours=1, minutes=15))
    land(instances, aws, meter, t9 + timedelta(hours=2, minutes=15))
    land(instances, aws, meter, t9 + timedelta(hours=2, minutes=45))  # re-read, same sums
    derive_window(instances, t9, t9 + 2 * HOUR)
    got = measured(instances, "ses_sends")
    assert got == {(t9, "mail-one", "sends", "space-1"): 45,
                   (t9 + HOUR, "mail-one", "sends", "space-1"): 5}
    assert coverage(instances, "ses_sends", t9) == ("complete",
                                                     "hourly sums read after the hour settled")
    rows = instances.execute("SELECT count(*) FROM billing.counted_usage").fetchone()
    assert rows == (2,)  # the unchanged re-reads added nothing


def test_every_aws_meter_reads_the_embedded_aws_in_one_landing(instances, aws):
    create_database(aws, "db-all", 10, INSTANCE_1)
    create_bucket(aws, "bucket-all", INSTANCE_2)
    put_bucket_sizes(aws, "bucket-all", {DAY0: GIB})
    landed = read_and_land(instances, aws.clients(), AWS_METERS, DAY0 + timedelta(hours=2))
    assert {r.meter: r.status for r in landed} == {m.name: "complete" for m in AWS_METERS}
    assert {r.meter: r.resources for r in landed}["rds_storage"] == 1


@pytest.fixture
def proxy(aws):
    with AwsFaultProxy(aws.url) as started:
        yield started


def test_throttling_is_retried_and_a_reading_that_stays_throttled_fails_cleanly(
        instances, aws, proxy):
    arn = create_database(aws, "db-busy", 30, INSTANCE_1)
    t9 = DAY0 + 9 * HOUR
    proxy.inject("throttle", count=2, match="Action=DescribeDBInstances")
    landed = land(instances, aws, RdsStorageMeter(), t9, endpoint_url=proxy.url)
    assert (landed.status, proxy.served) == ("complete", 2)

    proxy.inject("throttle", count=100, match="Action=DescribeDBInstances")
    landed = land(instances, aws, RdsStorageMeter(), t9 + HOUR, endpoint_url=proxy.url,
                  max_attempts=3)
    assert landed.status == "failed"
    assert landed.error is not None
    assert "rds describe_db_instances failed with Throttling after 3 attempt(s)" in landed.error
    readings = instances.execute(
        "SELECT status FROM billing.reading WHERE meter = 'rds_storage' ORDER BY taken_at"
    ).fetchall()
    assert readings == [("complete",), ("failed",)]
    # the failed reading closed nothing: the size read at 09:00 is still held after it
    land(instances, aws, RdsStorageMeter(), t9 + 2 * HOUR)
    derive_window(instances, t9, t9 + 2 * HOUR)
    assert measured(instances, "rds_storage")[t9 + HOUR, arn, "allocated-storage",
                                              "space-1"] == 30 * 3600


def test_aws_readings_asset_reads_the_simulators_aws_side_through_dagster(simulator, db_url,
                                                                          aws):
    """The asset end to end: the simulator's foundation seeds the embedded AWS, and one
    materialization lands every AWS meter with its totals and unattributed resources."""
    import dagster as dg

    from billing_dagster.resources import BillingDatabase, Clock
    from billing_dagster.simulator.aws import STRANGER_BUCKET, UNTAGGED_BUCKET, AwsFoundation
    from billing_dagster.usage.assets import aws_readings

    world = AwsFoundation(simulator.foundation, aws.clients())
    simulator.foundation.advance_to(simulator.foundation.now + timedelta(hours=7))
    result = dg.materialize([aws_readings], resources={
        "db": BillingDatabase(url=db_url), "aws": aws.resource(),
        "clock": Clock(simulator_url=simulator.url)})
    assert result.success
    metadata = result.asset_materializations_for_node("aws_readings")[0].metadata
    readings = metadata["readings"].value
    assert readings == {m.name: "complete" for m in AWS_METERS}
    databases = sum(1 for r in world.resources.values()
                    if r.kind == "rds" and r.exists_at(int(simulator.foundation.now.timestamp())))
    assert metadata["rds_storage_resources"].value == databases
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed  # the two orphan buckets are listed as unattributed
    listed = check.metadata["unattributed_resources"].value
    assert isinstance(listed, list)
    unattributed = {str(u["resource"]) for u in listed if isinstance(u, dict)}
    assert {UNTAGGED_BUCKET, STRANGER_BUCKET} <= unattributed
