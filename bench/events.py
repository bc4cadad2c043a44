"""`make bench`: about 1 million usage events landed from scratch, beside the floor of a bare
COPY of as many event-shaped rows, measured in the same run.

A simulated foundation (100k apps / 50k service instances by default) evolves day by day until
its app and service event streams hold at least ``--events`` events (retention 60 days, so none
is pruned). Then ``land_events`` reads both streams from scratch, as a first landing does: a base
snapshot of the stream's meter, then every page (per_page 5000) with the landing of each page
in its own transaction. The split:

- base snapshot: ``take_snapshot`` + ``land_snapshot`` of the same meter and the same state,
  timed in a second fresh database (the landing itself takes its own, inside the total);
- fetch: every page of the stream read again through the same client, nothing landed (the
  simulator cuts and serializes each page in this process, under the same GIL);
- landing: each page's landing timed alone (rows built from the JSON, COPY to staging, the
  set-based landing SQL, commit), by wrapping the module's ``_land_page`` for the bench;
- other: what is left (cursor reads between pages).

The databases are fresh ones on BENCH_ADMIN_URL (see bench.snapshot), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.snapshot import admin_url, fresh_database, time_copy, timed
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect
from billing_dagster.meters import METERS, STREAMS, EventStream, Meter
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.usage import events as events_module
from billing_dagster.usage.events import land_events
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

START = datetime(2025, 3, 1, tzinfo=UTC)
CLIENT = ("billing", "billing-secret")
COLUMNS = 16  # billing.app_usage_event's landed columns (the stage_app_event COPY)


def events_in(foundation: Foundation) -> int:
    return len(foundation.app_events) + len(foundation.service_events)


def grow(apps: int, services: int, target: int) -> tuple[Foundation, int]:
    """A foundation evolved whole virtual days until it holds ``target`` events; the days."""
    foundation = Foundation(seed=11, apps=apps, service_instances=services, start=START,
                            retention_days=60)
    days = 0
    while events_in(foundation) < target:
        days += 1
        foundation.advance_to(START + timedelta(days=days))
    return foundation, days


def meters_of(stream: EventStream) -> tuple[Meter, ...]:
    return tuple(m for m in METERS if m.name == stream.meter)


@contextmanager
def page_timings() -> Iterator[list[float]]:
    """Seconds of each page's landing (rows from the JSON, COPY, landing SQL, commit): the
    module's ``_land_page`` wrapped for the bench only, put back on the way out."""
    original = events_module._land_page
    seconds: list[float] = []

    def land_page(*args: Any, **kwargs: Any) -> Any:
        value, elapsed = timed(lambda: original(*args, **kwargs))
        seconds.append(elapsed)
        return value

    events_module._land_page = land_page
    try:
        yield seconds
    finally:
        events_module._land_page = original


def fetch_all(client: CloudFoundryClient, stream: EventStream) -> tuple[int, int]:
    """Every page of the stream read and parsed, nothing landed: (events, pages)."""
    events = pages = 0
    for page in client.pages(stream.path):
        events += len(page.resources)
        pages += 1
    return events, pages


def copy_floor(url: str, rows: int) -> float:
    """COPY as many event-shaped rows (16 columns, like stage_app_event) into a bare logged
    table with no index: the least landing them can cost."""
    at = START.isoformat()
    data = [(i % 5000, str(uuid.UUID(int=i)), at, "STARTED", "STOPPED",
             str(uuid.UUID(int=i + 1)), f"app-{i}", str(uuid.UUID(int=i + 2)), "web",
             str(uuid.UUID(int=i + 3)), "space", str(uuid.UUID(int=i + 4)), 2, 1, 512, 256)
            for i in range(rows)]
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE copy_floor (pos integer, guid text, created_at timestamptz, "
            "state text, previous_state text, app_guid text, app_name text, process_guid text, "
            "process_type text, space_guid text, space_name text, org_guid text, "
            "instance_count integer, previous_instance_count integer, memory_in_mb integer, "
            "previous_memory_in_mb integer)")
        conn.commit()
        return time_copy(conn, data)


