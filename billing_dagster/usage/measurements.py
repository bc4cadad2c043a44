"""Hourly measurements derived from landed observations, one transaction per window.

The derivation is set-based SQL (sql/queries/measurements.sql); this module only checks the
window, runs it, and summarises the result for logs and the Dagster UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from billing_dagster.database import ensure_month_partitions
from billing_dagster.sql import query


@dataclass(frozen=True)
class MeterTotals:
    meter: str
    unit_seconds: int
    resources: int
    unattributed: int  # resources whose space or org is a stub
    unknown_kinds: int


@dataclass(frozen=True)
class FlaggedHour:
    """An hour of one meter that the landed data does not determine exactly (or one with
    partial or failed readings in it)."""

    hour_start: datetime
    meter: str
    status: str  # gap, carried, uncertain, interpolated, or complete with incomplete readings
    basis: str | None  # events, both (events on a base snapshot), snapshot
    state_from: datetime | None  # the newest complete snapshot at or before the hour's start
    uncovered_seconds: int  # seconds of the hour no usage events cover
    uncertain_resources: int
    uncertain_resource_seconds: int
    incomplete_readings: int
    reason: str | None


@dataclass(frozen=True)
class DerivedWindow:
    start: datetime
    end: datetime
    rows: int
    totals: list[MeterTotals]
    flagged: list[FlaggedHour]

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)

    @property
    def gaps(self) -> list[FlaggedHour]:
        return [f for f in self.flagged if f.status == "gap"]

    @property
    def carried(self) -> list[FlaggedHour]:
        return [f for f in self.flagged if f.status == "carried"]

    @property
    def uncertain(self) -> list[FlaggedHour]:
        return [f for f in self.flagged if f.status == "uncertain"]

    @property
    def interpolated(self) -> list[FlaggedHour]:
        return [f for f in self.flagged if f.status == "interpolated"]


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The window in UTC; it must be whole UTC hours, start before end."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"window {start}..{end} must be timezone-aware")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    for bound in (start, end):
        if bound != bound.replace(minute=0, second=0, microsecond=0):
            raise ValueError(f"window bound {bound.isoformat()} is not on a whole hour")
    if end <= start:
        raise ValueError(f"window end {end.isoformat()} is not after start {start.isoformat()}")
    return start, end


def derive_window(conn: psycopg.Connection, start: datetime, end: datetime, *,
                  interpolate: bool = False) -> DerivedWindow:
    """Replace the measurements and coverage flags of [start, end) in one transaction.

    Re-running a window converges to the same rows; concurrent runs of overlapping windows
    serialise on a transaction-level advisory lock instead of interleaving their writes.
    With ``interpolate``, hours that are wholly unknown (no second covered by usage events)
    and have a complete hour on both sides are filled with the mean of those neighbours and
    marked interpolated (only when asked: it is an estimate, not a measurement).
    """
    start, end = check_window(start, end)
    window = {"window_start": start, "window_end": end}
    ensure_month_partitions(conn, start, end)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('billing.hourly_measurement'))")
        # read before anything else: a reading that commits while the window is derived has a
        # greater id, so remeasure_sensor measures the window again rather than miss it
        newest = cur.execute(query("newest_reading")).fetchone()
        cur.execute(query("delete_measurements"), window)
        cur.execute(query("derive_measurements"), window)
        rows = cur.rowcount
        cur.execute(query("derive_counted_measurements"), window)
        rows += cur.rowcount
        cur.execute(query("delete_coverage"), window)
        cur.execute(query("derive_coverage"), window)
        cur.execute(query("derive_aws_coverage"), window)
        if interpolate:
            cur.execute(query("find_interpolable_hours"), window)
            cur.execute(query("interpolate_hours"))
            cur.execute(query("insert_interpolated"))
        cur.execute(query("stamp_coverage"),
                    {**window, "measured_through": newest[0] if newest else 0})
    return summarize_window(conn, start, end, rows)


def summarize_window(conn: psycopg.Connection, start: datetime, end: datetime,
                     rows: int | None = None) -> DerivedWindow:
    """Totals and flagged hours of an already derived window."""
    start, end = check_window(start, end)
    window = {"window_start": start, "window_end": end}
    with conn.cursor(row_factory=dict_row) as cur:
        totals = [MeterTotals(**r) for r in cur.execute(query("window_summary"), window)]
        flagged = [FlaggedHour(**r) for r in cur.execute(query("window_coverage"), window)]
        if rows is None:
            counted = cur.execute(query("count_measurements"), window).fetchone()
            rows = counted["rows"] if counted else 0
    return DerivedWindow(start, end, rows or 0, totals, flagged)
