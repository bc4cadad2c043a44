"""`make bench`: one hour of a simulated foundation fetched, landed and derived, beside the
floor of a bare COPY of the same rows, measured in the same run.

Sizes: 10k apps / 5k service instances and 100k apps / 50k service instances. The database is
a fresh one on BENCH_ADMIN_URL (default: the local PostgreSQL on 127.0.0.1:5432, else the
embedded server), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect, resolve_url
from billing_dagster.meters import METERS
from billing_dagster.migrate import migrate
from billing_dagster.settings import database_settings
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

T = TypeVar("T")
HOUR = datetime(2025, 3, 3, 10, tzinfo=UTC)


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
def fresh_database(admin: str) -> Iterator[str]:
    """A new, migrated database on the admin server; dropped on the way out."""
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(admin, dbname=name)
    try:
        with psycopg.connect(url) as conn:
            migrate(conn)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def bench_size(admin: str, apps: int, services: int) -> dict[str, float | int]:
    with fresh_database(admin) as url:
        foundation, generate_s = timed(lambda: Foundation(seed=11, apps=apps,
                                                          service_instances=services,
                                                          start=HOUR - timedelta(hours=1)))
        with Simulator(foundation) as sim, \
                CloudFoundryClient(sim.url, "billing", "billing-secret") as client, \
                connect(url) as conn:
            # the state before the hour, then the snapshot that is measured, inside the hour
            sim.advance_to(HOUR - timedelta(minutes=59))
            land_snapshot(conn, take_snapshot(client, METERS, foundation.now))
            sim.advance_to(HOUR + timedelta(minutes=1))
            snapshot, fetch_s = timed(lambda: take_snapshot(client, METERS, foundation.now))
            landed, land_s = timed(lambda: land_snapshot(conn, snapshot))
            derived, derive_s = timed(lambda: derive_window(conn, HOUR,
                                                            HOUR + timedelta(hours=1)))
            rows = sum(landed.resources.values())
            floor_s = copy_floor(conn, rows)
        return {"apps": apps, "services": services, "generate_s": generate_s,
                "observations": rows, "fetch_s": fetch_s, "land_s": land_s,
                "derive_s": derive_s, "measurements": derived.rows, "copy_floor_s": floor_s}


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000",
                        help="app counts; service instances are half of each")
    args = parser.parse_args()
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, "
          f"{os.cpu_count()} CPUs")
    results = [bench_size(admin, n, n // 2) for n in map(int, args.sizes.split(","))]
    header = ("apps", "services", "observations", "generate_s", "fetch_s", "land_s",
              "copy_floor_s", "derive_s", "measurements")
    print(" | ".join(f"{h:>12}" for h in header))
    for r in results:
        print(" | ".join(f"{r[h]:>12.2f}" if isinstance(r[h], float) else f"{r[h]:>12}"
                         for h in header))


if __name__ == "__main__":
    main()
