"""Snapshots: the foundation's state read now, landed in Postgres in one transaction.

A snapshot describes only the instant it was taken. Orgs and spaces (names, org of each space)
are refreshed; each meter's resources are stored as observations stamped with that instant.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from billing_dagster.cf.client import CfApiError, CloudFoundryClient
from billing_dagster.meters import Meter, MeterSnapshot
from billing_dagster.sql import copy_rows, query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inventory:
    """Organizations and spaces as read now; ``error`` says what could not be read."""

    orgs: list[tuple[str, str]]  # guid, name
    spaces: list[tuple[str, str | None, str]]  # guid, org guid, name
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    inventory: Inventory
    meters: list[MeterSnapshot]


@dataclass(frozen=True)
class LandedSnapshot:
    """What a landed snapshot holds, for logs and Dagster metadata."""

    taken_at: datetime
    readings: dict[str, str]  # meter -> complete / partial / failed
    resources: dict[str, int]  # meter -> resources observed
    running: dict[str, int]  # meter -> resources with a rate above zero
    stopped_since_last: dict[str, int]  # meter -> resources closed because they disappeared
    errors: dict[str, str] = field(default_factory=dict)
    stub_spaces: int = 0
    stub_kinds: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(status == "complete" for status in self.readings.values()) and not self.errors


def read_inventory(cf: CloudFoundryClient) -> Inventory:
    """Orgs and spaces; a failure here leaves names unrefreshed but does not stop metering."""
    try:
        orgs = [(o["guid"], o["name"]) for o in cf.list_all("/v3/organizations").resources]
        spaces = [
            (s["guid"], ((s.get("relationships", {}).get("organization") or {}).get("data")
                         or {}).get("guid"), s["name"])
            for s in cf.list_all("/v3/spaces").resources
        ]
    except CfApiError as exc:
        log.warning("orgs and spaces not refreshed: %s", exc)
        return Inventory([], [], error=str(exc))
    except (KeyError, TypeError) as exc:
        return Inventory([], [], error=f"malformed org or space record: missing {exc}")
    return Inventory(orgs, spaces)


def take_snapshot(cf: CloudFoundryClient, meters: tuple[Meter, ...],
                  taken_at: datetime) -> Snapshot:
    """Read the inventory and every meter. ``taken_at`` is the instant this state describes.

    The reads run at once, a thread each: while one decodes a page (our CPU), another waits
    for the Cloud Controller to render its next (the API's CPU), instead of taking turns."""
    with ThreadPoolExecutor(1 + len(meters), thread_name_prefix="cf-snapshot") as pool:
        inventory = pool.submit(read_inventory, cf)
        readings = [pool.submit(_read_meter, meter, cf) for meter in meters]
    return Snapshot(taken_at.replace(microsecond=0), inventory.result(),
                    [reading.result() for reading in readings])


def _read_meter(meter: Meter, cf: CloudFoundryClient) -> MeterSnapshot:
    try:
        reading = meter.snapshot(cf)
    except (KeyError, TypeError, ValueError) as exc:
        reading = MeterSnapshot(meter.name, [], [], complete=False,
                                error=f"malformed {meter.name} record: {exc!r}")
    log.info("%s: %s, %d resources%s", meter.name, reading.status, len(reading.resources),
             f" ({reading.error})" if reading.error else "")
    return reading


def land_snapshot(conn: psycopg.Connection, snapshot: Snapshot,
                  run_id: str | None = None) -> LandedSnapshot:
    """Write one snapshot in one transaction: all of it or, on any error, none of it."""
    at = {"taken_at": snapshot.taken_at}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("create_snapshot_staging"))
        copy_rows(cur, "copy_stage_org", snapshot.inventory.orgs)
        copy_rows(cur, "copy_stage_space", snapshot.inventory.spaces)
        copy_rows(cur, "copy_stage_kind", [
            (m.meter, k.natural_id, k.name, json.dumps(k.details))
            for m in snapshot.meters for k in m.kinds])
        copy_rows(cur, "copy_stage_resource", [
            (m.meter, r.natural_id, r.name, r.space_guid, json.dumps(r.details),
             r.kind_natural_id, r.rate)
            for m in snapshot.meters for r in m.resources])
        cur.execute(query("analyze_snapshot_staging"))
        cur.execute(query("upsert_orgs"), at)
        cur.execute(query("upsert_spaces"), at)
        cur.execute(query("insert_stub_spaces"), at)
        stub_spaces = cur.rowcount
        cur.execute(query("upsert_kinds"), at)
        cur.execute(query("insert_stub_kinds"), at)
        stub_kinds = [f"{meter}:{natural_id}" for meter, natural_id in cur.fetchall()]
        cur.execute(query("insert_new_resources"), at)
        cur.execute(query("update_changed_resources"))

        stopped: dict[str, int] = {}
        errors: dict[str, str] = {}
        for reading in snapshot.meters:
            error = reading.error
            if snapshot.inventory.error:
                # one failure (a dead API, refused credentials) often fails both: say it once
                error = "; ".join(dict.fromkeys(filter(None, [error, snapshot.inventory.error])))
            cur.execute(query("insert_reading"), {
                **at, "meter": reading.meter, "status": reading.status,
                "resources": len(reading.resources), "error": error, "run_id": run_id})
            row = cur.fetchone()
            assert row is not None
            ids = {**at, "meter": reading.meter, "reading_id": row[0]}
            cur.execute(query("insert_observations"), ids)
            if reading.complete:
                cur.execute(query("insert_absence_observations"), ids)
                stopped[reading.meter] = cur.rowcount
            if error:
                errors[reading.meter] = error
    ignored: Counter[str] = Counter()
    for reading in snapshot.meters:
        ignored.update({f"{reading.meter}: {k}": v for k, v in reading.ignored.items()})
    return LandedSnapshot(
        taken_at=snapshot.taken_at,
        readings={m.meter: m.status for m in snapshot.meters},
        resources={m.meter: len(m.resources) for m in snapshot.meters},
        running={m.meter: sum(1 for r in m.resources if r.rate > 0) for m in snapshot.meters},
        stopped_since_last=stopped,
        errors=errors,
        stub_spaces=stub_spaces,
        stub_kinds=stub_kinds,
        ignored=dict(ignored),
    )
