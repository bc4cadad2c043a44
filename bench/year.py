"""`make bench`: a quarter of a 20k-app foundation, landed, derived and priced month by month,
and what a year of it would hold (issue 12's year target, extrapolated from the quarter).

The simulator serves a 20,000-app / 10,000-instance foundation from a process of its own.
Its usage events are landed day by day over three business months (America/New_York), the
first landing taking the base snapshot, and a snapshot is taken every day at noon (UTC), as the
hourly schedule would take one every hour: a snapshot stores only what changed. After each
month is landed:

- one hour: the month's first hour derived and priced alone (derive_window + price_window, the
  SQL the hourly run executes), then
- the month: all its hours derived and priced in one window (the SQL a single-run backfill of
  the month executes).

At the end: rows and bytes of every billing table (with its indexes and TOAST; the
partitioned ones by month) and, per table, what a year would hold at the quarter's rate. The
target compares the quarter's last month with its first (the year's end with its start is the
same comparison, nine months further: the monthly partitions keep each month's hours apart,
and the tables that are not partitioned are looked up by key, not scanned).
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, date, datetime, time, timedelta

import httpx
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.snapshot import (
    admin_url,
    fresh_database,
    move_clock,
    print_results,
    simulator_process,
    timed,
)
from billing_dagster.business_time import BUSINESS_TIME
from billing_dagster.catalog.loading import load_catalog
from billing_dagster.catalog.reading import EXAMPLE_CATALOG, read_catalog
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect
from billing_dagster.meters import METERS, STREAMS
from billing_dagster.pricing.postings import price_window
from billing_dagster.usage.events import land_events
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

FIRST_MONTH = date(2025, 2, 1)
TARGET_END_TO_START = 1.5  # issue 12: a year's end within 1.5x of its start
SIZES_SQL = """
SELECT coalesce(parent.relname, c.relname) AS table_name,
       CASE WHEN parent.relname IS NOT NULL THEN right(c.relname, 7) END AS month,
       c.reltuples::bigint AS estimated_rows,
       pg_total_relation_size(c.oid) AS bytes
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'billing'
  LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
  LEFT JOIN pg_class parent ON parent.oid = i.inhparent
 WHERE c.relkind = 'r'
 ORDER BY 1, 2
