"""Hours measured outside a Dagster run, recorded in Dagster as what they are.

``make run``'s history (and an operator's direct backfill with the project's functions) measures
and prices hours without a Dagster run, so the UI would show those partitions as missing although
their rows are in the database. ``record_measured_hours`` reports one materialization of
``hourly_measurements`` and of ``priced_postings`` per such hour (Dagster's runless asset events),
with that hour's own metadata and a tag saying how it was measured.
"""

from __future__ import annotations

import logging
from datetime import datetime

import dagster as dg
import psycopg
from psycopg.rows import dict_row

from billing_dagster.partitions import hourly_keys_between
from billing_dagster.sql import query

log = logging.getLogger(__name__)
MEASURED_BY = "billing/measured_by"


def record_measured_hours(instance: dg.DagsterInstance, conn: psycopg.Connection,
                          start: datetime, end: datetime, measured_by: str,
                          description: str) -> int:
    """Record the measured hours of [start, end) (UTC); the number of hours recorded.

    ``measured_by`` tags each materialization (a slug: letters, digits, ``-_.``, e.g.
    ``make-run-history``); ``description`` says in words how the hour was measured."""
    keys = hourly_keys_between(start, end)
    with conn.cursor(row_factory=dict_row) as cur:
        hours = cur.execute(query("hour_summaries"),
                            {"window_start": start, "window_end": end}).fetchall()
    if len(keys) != len(hours):
        raise ValueError(f"{len(keys)} partition keys for {len(hours)} hours in "
                         f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})")
    tags, how = {MEASURED_BY: measured_by}, dg.MetadataValue.text(description)
    recorded = 0
    for key, hour in zip(keys, hours, strict=True):
        if not hour["measured"]:
            continue
        flagged = dg.MetadataValue.json(list(hour["flagged"]))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "hourly_measurements", partition=key, tags=tags, metadata={
                "hour_start_utc": hour["hour_start"].isoformat(), "measured": how,
                "rows": hour["measurement_rows"], "resources": hour["resources"],
                "flagged_meters": flagged}))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "priced_postings", partition=key, tags=tags, metadata={
                "hour_start_utc": hour["hour_start"].isoformat(), "measured": how,
                "rows": hour["posting_rows"], "customers": hour["customers"],
                "microcredits": hour["microcredits"], "flagged_meters": flagged}))
        recorded += 1
    log.info("recorded %d hours measured outside Dagster (%s) as materializations", recorded,
             description)
    return recorded
