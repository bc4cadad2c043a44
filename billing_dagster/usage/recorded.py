"""Hours measured outside a Dagster run, recorded in Dagster as what they are.

``make run``'s history (and an operator's direct backfill with the project's functions) measures
and prices hours without a Dagster run, so the UI would show those partitions as missing although
their rows are in the database. ``record_measured_hours`` reports one materialization of
``hourly_measurements`` and of ``priced_postings`` per such hour (Dagster's runless asset events),
with that hour's own metadata (the same as a run gives it), its ``hour_complete`` check, and a
tag saying how it was measured.
"""

from __future__ import annotations

import logging
from datetime import datetime

import dagster as dg
import psycopg

from billing_dagster.usage.hours import hour_reports, newest_materializations

log = logging.getLogger(__name__)
MEASURED_BY = "billing/measured_by"


def record_measured_hours(instance: dg.DagsterInstance, conn: psycopg.Connection,
                          start: datetime, end: datetime, measured_by: str,
                          description: str) -> int:
    """Record the measured hours of [start, end) (UTC); the number of hours recorded.

    ``measured_by`` tags each materialization (a slug: letters, digits, ``-_.``, e.g.
    ``make-run-history``); ``description`` says in words how the hour was measured. Each hour
    also gets its ``hour_complete`` check evaluation, as a run would give it."""
    tags, how = {MEASURED_BY: measured_by}, dg.MetadataValue.text(description)
    measured = [hour for hour in hour_reports(conn, start, end) if hour.measured]
    for hour in measured:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "hourly_measurements", partition=hour.partition_key, tags=tags,
            metadata={**hour.measurement_metadata(), "measured": how}))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "priced_postings", partition=hour.partition_key, tags=tags,
            metadata={**hour.posting_metadata(), "measured": how}))
    # each check judges its hour's materialization just reported, looked up in one query
    targets = newest_materializations(instance, [h.partition_key for h in measured], "")
    for hour in measured:
        instance.report_runless_asset_event(hour.check_evaluation(targets[hour.partition_key]))
    recorded = len(measured)
    log.info("recorded %d hours measured outside Dagster (%s) as materializations", recorded,
             description)
    return recorded
