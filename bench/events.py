"""`make bench`: about 1 million usage events landed from scratch, beside floors measured in
the same run.

A simulated foundation (100k apps / 50k service instances by default) is served by the
simulator in a process of its own (``python -m billing_dagster.simulator``), so the bench
times the client, not the server: its virtual clock is moved on a day at a time until its
app and service event streams hold at least ``--events`` events (retention 60 days, so none
is pruned). Then ``land_events`` reads both streams from scratch, as a first landing does: a
base snapshot of the stream's meter, then every page (per_page 5000), each landed in its own
transaction while the next ones are fetched (``read_ahead``). Reported per stream:

- base_s: the base snapshot inside that read (``_base_snapshot`` timed for the bench);
- pages_s: the rest, every page fetched and landed; events_per_s = new events / pages_s (the
  issue's target: 50,000 events/s);
- fetch_s: every page read again through the same client, nothing landed;
- landing_s: the pages' landings (rows from the JSON, COPY to staging, the landing SQL,
  commit), each timed (``_land_page`` wrapped for the bench) and summed;
- overlap: fetch_s + landing_s - pages_s, the time the read-ahead saved.

Floors, on the rows this landing wrote: (1) a bare COPY of as many event-shaped rows into a
table with no index; (2) COPY of the landed events and observations into copies of their tables
with the same indexes (what writing them at all costs).

The databases are fresh ones on BENCH_ADMIN_URL (see bench.snapshot), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.snapshot import (
    admin_url,
    fresh_database,
    move_clock,
    simulator_process,
    time_copy,
    timed,
)
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect
from billing_dagster.meters import METERS, STREAMS, EventStream, Meter
from billing_dagster.usage import events as events_module
from billing_dagster.usage.events import land_events

START = datetime(2025, 3, 1, tzinfo=UTC)
CLIENT = ("billing", "billing-secret")
COLUMNS = 16  # billing.app_usage_event's landed columns (the stage_app_event COPY)
TARGET_EVENTS_PER_S = 50_000  # issue 12


def grow(url: str, target: int) -> tuple[int, int, int]:
    """The served foundation moved on whole virtual days until its streams hold ``target``
    events: (days, app events, service events)."""
    days = 0
    with httpx.Client(base_url=url, timeout=600) as http:
        while True:
            stats = http.get("/_sim/stats").json()
            if stats["app_events"] + stats["service_events"] >= target:
                return days, stats["app_events"], stats["service_events"]
            days += 1
            move_clock(http, START + timedelta(days=days))


def meters_of(stream: EventStream) -> tuple[Meter, ...]:
    return tuple(m for m in METERS if m.name == stream.meter)


@contextmanager
def timings(name: str) -> Iterator[list[float]]:
    """Seconds of each call of the events module's function ``name``, wrapped for the bench
    only and put back on the way out."""
    original: Callable[..., Any] = getattr(events_module, name)
    seconds: list[float] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        value, elapsed = timed(lambda: original(*args, **kwargs))
        seconds.append(elapsed)
        return value

    setattr(events_module, name, wrapped)
    try:
        yield seconds
    finally:
        setattr(events_module, name, original)


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


def indexed_floor(url: str) -> tuple[int, float]:
    """The events and observations the landing wrote, written again into copies of their
    tables with the same indexes and checks (one statement each, one transaction)."""
    tables = ("app_usage_event", "service_usage_event", "observation")
    with psycopg.connect(url) as conn:
        for table in tables:
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier("public", f"floor_{table}"), sql.Identifier("billing", table)))
        conn.commit()
        rows = 0

        def write() -> None:
            nonlocal rows
            with conn.transaction():
                for table in tables:
                    rows += conn.execute(sql.SQL(
                        "INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {}").format(
                        sql.Identifier("public", f"floor_{table}"),
                        sql.Identifier("billing", table))).rowcount

        seconds = timed(write)[1]
        return rows, seconds


def bench(admin: str, apps: int, services: int, target: int) -> list[dict[str, float | int | str]]:
    rows: list[dict[str, float | int | str]] = []
    with simulator_process(apps, services, START, retention_days=60) as sim_url, \
            fresh_database(admin) as url, CloudFoundryClient(sim_url, *CLIENT) as client:
        (days, app_events, service_events), generate_s = timed(lambda: grow(sim_url, target))
        print(f"foundation: {apps} apps / {services} service instances, {days} virtual days, "
              f"{app_events} app + {service_events} service events (generated in "
              f"{generate_s:.1f} s by the simulator's process)")
        now = START + timedelta(days=days)
        with connect(url) as conn:
            for stream in STREAMS:
                with timings("_land_page") as per_page, timings("_base_snapshot") as base:
                    landed, land_s = timed(lambda s=stream: land_events(conn, client, s, now))
                (fetched, pages), fetch_s = timed(lambda s=stream: fetch_all(client, s))
                assert fetched == landed.events_read, (fetched, landed)
                pages_s = land_s - sum(base)
                rows.append({"stream": stream.name, "events": landed.events_new,
                             "pages": landed.pages, "total_s": land_s, "base_s": sum(base),
                             "pages_s": pages_s, "events_per_s": landed.events_new / pages_s,
                             "fetch_s": fetch_s, "landing_s": sum(per_page),
                             "overlap_s": fetch_s + sum(per_page) - pages_s})
        keys = ("events", "pages", "total_s", "base_s", "pages_s", "fetch_s", "landing_s",
                "overlap_s")
        total = {key: sum(float(r[key]) for r in rows) for key in keys}
        rows.append({"stream": "both", **{k: int(v) if k in ("events", "pages") else v
                                          for k, v in total.items()},
                     "events_per_s": total["events"] / total["pages_s"]})
        floor_s = copy_floor(url, int(total["events"]))
        rows.append({"stream": f"floor 1: bare COPY ({COLUMNS} cols)",
                     "events": int(total["events"]), "pages_s": floor_s,
                     "events_per_s": total["events"] / floor_s})
        written, indexed_s = indexed_floor(url)
        rows.append({"stream": "floor 2: indexed write", "events": int(total["events"]),
                     "pages_s": indexed_s, "events_per_s": total["events"] / indexed_s,
                     "pages": f"{written} rows"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=100_000,
                        help="apps; service instances are half of them")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="virtual days are added until the streams hold this many events")
    args = parser.parse_args()
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, "
          f"{os.cpu_count()} CPUs")
    rows = bench(admin, args.apps, args.apps // 2, args.events)
    header = ("stream", "events", "pages", "total_s", "base_s", "pages_s", "events_per_s",
              "fetch_s", "landing_s", "overlap_s")
    widths = {"stream": 30}
    print(" | ".join(f"{h:>{widths.get(h, 12)}}" for h in header))
    for r in rows:
        print(" | ".join(f"{r[h]:>{widths.get(h, 12)}.2f}" if isinstance(r.get(h), float)
                         else f"{r.get(h, ''):>{widths.get(h, 12)}}" for h in header))
    both = next(r for r in rows if r["stream"] == "both")
    floor = next(r for r in rows if str(r["stream"]).startswith("floor 2"))
    rate = float(both["events_per_s"])
    print(f"target: {TARGET_EVENTS_PER_S:,} events/s; landed {rate:,.0f} events/s "
          f"({'met' if rate >= TARGET_EVENTS_PER_S else 'NOT met'}); "
          f"{float(both['pages_s']) / float(floor['pages_s']):.1f}x the indexed-write floor")


if __name__ == "__main__":
    main()