"""


def month_bounds(first: date, n: int) -> list[tuple[datetime, datetime]]:
    """The UTC bounds of ``n`` business months (America/New_York) from ``first``."""
    starts = [date(first.year + (first.month - 1 + k) // 12, (first.month - 1 + k) % 12 + 1, 1)
              for k in range(n + 1)]
    instants = [datetime.combine(d, time(), BUSINESS_TIME).astimezone(UTC) for d in starts]
    return list(zip(instants[:-1], instants[1:], strict=True))


def land_month(conn: psycopg.Connection, client: CloudFoundryClient, sim: httpx.Client,
               start: datetime, end: datetime) -> tuple[int, int]:
    """Events landed day by day over [start, end) (and a few minutes past it), a snapshot each
    day at noon: (events, snapshot observations stored)."""
    events = stored = 0
    day = start
    while day < end:
        noon = day.replace(hour=12, minute=0, second=0)  # a business day begins 04:00 or 05:00
        if noon < end:
            now = move_clock(sim, noon)
            before = count_observations(conn)
            land_snapshot(conn, take_snapshot(client, METERS, now))
            stored += count_observations(conn) - before
        day = min(day + timedelta(days=1), end)
        now = move_clock(sim, day + timedelta(minutes=5))
        for stream in STREAMS:
            events += land_events(conn, client, stream, now).events_new
    return events, stored


def count_observations(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM billing.observation").fetchone()
    return row[0] if row else 0


def derive_and_price(conn: psycopg.Connection, start: datetime, end: datetime
                     ) -> tuple[int, int, float]:
    """(measurements, postings, seconds) of derive_window + price_window over [start, end)."""
    (derived, priced), seconds = timed(
        lambda: (derive_window(conn, start, end), price_window(conn, start, end)))
    return derived.rows, priced.rows, seconds


def bench(admin: str, apps: int, services: int, months: int, keep: bool) -> None:
    bounds = month_bounds(FIRST_MONTH, months)
    first_start = bounds[0][0]
    results: list[dict[str, float | int | str]] = []
    with fresh_database(admin, keep=keep) as url, \
            simulator_process(apps, services, first_start - timedelta(hours=1)) as sim_url, \
            httpx.Client(base_url=sim_url, timeout=600) as sim, \
            CloudFoundryClient(sim_url, "billing", "billing-secret") as client, \
            connect(url) as conn:
        load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
        move_clock(sim, first_start - timedelta(minutes=55))
        for stream in STREAMS:  # the base snapshot, just before the quarter
            land_events(conn, client, stream, first_start - timedelta(minutes=55))
        for start, end in bounds:
            (events, stored), land_s = timed(lambda s=start, e=end: land_month(
                conn, client, sim, s, e))
            conn.execute("VACUUM ANALYZE")
            hour_rows, _, hour_s = derive_and_price(conn, start, start + timedelta(hours=1))
            rows, postings, month_s = derive_and_price(conn, start, end)
            label = f"{start.astimezone(BUSINESS_TIME):%Y-%m}"
            results.append({"month": label, "hours": int((end - start).total_seconds()) // 3600,
                            "events": events, "snapshot_obs": stored, "land_s": land_s,
                            "hour_rows": hour_rows, "hour_s": hour_s, "measurements": rows,
                            "postings": postings, "month_s": month_s})
            print(f"{label}: {events} events and {stored} snapshot observations landed in "
                  f"{land_s:.0f} s; one hour {hour_s:.2f} s ({hour_rows} measurements); "
                  f"the month {month_s:.1f} s ({rows} measurements, {postings} postings)",
                  flush=True)
        conn.execute("VACUUM ANALYZE")
        sizes = conn.execute(SIZES_SQL).fetchall()

    header = ("month", "hours", "events", "snapshot_obs", "land_s", "hour_rows", "hour_s",
              "measurements", "postings", "month_s")
    print_results(header, results)

    print_sizes(sizes, months)
    first, last = results[0], results[-1]
    for what in ("hour_s", "month_s"):
        # a month's time per hour, so that months of 672 and 743 hours compare
        a, b = (float(first[what]), float(last[what])) if what == "hour_s" else (
            float(first[what]) / int(first["hours"]), float(last[what]) / int(last["hours"]))
        ratio = b / a
        print(f"target: {what[:-2]} derived and priced at the end within "
              f"{TARGET_END_TO_START}x of the start: {last['month']} against {first['month']}: "
              f"{ratio:.2f}x ({'met' if ratio <= TARGET_END_TO_START else 'NOT met'})"
              + (" (per hour of the month)" if what == "month_s" else ""))


def print_sizes(sizes: list[tuple[str, str | None, int, int]], months: int) -> None:
    """Rows and bytes per table (partitioned ones summed, with their largest month) and a
    year at the quarter's rate for the tables that grow with time."""
    totals: dict[str, list[int]] = {}
    largest_month: dict[str, int] = {}
    for table, month, rows, size in sizes:
        t = totals.setdefault(table, [0, 0])
        t[0] += max(rows, 0)
        t[1] += size
        if month is not None:
            largest_month[table] = max(largest_month.get(table, 0), size)
    print(f"{'table':<24} | {'rows':>12} | {'MiB':>9} | {'a year (MiB)':>12} | largest month MiB")
    for table, (rows, size) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        if size < 1 << 20:
            continue  # catalog and bookkeeping tables: under a MiB
        year = size * 12 / months
        print(f"{table:<24} | {rows:>12} | {size / 2**20:>9.1f} | {year / 2**20:>12.0f} | "
              + (f"{largest_month[table] / 2**20:.1f}" if table in largest_month else ""))
    whole = sum(size for _, size in totals.values())
    print(f"{'all billing tables':<24} | {'':>12} | {whole / 2**20:>9.1f} | "
          f"{whole * 12 / months / 2**20:>12.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.year", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=20_000,
                        help="apps; service instances are half of them")
    parser.add_argument("--months", type=int, default=3, help="business months landed")
    parser.add_argument("--keep-database", action="store_true",
                        help="leave the database for a look at what was written")
    args = parser.parse_args()
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, {os.cpu_count()} CPUs; "
          f"{args.apps} apps / {args.apps // 2} service instances, {args.months} months from "
          f"{FIRST_MONTH:%Y-%m}")
    bench(admin, args.apps, args.apps // 2, args.months, args.keep_database)


if __name__ == "__main__":
    main()
