"""Hours measured before the data that determines them landed are measured again when it lands
(remeasure_sensor): late usage events from the simulator over HTTP, an S3 day's sample published
and then corrected in moto's CloudWatch, and, for a month already posted, the difference posted.
Billed values are compared with the simulator's oracle or with what the test put in AWS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import cast

import dagster as dg
import pytest

from billing_dagster.jobs import REMEASURED, metering_job
from billing_dagster.meters.s3_storage import S3StorageMeter
from billing_dagster.partitions import PARTITION, RANGE_END, RANGE_START, hourly_keys_between
from billing_dagster.pricing.sensors import reposting_sensor
from billing_dagster.resources import BillingDatabase, Clock
from billing_dagster.simulator import Simulator
from billing_dagster.usage.assets import hourly_measurements
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.sensors import remeasure_sensor
from tests.test_aws_meters import (
    DAY0,
    GIB,
    INSTANCE_2,
    coverage,
    create_bucket,
    land,
    land_two_instances,
    measured,
    put_bucket_sizes,
)
from tests.test_events import H10, START, land_all, pick_app, quiet_simulator, usage

HOUR = timedelta(hours=1)


@pytest.fixture
def quiet() -> Iterator[Simulator]:
    with quiet_simulator() as sim:
        yield sim


def tick(db_url: str, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(cursor=cursor, resources={
        "db": BillingDatabase(url=db_url), "clock": Clock()})
    return cast(dg.SensorResult | dg.SkipReason, remeasure_sensor(context))


def requested(result: dg.SensorResult | dg.SkipReason) -> list[dict[str, str]]:
    assert isinstance(result, dg.SensorResult)
    return [dict(r.tags, **({PARTITION: r.partition_key} if r.partition_key else {}))
            for r in result.run_requests or []]


def measure_again(db_url: str, request: dict[str, str]) -> None:
    """What the requested metering run does to the measurements (through Dagster)."""
    resources = {"db": BillingDatabase(url=db_url)}
    if PARTITION in request:
        result = dg.materialize([hourly_measurements], resources=resources,
                                partition_key=request[PARTITION], tags={
                                    REMEASURED: request[REMEASURED]})
    else:
        result = dg.materialize([hourly_measurements], resources=resources, tags=request)
    assert result.success


def test_an_hour_measured_before_its_events_landed_is_measured_again_when_they_land(
        conn, db_url, quiet: Simulator):
    land_all(conn, quiet, START + timedelta(minutes=5))
    app, processes = pick_app(quiet, "STOPPED")
    foundation = quiet.foundation
    foundation.start_app(app.guid, H10 + timedelta(minutes=20))
    land_all(conn, quiet, H10 + timedelta(minutes=40))
    derived = derive_window(conn, H10, H10 + HOUR)
    assert {(f.meter, f.status) for f in derived.flagged} >= {("cfapps", "carried")}
    first = tick(db_url)
    assert requested(first) == []  # nothing landed since the hour was measured

    foundation.stop_app(app.guid, H10 + timedelta(minutes=50))
    land_all(conn, quiet, H10 + timedelta(hours=1, minutes=5))
    second = tick(db_url, cursor=cast(dg.SensorResult, first).cursor)
    (request,) = requested(second)
    assert request[PARTITION] == hourly_keys_between(H10, H10 + HOUR)[0]
    measure_again(db_url, request)

    truth = {r.resource: r.unit_seconds for r in foundation.true_usage(H10, H10 + HOUR)
             if r.kind == "app-memory"}
    for process in processes:
        assert usage(conn, process.guid, H10) == {"App memory": truth[process.guid]}
        assert truth[process.guid] == process.instances * process.memory_in_mb * 30 * 60
    assert conn.execute("SELECT status FROM billing.hour_coverage WHERE hour_start = %s "
                        "AND meter = 'cfapps'", (H10,)).fetchone() == ("complete",)
    # measured again once: the same readings ask for nothing more
    assert requested(tick(db_url, cursor=cast(dg.SensorResult, second).cursor)) == []


def test_an_s3_days_sample_published_or_corrected_later_measures_its_hours_again(
        conn, db_url, aws):
    instances = land_two_instances(conn)
    create_bucket(aws, "bucket-late", INSTANCE_2)
    put_bucket_sizes(aws, "bucket-late", {DAY0: 100 * GIB})
    meter = S3StorageMeter(lookback_days=3)
    day1 = DAY0 + timedelta(days=1)
    land(instances, aws, meter, day1 + 6 * HOUR)  # day 1's sample is not published yet
    derive_window(instances, DAY0, day1 + 6 * HOUR)
    assert coverage(instances, "s3_storage", day1 + 2 * HOUR)[0] == "carried"
    cursor = cast(dg.SensorResult, tick(db_url)).cursor

    put_bucket_sizes(aws, "bucket-late", {day1: 300 * GIB})  # published
    land(instances, aws, meter, day1 + 7 * HOUR)
    result = tick(db_url, cursor)
    (request,) = requested(result)
    hours = hourly_keys_between(day1, day1 + 6 * HOUR)
    assert (request[RANGE_START], request[RANGE_END]) == (hours[0], hours[-1])
    measure_again(db_url, request)
    got = measured(instances, "s3_storage")
    assert got[day1 + 2 * HOUR, "bucket-late", "stored-bytes", "space-2"] == 300 * GIB * 3600
    assert coverage(instances, "s3_storage", day1 + 2 * HOUR)[0] == "complete"

    # AWS corrects day 0 (CloudWatch's maximum of the day rises): its 24 hours, already
    # complete, are measured again, and only they
    put_bucket_sizes(aws, "bucket-late", {DAY0: 150 * GIB})
    land(instances, aws, meter, day1 + 8 * HOUR)
    (request,) = requested(tick(db_url, cast(dg.SensorResult, result).cursor))
    day0 = hourly_keys_between(DAY0, day1)
    assert (request[RANGE_START], request[RANGE_END]) == (day0[0], day0[-1])
    measure_again(db_url, request)
    got = measured(instances, "s3_storage")
    assert sum(v for (h, *_), v in got.items() if h < day1) == 150 * GIB * 86400


@pytest.mark.parametrize(("tags", "months"), [
    ({REMEASURED: "42", RANGE_START: "2025-03-31-23:00", RANGE_END: "2025-04-01-01:00"},
     ["2025-03", "2025-04"]),
    ({REMEASURED: "42", PARTITION: "2025-03-03-05:00"}, ["2025-03"]),
    ({PARTITION: "2025-03-03-05:00"}, []),  # the hourly metering: the schedule posts it
])
def test_a_metering_run_that_measured_hours_again_posts_their_months_again(
        tags: dict[str, str], months: list[str]):
    run = dg.DagsterRun(job_name=metering_job.name, tags=tags)
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_run_status_sensor_context(
            sensor_name="reposting_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=dg.DagsterEvent(dg.DagsterEventType.RUN_SUCCESS.value,
                                          job_name=metering_job.name))
        requests = cast(list[dg.RunRequest], list(reposting_sensor(context)))  # type: ignore[arg-type]
    assert [r.partition_key for r in requests] == months
    assert all(r.tags["billing/repriced_by"] == run.run_id for r in requests)
