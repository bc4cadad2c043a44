"""What each hourly partition holds, for its own metadata and its ``hour_complete`` check.

A run of many hours (a single-run backfill, the catch-up after an outage) writes one
materialization per hourly partition; each carries its own hour's figures (never the whole
window's) and each hour's ``hour_complete`` check says whether the landed data determines it,
so a flagged hour shows as failed in the check's partition bar however it was run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import psycopg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # no public name
    AssetCheckEvaluationTargetMaterializationData as MaterializationTarget,
)
from psycopg.rows import dict_row

from billing_dagster.partitions import hourly_keys_between
from billing_dagster.sql import query

HOUR = timedelta(hours=1)
MEASUREMENTS = dg.AssetKey("hourly_measurements")
HOUR_COMPLETE = "hour_complete"


@dataclass(frozen=True)
class MeterHour:
    """One meter in one hour: what the landed data determines and what was measured."""

    meter: str
    status: str  # complete, uncertain, carried, gap, interpolated
    reason: str | None
    uncovered_seconds: int
    incomplete_readings: int
    # what was measured; None in a report that did not count it (the postings' own)
    rows: int | None = None
    resources: int | None = None
    unit_seconds: int | None = None


@dataclass(frozen=True)
class CustomerHour:
    """One customer's priced postings in one hour ('' = usage of orgs with no customer)."""

    customer: str
    rows: int
    microcredits: Decimal  # exact, before the monthly rounding
    held_rows: int  # no price or no customer


@dataclass(frozen=True)
class HourReport:
    hour_start: datetime
    partition_key: str
    meters: list[MeterHour] = field(default_factory=list)
    postings: list[CustomerHour] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return bool(self.meters)

    @property
    def flagged(self) -> list[MeterHour]:
        return [m for m in self.meters if m.status != "complete"]

    def measurement_metadata(self) -> dict[str, Any]:
        if any(m.rows is None or m.resources is None for m in self.meters):
            raise ValueError(f"hour {self.partition_key}: its measurements were not counted "
                             "(hour_reports(..., measurements=True) counts them)")
        metadata: dict[str, Any] = {
            "hour_start_utc": self.hour_start.isoformat(),
            "status": _status(self),
            "rows": sum(m.rows or 0 for m in self.meters),
            "resources": sum(m.resources or 0 for m in self.meters),
        }
        for m in self.meters:
            metadata[f"{m.meter}_unit_seconds"] = m.unit_seconds
        metadata["flagged_meters"] = dg.MetadataValue.json(_flagged(self))
        return metadata

    def posting_metadata(self) -> dict[str, Any]:
        customers = {p.customer: p for p in self.postings}
        return {
            "hour_start_utc": self.hour_start.isoformat(),
            "rows": sum(p.rows for p in self.postings),
            "customers": len([c for c in customers if c]),
            "microcredits_exact": str(sum((p.microcredits for p in self.postings), Decimal(0))),
            "microcredits_by_customer": dg.MetadataValue.json(
                {c or "(no customer)": str(p.microcredits) for c, p in customers.items()}),
            "held_rows": sum(p.held_rows for p in self.postings),
            "measurement_status": _status(self),
        }

    def check_evaluation(self, target: MaterializationTarget | None) -> dg.AssetCheckEvaluation:
        """This hour's hour_complete evaluation, of ``target``: the partition's materialization
        it judges (Dagster shows an evaluation in the check's partitions only while it targets
        the partition's newest materialization)."""
        flagged = _flagged(self)
        return dg.AssetCheckEvaluation(
            asset_key=MEASUREMENTS, check_name=HOUR_COMPLETE, passed=not flagged,
            severity=dg.AssetCheckSeverity.WARN, partition=self.partition_key,
            description=_status(self), target_materialization_data=target,
            metadata={"hour_start_utc": self.hour_start.isoformat(),
                      "flagged_meters": dg.MetadataValue.json(flagged)})


def newest_materializations(instance: dg.DagsterInstance, keys: list[str],
                            run_id: str | None, asset: dg.AssetKey = MEASUREMENTS,
                            ) -> dict[str, MaterializationTarget]:
    """The newest materialization of each hourly partition of ``keys`` (that has one) of
    ``asset``, as a check evaluation's target. ``run_id``: the run that just made them ("" for
    runless events); None to look each one up (a check run on its own)."""
    storage_ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset, dg.DagsterEventType.ASSET_MATERIALIZATION, set(keys))
    targets = {}
    for key, storage_id in storage_ids.items():
        made_by, at = run_id, time.time()
        if made_by is None:
            (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=asset, asset_partitions=[key]), limit=1).records
            made_by, at = record.run_id, record.timestamp
        targets[key] = MaterializationTarget(storage_id=storage_id, run_id=made_by,
                                             timestamp=at)
    return targets


def _status(report: HourReport) -> str:
    if not report.measured:
        return "not measured"
    if not report.flagged:
        return "complete"
    return "flagged: " + ", ".join(f"{m.meter} {m.status}" for m in report.flagged)


def _flagged(report: HourReport) -> list[dict[str, Any]]:
    return [{"meter": m.meter, "status": m.status, "uncovered_seconds": m.uncovered_seconds,
             "reason": m.reason} for m in report.flagged]


def hour_reports(conn: psycopg.Connection, start: datetime, end: datetime, *,
                 measurements: bool = True, postings: bool = True) -> list[HourReport]:
    """One report per UTC hour of [start, end), in order (an hour never measured has none of
    its meters). Every report says what the landed data determines of each meter; with
    ``measurements`` it counts the hour's measurements, with ``postings`` its priced postings.
    Each asset asks for its own: counting a month of a 10k-app foundation's 10.2M measurements
    takes about 10 s, which the postings' metadata has no use for."""
    window = {"window_start": start, "window_end": end}
    meters: dict[datetime, list[MeterHour]] = defaultdict(list)
    priced: dict[datetime, list[CustomerHour]] = defaultdict(list)
    with conn.cursor(row_factory=dict_row) as cur:
        summaries = "hour_measurement_summaries" if measurements else "hour_coverage_summaries"
        for row in cur.execute(query(summaries), window):
            hour = row.pop("hour_start")
            meters[hour].append(MeterHour(**row))
        if postings:
            for row in cur.execute(query("hour_posting_summaries"), window):
                hour = row.pop("hour_start")
                priced[hour].append(CustomerHour(**row))
    keys = hourly_keys_between(start, end)
    return [HourReport(start + i * HOUR, key, meters[start + i * HOUR],
                       priced[start + i * HOUR]) for i, key in enumerate(keys)]