def bench(admin: str, apps: int, services: int, target: int) -> list[dict[str, float | int | str]]:
    (foundation, days), generate_s = timed(lambda: grow(apps, services, target))
    print(f"foundation: {apps} apps / {services} service instances, {days} virtual days, "
          f"{len(foundation.app_events)} app + {len(foundation.service_events)} service events "
          f"(generated in {generate_s:.1f} s)")
    rows: list[dict[str, float | int | str]] = []
    with fresh_database(admin) as url, fresh_database(admin) as snapshot_url, \
            Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim, \
            CloudFoundryClient(sim.url, *CLIENT) as client:
        now = foundation.now
        with connect(snapshot_url) as conn:
            snapshots = {}
            for stream in STREAMS:
                _, snapshot_s = timed(lambda s=stream: land_snapshot(
                    conn, take_snapshot(client, meters_of(s), now)))
                snapshots[stream.name] = snapshot_s
        with connect(url) as conn:
            for stream in STREAMS:
                with page_timings() as per_page:
                    landed, land_s = timed(lambda s=stream: land_events(conn, client, s, now))
                (fetched, pages), fetch_s = timed(lambda s=stream: fetch_all(client, s))
                assert fetched == landed.events_read, (fetched, landed)
                snapshot_s = snapshots[stream.name]
                rows.append({"stream": stream.name, "events": landed.events_new,
                             "pages": landed.pages, "total_s": land_s,
                             "events_per_s": landed.events_new / land_s,
                             "snapshot_s": snapshot_s, "fetch_s": fetch_s,
                             "landing_s": sum(per_page),
                             "other_s": land_s - snapshot_s - fetch_s - sum(per_page),
                             "first10_ms": 1000 * sum(per_page[:10]) / len(per_page[:10]),
                             "last10_ms": 1000 * sum(per_page[-10:]) / len(per_page[-10:])})
        keys = ("events", "pages", "total_s", "snapshot_s", "fetch_s", "landing_s", "other_s")
        total = {key: sum(float(r[key]) for r in rows) for key in keys}
        rows.append({"stream": "both", **{k: int(v) if k in ("events", "pages") else v
                                          for k, v in total.items()},
                     "events_per_s": total["events"] / total["total_s"],
                     "first10_ms": "", "last10_ms": ""})
        floor_s = copy_floor(url, int(total["events"]))
        rows.append({"stream": f"COPY floor ({COLUMNS} cols)", "events": int(total["events"]),
                     "pages": 1, "total_s": floor_s, "events_per_s": total["events"] / floor_s,
                     "snapshot_s": "", "fetch_s": "", "landing_s": floor_s, "other_s": "",
                     "first10_ms": "", "last10_ms": ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=100_000,
                        help="apps; service instances are half of them")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="virtual days are added until the streams hold this many events")
    args = parser.parse_args()
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, "
          f"{os.cpu_count()} CPUs")
    rows = bench(admin, args.apps, args.apps // 2, args.events)
    header = ("stream", "events", "pages", "total_s", "events_per_s", "snapshot_s", "fetch_s",
              "landing_s", "other_s", "first10_ms", "last10_ms")
    widths = {"stream": 22}
    print(" | ".join(f"{h:>{widths.get(h, 12)}}" for h in header))
    for r in rows:
        print(" | ".join(f"{r[h]:>{widths.get(h, 12)}.2f}" if isinstance(r[h], float)
                         else f"{r[h]:>{widths.get(h, 12)}}" for h in header))
    print("total_s: land_events from scratch (base snapshot + every page fetched and landed). "
          "snapshot_s: the same base snapshot timed alone in a second fresh database. fetch_s: "
          "every page read again, nothing landed (the simulator cuts and serializes pages in "
          "this process). landing_s: the pages' landings (rows from the JSON, COPY to staging, "
          "landing SQL, commit), timed each; first10_ms/last10_ms: the mean of the first and "
          "last 10. other_s = total_s - snapshot_s - fetch_s - landing_s (cursor reads; it also "
          "takes the noise of the two separate reads, so it can be below 0). COPY floor: a "
          "bare logged table, no index, one COPY.")


if __name__ == "__main__":
    main()
