"""AWS readings: each AWS meter read now and landed in Postgres, one transaction per meter.

A reading's samples are attributed in SQL (sql/queries/aws.sql) to the CF service instance
their ``Instance GUID`` tag names, and so to its space, org and customer; an untagged resource
or one naming an instance CF never reported is kept on a stub kind and flagged. Gauge samples
become observations (integrated into hours like CF's); counter samples become hourly counts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg.types.range import Range

from billing_dagster.aws.client import AwsClients
from billing_dagster.meters import AwsMeter, AwsReading
from billing_dagster.meters.units import SINGLE_KINDS
from billing_dagster.sql import copy_rows, query

log = logging.getLogger(__name__)
KNOWN_FOR = timedelta(days=7)  # resources seen this recently are asked about even if unlisted


@dataclass(frozen=True)
class LandedAwsReading:
    """What one landed AWS reading holds, for logs and Dagster metadata."""

    meter: str
    status: str
    resources: int
    samples: int
    total: int  # GiB allocated now (sampled), bytes stored on the newest day (daily), or the
    # sends / attachment bytes of the hours read (counted)
    new_observations: int
    untagged: int
    unknown_instance: int
    unattributed: list[dict[str, str | None]] = field(default_factory=list)
    new_stub_kinds: list[str] = field(default_factory=list)
    settled: tuple[datetime, datetime] | None = None
    error: str | None = None


def known_resources(conn: psycopg.Connection, meter: str,
                    now: datetime) -> dict[str, str | None]:
    rows = conn.execute(query("known_aws_resources"),
                        {"meter": meter, "since": now - KNOWN_FOR}).fetchall()
    return {natural_id: guid for natural_id, guid in rows}


def read_and_land(conn: psycopg.Connection, aws: AwsClients, meters: tuple[AwsMeter, ...],
                  now: datetime, run_id: str | None = None) -> list[LandedAwsReading]:
    """Read every AWS meter at ``now`` and land each reading in its own transaction."""
    now = now.replace(microsecond=0)
    landed = []
    for meter in meters:
        reading = meter.read(aws, now, known_resources(conn, meter.name, now))
        log.info("%s: %s, %d resources, %d samples%s", meter.name, reading.status,
                 reading.resources, len(reading.samples),
                 f" ({reading.error})" if reading.error else "")
        landed.append(land_aws_reading(conn, reading, meter.basis, run_id))
    return landed


def land_aws_reading(conn: psycopg.Connection, reading: AwsReading, basis: str,
                     run_id: str | None = None) -> LandedAwsReading:
    """Write one reading: all of it or, on any error, none of it."""
    settled = Range(*reading.settled, "[)") if reading.settled else None
    params = {"meter": reading.meter, "taken_at": reading.taken_at,
              "kind": SINGLE_KINDS[reading.meter]}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("create_aws_staging"))
        copy_rows(cur, "copy_stage_aws", [
            *((s.natural_id, s.name, s.instance_guid, json.dumps(s.details), s.at, s.value)
              for s in reading.samples),
            *((r.natural_id, r.name, r.instance_guid, json.dumps(r.details), None, None)
              for r in reading.listed)])
        cur.execute("ANALYZE stage_aws")
        cur.execute(query("insert_aws_reading"), {
            **params, "status": reading.status, "resources": reading.resources,
            "error": reading.error, "run_id": run_id,
            "covers": settled if reading.complete else None})
        row = cur.fetchone()
        assert row is not None
        ids = {**params, "reading_id": row[0]}
        cur.execute(query("attribute_aws_resources"), ids)
        cur.execute(query("insert_aws_kinds"), ids)
        stub_kinds = [f"{reading.meter}:{r[0]}" for r in cur.fetchall()]
        cur.execute(query("upsert_aws_resources"), ids)
        cur.execute(query("resolve_aws_samples"), ids)
        if basis == "counted":
            cur.execute(query("insert_counted_usage"), ids)
            new = cur.rowcount
        else:
            cur.execute(query("insert_aws_observations"),
                        {**ids, "repeats_known": basis == "sampled"})
            new = cur.rowcount
            if basis == "sampled" and reading.complete:
                cur.execute(query("insert_sampled_absences"), ids)
                new += cur.rowcount
            elif basis == "daily" and reading.complete and reading.settled:
                cur.execute(query("insert_daily_absences"), {
                    **ids, "settled_from": reading.settled[0], "settled_to": reading.settled[1]})
                new += cur.rowcount
        summary = cur.execute(query("aws_reading_summary")).fetchone()
        assert summary is not None
    return LandedAwsReading(
        meter=reading.meter, status=reading.status, resources=reading.resources,
        samples=len(reading.samples), total=_total(reading, basis),
        new_observations=new, untagged=summary[1], unknown_instance=summary[2],
        unattributed=summary[3], new_stub_kinds=stub_kinds, settled=reading.settled,
        error=reading.error)


def _total(reading: AwsReading, basis: str) -> int:
    if basis == "daily":
        newest = max((s.at for s in reading.samples), default=None)
        return sum(s.value for s in reading.samples if s.at == newest)
    return sum(s.value for s in reading.samples)
