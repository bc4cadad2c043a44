"""`make bench`: one hour of a simulated foundation fetched, landed, derived and priced, beside
the floor of a bare COPY of the same rows, measured in the same run.

Sizes: 10k apps / 5k service instances and 100k apps / 50k service instances, each served by
the simulator from a process of its own (the bench times the client). The hour's snapshot is
taken a minute into the hour, after one taken a minute into the hour before; the example
catalog prices it. The database is a fresh one on BENCH_ADMIN_URL (default: the local
PostgreSQL on 127.0.0.1:5432, else the embedded server), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from billing_dagster.catalog.loading import load_catalog
from billing_dagster.catalog.reading import EXAMPLE_CATALOG, read_catalog
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect, resolve_url
from billing_dagster.meters import METERS
from billing_dagster.migrate import migrate
from billing_dagster.pricing.postings import price_window
from billing_dagster.settings import database_settings
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

T = TypeVar("T")
HOUR = datetime(2025, 3, 3, 10, tzinfo=UTC)
TARGET_HOUR_S = 10.0  # issue 12


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def admin_url() -> str:
    if os.environ.get("BENCH_ADMIN_URL"):
        return os.environ["BENCH_ADMIN_URL"]
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(local, connect_timeout=2).close()
        return local
    except psycopg.OperationalError:
        return resolve_url(database_settings({}, Path.cwd()))


@contextmanager
def fresh_database(admin: str, *, keep: bool = False) -> Iterator[str]:
    """A new, migrated database on the admin server; dropped on the way out (unless ``keep``:
    then its name is printed, for a look at what the bench wrote)."""
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin, dbname=name)
    try:
        with psycopg.connect(url) as conn:
            migrate(conn)
        yield url
    finally:
        if keep:
            print(f"database {name} kept", flush=True)
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


@contextmanager
def simulator_process(apps: int, services: int, start: datetime, *,
                      retention_days: int = 31) -> Iterator[str]:
    """The simulator serving a fresh foundation (seed 11) from a process of its own, so that
    a bench times the client and not the server; its URL. Its virtual clock is moved with
    ``POST /_sim/clock``."""
    command = [sys.executable, "-m", "billing_dagster.simulator", "--port", "0", "--seed", "11",
               "--apps", str(apps), "--service-instances", str(services),
               "--start", start.isoformat(), "--retention-days", str(retention_days),
               "--client-id", "billing", "--client-secret", "billing-secret"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.search(r"listening on (\S+)", line)
            if found:
                yield found.group(1)
                return
        raise RuntimeError(f"the simulator exited ({process.wait()}) before listening")
    finally:
        process.terminate()
        process.wait(timeout=30)


def move_clock(sim: httpx.Client, moment: datetime) -> datetime:
    """The simulator process's virtual clock moved on to ``moment`` (an error if it refused)."""
    sim.post("/_sim/clock", json={"now": moment.isoformat()}).raise_for_status()
    return moment


def bench_size(admin: str, apps: int, services: int) -> dict[str, float | int]:
    with fresh_database(admin) as url, \
            simulator_process(apps, services, HOUR - timedelta(hours=1)) as sim_url, \
            httpx.Client(base_url=sim_url, timeout=600) as sim, \
            CloudFoundryClient(sim_url, "billing", "billing-secret") as client, \
            connect(url) as conn:
        load_catalog(conn, read_catalog(EXAMPLE_CATALOG))

        # the state before the hour, then the snapshot that is measured, inside the hour
        before = move_clock(sim, HOUR - timedelta(minutes=59))
        land_snapshot(conn, take_snapshot(client, METERS, before))
        now = move_clock(sim, HOUR + timedelta(minutes=1))
        cpu_before = time.process_time()
        snapshot, fetch_s = timed(lambda: take_snapshot(client, METERS, now))
        fetch_cpu_s = time.process_time() - cpu_before  # the client's own share of fetch_s
        landed, land_s = timed(lambda: land_snapshot(conn, snapshot))
        derived, derive_s = timed(lambda: derive_window(conn, HOUR, HOUR + timedelta(hours=1)))
        priced, price_s = timed(lambda: price_window(conn, HOUR, HOUR + timedelta(hours=1)))
        rows = sum(landed.resources.values())
        floor_s = copy_floor(conn, rows)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"apps": apps, "services": services, "observations": rows, "fetch_s": fetch_s,
            "fetch_cpu_s": fetch_cpu_s,
            "land_s": land_s, "derive_s": derive_s, "price_s": price_s,
            "hour_s": fetch_s + land_s + derive_s + price_s, "copy_floor_s": floor_s,
            "measurements": derived.rows, "postings": priced.rows, "peak_rss_mib": peak_mib}


def copy_floor(conn: psycopg.Connection, rows: int) -> float:
    """COPY as many observation-shaped rows into a bare table: the least landing can cost."""
    conn.execute("CREATE TEMP TABLE copy_floor (resource_id bigint, observed_at timestamptz, "
                 "reading_id bigint, resource_kind_id bigint, rate bigint)")
    return time_copy(conn, [(i, HOUR, 1, 1, 512) for i in range(rows)])


def time_copy(conn: psycopg.Connection, data: list[tuple]) -> float:
    """Seconds to COPY `data` into the table copy_floor and commit."""
    def copy() -> None:
        with conn.cursor() as cur, cur.copy("COPY copy_floor FROM STDIN") as target:
            for row in data:
                target.write_row(row)
        conn.commit()

    return timed(copy)[1]


def print_results(header: tuple[str, ...],
                  results: Sequence[Mapping[str, float | int | str]]) -> None:
    """One row per result, in the columns of ``header`` (floats to two places)."""
    print(" | ".join(f"{h:>12}" for h in header))
    for r in results:
        print(" | ".join(f"{r[h]:>12.2f}" if isinstance(r[h], float) else f"{r[h]:>12}"
                         for h in header))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000",
                        help="app counts; service instances are half of each")
    args = parser.parse_args()
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, "
          f"{os.cpu_count()} CPUs")
    results = [bench_size(admin, n, n // 2) for n in map(int, args.sizes.split(","))]
    header = ("apps", "services", "observations", "fetch_s", "fetch_cpu_s", "land_s",
              "copy_floor_s",
              "derive_s", "price_s", "hour_s", "measurements", "postings", "peak_rss_mib")
    print_results(header, results)
    largest = results[-1]
    client_s = (largest["fetch_cpu_s"] + largest["land_s"] + largest["derive_s"]
                + largest["price_s"])
    print(f"target: one hour of a 100k-app foundation (fetch + land + derive + price) <= "
          f"{TARGET_HOUR_S:.0f} s; {largest['apps']} apps: {largest['hour_s']:.1f} s "
          f"({'met' if largest['hour_s'] <= TARGET_HOUR_S else 'NOT met'}), of which the "
          f"client's own: {client_s:.1f} s (fetch_cpu_s: this process's CPU while fetching; "
          f"the rest of fetch_s is the simulator serving). Landing "
          f"{largest['land_s'] / largest['copy_floor_s']:.1f}x its COPY floor. peak_rss_mib: "
          "this process's peak resident memory so far (the simulator runs in its own).")


if __name__ == "__main__":
    main()
