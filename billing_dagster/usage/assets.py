"""Usage assets: the foundation snapshot, the usage events, the AWS readings, and the hourly
measurements derived from what they landed."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg

from billing_dagster.meters import AWS_METERS, METERS, STREAMS
from billing_dagster.partitions import hourly_partitions, utc_window
from billing_dagster.resources import AwsApi, BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.usage.aws import LandedAwsReading, read_and_land
from billing_dagster.usage.events import LandedEvents, land_events
from billing_dagster.usage.hours import (
    HOUR_COMPLETE,
    MEASUREMENTS,
    hour_reports,
    newest_materializations,
)
from billing_dagster.usage.measurements import DerivedWindow, derive_window, summarize_window
from billing_dagster.usage.snapshot import LandedSnapshot, land_snapshot, take_snapshot


@dg.asset(
    group_name="usage",
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec("snapshot_complete", asset="foundation_snapshot",
                                   description="Every meter was read in full.")],
)
def foundation_snapshot(
    context: dg.AssetExecutionContext, cf: CloudFoundryApi, db: BillingDatabase, clock: Clock
) -> dg.MaterializeResult:
    """The foundation's state now: one observation per app process (instances x memory while
    its app is STARTED) and per managed service instance (its plan), stamped with the UTC
    instant it was read; org, space and plan names refreshed. It describes only that instant,
    so it cannot be taken for a past hour. A meter that fails is recorded as a failed reading;
    what was read is kept and the next snapshot completes it."""
    taken_at = clock.now()
    with cf.client() as client:
        snapshot = take_snapshot(client, METERS, taken_at)
    with db.connect() as conn:
        landed = land_snapshot(conn, snapshot, context.run.run_id)
    context.log.info(f"snapshot at {landed.taken_at.isoformat()}: {landed.readings}, "
                     f"{landed.resources} resources")
    if all(status == "failed" for status in landed.readings.values()):
        first_error = next(iter(landed.errors.values()), "no error recorded")
        raise dg.Failure(
            description=f"no meter could be read at {landed.taken_at.isoformat()}: "
                        f"{first_error.rstrip('.')}. The failed readings are recorded; "
                        "usage_events lands the changes on its own, and the next snapshot "
                        "refreshes the state.",
            metadata={"errors": dg.MetadataValue.json(landed.errors)})
    return dg.MaterializeResult(
        metadata=_snapshot_metadata(landed),
        check_results=[dg.AssetCheckResult(
            check_name="snapshot_complete", passed=landed.complete,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"readings": dg.MetadataValue.json(landed.readings),
                      "errors": dg.MetadataValue.json(landed.errors)})],
    )


class EventsConfig(dg.Config):
    lag_seconds: int = 60
    """Events newer than this are landed but read again next time (CF may commit an event
    after a later one is visible), so the cursor never skips one."""


@dg.asset(
    group_name="usage",
    kinds={"postgres"},
    check_specs=[dg.AssetCheckSpec(
        "no_events_lost", asset="usage_events",
        description="Every stream's cursor was still known to CF: no event was purged before "
                    "it was landed.")],
)
def usage_events(context: dg.AssetExecutionContext, cf: CloudFoundryApi, db: BillingDatabase,
                 clock: Clock, config: EventsConfig) -> dg.MaterializeResult:
    """Cloud Foundry's app and service usage events, landed once each and kept forever (CF
    keeps them about 31 days): one row per event (`billing.app_usage_event`,
    `billing.service_usage_event`), each also an observation of its resource (an app process
    started, stopped or scaled; a service instance created, re-planned or deleted). Read
    incrementally after a cursor kept in Postgres, page by page, each page in its own
    transaction with the cursor. With them, any hour can be measured exactly, to the second."""
    now = clock.now()
    with cf.client() as client, db.connect() as conn:
        landed = [land_events(conn, client, stream, now,
                              lag=timedelta(seconds=config.lag_seconds),
                              run_id=context.run.run_id) for stream in STREAMS]
    purged = {e.stream: e.purged_cursor for e in landed if e.purged_cursor}
    for stream, guid in purged.items():
        context.log.error(f"{stream}: cursor event {guid} was purged at CF before the events "
                          "after it were landed; re-seeded from a snapshot, the hours between "
                          "are flagged")
    return dg.MaterializeResult(
        metadata=_events_metadata(landed),
        check_results=[dg.AssetCheckResult(
            check_name="no_events_lost", passed=not purged,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"purged_cursors": dg.MetadataValue.json(purged)})],
    )


def _events_metadata(landed: list[LandedEvents]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for e in landed:
        metadata[f"{e.stream}_read"] = e.events_read
        metadata[f"{e.stream}_new"] = e.events_new
        metadata[f"{e.stream}_covered_to"] = e.covered_to.isoformat() if e.covered_to else "none"
        if e.rebased_at:
            metadata[f"{e.stream}_rebased_at"] = e.rebased_at.isoformat()
    metadata["observations"] = sum(e.observations for e in landed)
    return metadata


@dg.asset(
    group_name="usage",
    kinds={"postgres", "aws"},
    deps=[foundation_snapshot, usage_events],
    check_specs=[dg.AssetCheckSpec(
        "aws_readings_complete", asset="aws_readings",
        description="Every AWS meter was read in full and every AWS resource is tied to a CF "
                    "service instance by its Instance GUID tag.")],
)
def aws_readings(context: dg.AssetExecutionContext, aws: AwsApi, db: BillingDatabase,
                 clock: Clock) -> dg.MaterializeResult:
    """The metered services as AWS reports them, read now: GiB allocated to each RDS instance
    and OpenSearch domain (held until the next reading), each S3 bucket's daily size from
    CloudWatch (held for its day), and each SES configuration set's sends and attachment bytes
    per hour (CloudWatch sums). Each AWS resource is charged to the CF service instance its
    `Instance GUID` tag names (`billing.resource`, with gauge samples as observations and
    counts in `billing.counted_usage`); an untagged one, or one naming an instance CF never
    reported, is kept on a stub kind and flagged, never dropped. Runs after the CF landing so
    that instances created this hour are known."""
    now = clock.now()
    aws_clients = aws.clients()
    with db.connect() as conn:
        landed = read_and_land(conn, aws_clients, AWS_METERS, now, context.run.run_id)
    for reading in landed:
        context.log.info(f"{reading.meter}: {reading.status}, {reading.resources} resources, "
                         f"{reading.new_observations} new values, {reading.untagged} untagged, "
                         f"{reading.unknown_instance} naming an unknown instance")
    failures = {r.meter: r.error for r in landed if r.status != "complete" and r.error}
    if failures:
        context.log.error(f"AWS readings incomplete ({aws_clients.settings.describe()}): "
                          f"{failures}; their hours stay flagged until a reading succeeds")
    unattributed = [u | {"meter": r.meter} for r in landed for u in r.unattributed]
    return dg.MaterializeResult(
        metadata=_aws_metadata(landed),
        check_results=[dg.AssetCheckResult(
            check_name="aws_readings_complete", passed=not failures and not unattributed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"errors": dg.MetadataValue.json(failures),
                      "unattributed_resources": dg.MetadataValue.json(unattributed[:200])})],
    )


# what each AWS meter's total in the metadata is
AWS_TOTALS = {"rds_storage": "gib_allocated", "opensearch_storage": "gib_allocated",
              "s3_storage": "bytes_stored_newest_day", "ses_sends": "sends_in_hours_read",
              "ses_attachment_bytes": "bytes_in_hours_read"}


def _aws_metadata(landed: list[LandedAwsReading]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"readings": dg.MetadataValue.json(
        {r.meter: r.status for r in landed})}
    for r in landed:
        metadata[f"{r.meter}_resources"] = r.resources
        metadata[f"{r.meter}_{AWS_TOTALS[r.meter]}"] = r.total
        metadata[f"{r.meter}_unattributed"] = r.untagged + r.unknown_instance
        if r.settled:
            metadata[f"{r.meter}_settled"] = (f"{r.settled[0].isoformat()} .. "
                                              f"{r.settled[1].isoformat()}")
    metadata["new_unknown_kinds"] = dg.MetadataValue.json(
        [k for r in landed for k in r.new_stub_kinds])
    return metadata


class MeasurementConfig(dg.Config):
    interpolate_flagged_hours: bool = False
    """Fill hours that are wholly unknown (gap or carried, no second covered by usage events)
    and have complete hours on both sides with the mean of those neighbours, marked as
    interpolated (only when the billing team asks for it)."""


MEASUREMENTS_DESCRIPTION = """Usage of one resource (an app process or a service instance) of one
resource kind in one UTC hour, in unit-seconds: MiB-seconds of app memory, instance-seconds of a
service plan, GiB-seconds and byte-seconds of AWS storage, sends and bytes of SES. Derived only
from landed data: the state at the hour's start carried forward and changed at each observation
inside it. An hour is complete when the landed data determines all of it; otherwise it is
flagged (never zero): uncertain (a resource's timing or plan is not known exactly), carried
(seconds with no events, the last known state carried) or a gap (nothing known at its start),
with the seconds and the reason, and its `hour_complete` check fails. A range of hours is
derived in one run and one transaction; each hourly partition gets its own hour's figures.
remeasure_sensor measures an hour again when data that changes it lands later."""


@dg.multi_asset(
    name="hourly_measurements",
    specs=[dg.AssetSpec("hourly_measurements", group_name="usage", kinds={"postgres"},
                        partitions_def=hourly_partitions,
                        deps=[foundation_snapshot, usage_events, aws_readings],
                        description=MEASUREMENTS_DESCRIPTION)],
    check_specs=[
        dg.AssetCheckSpec(
            "hours_complete", asset="hourly_measurements",
            description="Every hour of every meter the run measured is determined by what was "
                        "landed: usage events cover all of it and no resource's usage in it is "
                        "uncertain (lists the flagged hours of the run)."),
        dg.AssetCheckSpec(
            HOUR_COMPLETE, asset="hourly_measurements", partitions_def=hourly_partitions,
            description="This hour is determined by what was landed, for every meter: fails "
                        "(warn) for a gap, carried, uncertain or interpolated hour, with each "
                        "meter's status, uncovered seconds and reason."),
    ],
    # each check can run alone (the UI's "Execute"): it then reads the hours as measured
    can_subset=True,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def hourly_measurements(
    context: dg.AssetExecutionContext, db: BillingDatabase, config: MeasurementConfig
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    start, end = utc_window(context.partition_time_window)
    measure = MEASUREMENTS in context.selected_asset_keys
    with db.connect() as conn:
        if measure:
            derived = derive_window(conn, start, end,
                                    interpolate=config.interpolate_flagged_hours)
            context.log.info(f"derived {derived.hours} hours from {start.isoformat()}: "
                             f"{derived.rows} rows, {len(derived.gaps)} gap, "
                             f"{len(derived.carried)} carried and {len(derived.uncertain)} "
                             "uncertain hours")
        else:
            derived = summarize_window(conn, start, end)
        hours = hour_reports(conn, start, end, postings=False)
    window_check = dg.AssetCheckResult(
        asset_key=MEASUREMENTS, check_name="hours_complete", passed=not derived.flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"flagged_hours": dg.MetadataValue.md(_flagged_table(derived))})
    run_checks = dg.AssetCheckKey(MEASUREMENTS, "hours_complete") in \
        context.selected_asset_check_keys
    if measure:
        for hour in hours:
            context.add_asset_metadata(hour.measurement_metadata(), asset_key=MEASUREMENTS,
                                       partition_key=hour.partition_key)
        yield dg.MaterializeResult(asset_key=MEASUREMENTS, metadata=_window_metadata(derived),
                                   check_results=[window_check] if run_checks else [])
    elif run_checks:
        yield window_check
    if dg.AssetCheckKey(MEASUREMENTS, HOUR_COMPLETE) in context.selected_asset_check_keys:
        # each hour judges its partition's newest materialization: this run's, if it measured
        targets = newest_materializations(context.instance, [h.partition_key for h in hours],
                                          context.run.run_id if measure else None)
        for hour in hours:
            if hour.partition_key in targets:
                # log_event records check evaluations although its annotation names only the
                # other event types
                context.log_event(hour.check_evaluation(  # pyright: ignore[reportArgumentType]
                    targets[hour.partition_key]))


def _snapshot_metadata(landed: LandedSnapshot) -> dict[str, Any]:
    return {
        "taken_at": landed.taken_at.isoformat(),
        "readings": dg.MetadataValue.json(landed.readings),
        "resources": dg.MetadataValue.json(landed.resources),
        "running": dg.MetadataValue.json(landed.running),
        "stopped_since_last_snapshot": dg.MetadataValue.json(landed.stopped_since_last),
        "new_stub_spaces": landed.stub_spaces,
        "new_unknown_kinds": dg.MetadataValue.json(landed.stub_kinds),
        "ignored": dg.MetadataValue.json(landed.ignored),
    }


def _window_metadata(derived: DerivedWindow) -> dict[str, Any]:
    """What the whole run measured, beside each partition's own hour (prefixed ``run_``)."""
    metadata: dict[str, Any] = {
        "run_hours": derived.hours,
        "run_window_utc": f"{derived.start.isoformat()} .. {derived.end.isoformat()}",
        "run_rows": derived.rows,
        "run_flagged_hours": len({f.hour_start for f in derived.flagged
                                  if f.status != "complete"}),
    }
    for totals in derived.totals:
        metadata[f"run_{totals.meter}_unknown_kinds"] = totals.unknown_kinds
        metadata[f"run_{totals.meter}_unattributed_resources"] = totals.unattributed
    return metadata


def _flagged_table(derived: DerivedWindow, limit: int = 50) -> str:
    if not derived.flagged:
        return "every hour complete"
    lines = ["| hour (UTC) | meter | status | basis | uncovered s | uncertain resources "
             "(resource-s) | incomplete readings | why |",
             "|---|---|---|---|---|---|---|---|"]
    for f in derived.flagged[:limit]:
        lines.append(f"| {f.hour_start.isoformat()} | {f.meter} | {f.status} "
                     f"| {f.basis or 'none'} | {f.uncovered_seconds} "
                     f"| {f.uncertain_resources} ({f.uncertain_resource_seconds}) "
                     f"| {f.incomplete_readings} | {f.reason or ''} |")
    if len(derived.flagged) > limit:
        lines.append(f"\n{len(derived.flagged) - limit} more not shown")
    return "\n".join(lines)
