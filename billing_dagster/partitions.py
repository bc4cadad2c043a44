"""Partitions: hourly and monthly, both in America/New_York.

The definitions below start in January 2025 (tests and the in-process demo use them as they
are); the code location the webserver and the daemon load starts both at the deployment's
billing start instead (``starting_at``, see definitions.py), so the UI's partition bars begin
where billing began and show as missing only hours that really are.

Dagster's TimeWindowPartitionMapping refuses to map UTC hours onto New York months, so the
hourly partitions are defined in New York time too (keys like ``2025-03-01-00:00``, the repeated
fall-back hour ``2025-11-02-01:00-0500``). Each hourly partition is still exactly one UTC hour;
everything stored is UTC and every duration comes from UTC timestamps.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from billing_dagster.business_time import BUSINESS_TIME, BUSINESS_TIMEZONE

# The tags that make one run cover a range of partitions (a single-run backfill).
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# The tag of a run of one partition.
PARTITION = "dagster/partition"

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date="2025-01-01-00:00", timezone=BUSINESS_TIMEZONE
)


def utc_window(window: dg.TimeWindow) -> tuple[datetime, datetime]:
    """A partition window as UTC instants (wall-clock subtraction across DST is wrong)."""
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def hourly_keys_between(start: datetime, end: datetime) -> list[str]:
    """The hourly partition keys covering [start, end), in order."""
    return list(hourly_partitions.get_partition_keys_in_time_window(dg.TimeWindow(start, end)))


def contiguous(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted hour starts grouped into [start, end) windows of consecutive hours."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1] = (ranges[-1][0], hour + timedelta(hours=1))
        else:
            ranges.append((hour, hour + timedelta(hours=1)))
    return ranges


monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date="2025-01", fmt="%Y-%m", timezone=BUSINESS_TIMEZONE
)


def business_month(window: dg.TimeWindow) -> date:
    """The first day of the New York month a monthly partition window covers."""
    return window.start.date().replace(day=1)


def starting_at(defs: dg.Definitions, start: date) -> dg.Definitions:
    """``defs`` with every hourly partition starting at ``start`` 00:00 New York time, and every
    monthly partition at ``start``'s month."""
    hourly = dg.HourlyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}-00:00",
                                           timezone=BUSINESS_TIMEZONE)
    monthly = dg.MonthlyPartitionsDefinition(start_date=f"{start:%Y-%m}", fmt="%Y-%m",
                                             timezone=BUSINESS_TIMEZONE)

    def restart(spec: dg.AssetSpec) -> dg.AssetSpec:
        if isinstance(spec.partitions_def, dg.HourlyPartitionsDefinition):
            return spec.replace_attributes(partitions_def=hourly)
        if isinstance(spec.partitions_def, dg.MonthlyPartitionsDefinition):
            return spec.replace_attributes(partitions_def=monthly)
        return spec

    mapped = defs.map_asset_specs(func=restart)
    # map_asset_specs leaves asset checks' partitions as they were, and a partitioned check
    # must share its asset's: rebuild the assets whose checks are hourly (hour_complete)
    return dg.Definitions(
        assets=[_with_hourly_checks(a, hourly) if isinstance(a, dg.AssetsDefinition) else a
                for a in mapped.assets or []],
        asset_checks=mapped.asset_checks, jobs=mapped.jobs, schedules=mapped.schedules,
        sensors=mapped.sensors, resources=mapped.resources, executor=mapped.executor,
        loggers=mapped.loggers, metadata=mapped.metadata)


def _with_hourly_checks(assets_def: dg.AssetsDefinition,
                        hourly: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    checks = assets_def.node_check_specs_by_output_name
    if not any(isinstance(c.partitions_def, dg.HourlyPartitionsDefinition)
               for c in checks.values()):
        return assets_def
    # Dagster has no public way to replace a check's partitions on a built asset (1.13)
    attributes = assets_def.get_attributes_dict()
    attributes["check_specs_by_output_name"] = {
        name: c._replace(partitions_def=hourly)
        if isinstance(c.partitions_def, dg.HourlyPartitionsDefinition) else c
        for name, c in checks.items()}
    return dg.AssetsDefinition.dagster_internal_init(**attributes)


def month_before(moment: datetime) -> date:
    """The first day of the New York month before the one ``moment`` falls in."""
    first = moment.astimezone(BUSINESS_TIME).date().replace(day=1)
    if first.month == 1:
        return first.replace(year=first.year - 1, month=12)
    return first.replace(month=first.month - 1)
