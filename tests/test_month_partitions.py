"""Measurements and priced postings live in partitions by business month (America/New_York,
migration 0016): the writers create the months they need and the next one, a row for a month
without a partition is refused, and the migration carries the rows written before it."""

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from billing_dagster.database import connect, ensure_month_partitions
from billing_dagster.meters import MeterSnapshot, ObservedResource
from billing_dagster.migrate import MIGRATIONS_DIR, migrate
from billing_dagster.pricing.postings import price_window
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import Inventory, Snapshot, land_snapshot

INVENTORY = Inventory(orgs=[("org-1", "agency-org")], spaces=[("space-1", "org-1", "prod")])
MARCH_END = datetime(2025, 4, 1, 4, tzinfo=UTC)  # midnight in New York: the business month


def partitions(conn, parent: str) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY c.relname", (f"billing.{parent}",))]


def land_app(conn, at: datetime, mib: int) -> None:
    land_snapshot(conn, Snapshot(at, INVENTORY, [
        MeterSnapshot("cfapps", [ObservedResource("a", "a/web", "space-1", "app-memory", mib)],
                      [], complete=True)]))


def test_a_window_across_a_month_end_writes_each_hour_into_its_months_partition(conn):
    land_app(conn, MARCH_END - timedelta(hours=3), 256)
    derive_window(conn, MARCH_END - timedelta(hours=2), MARCH_END + timedelta(hours=2))
    price_window(conn, MARCH_END - timedelta(hours=2), MARCH_END + timedelta(hours=2))
    for parent in ("hourly_measurement", "hourly_posting"):
        # March and April for the window, May ahead of time
        assert {"2025_03", "2025_04", "2025_05"} <= {p[-7:] for p in partitions(conn, parent)}
        placed = conn.execute(sql.SQL(
            "SELECT hour_start, tableoid::regclass::text FROM billing.{} ORDER BY hour_start"
        ).format(sql.Identifier(parent))).fetchall()
        assert placed == [
            (MARCH_END - timedelta(hours=2), f"{parent}_2025_03"),
            (MARCH_END - timedelta(hours=1), f"{parent}_2025_03"),
            (MARCH_END, f"{parent}_2025_04"),
            (MARCH_END + timedelta(hours=1), f"{parent}_2025_04")]
    # asked again, nothing is missing
    assert ensure_month_partitions(conn, MARCH_END, MARCH_END + timedelta(hours=2)) == []


def test_a_month_without_a_partition_is_refused_not_put_aside(conn):
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        conn.execute("INSERT INTO billing.hourly_measurement (hour_start, resource_id, "
                     "resource_kind_id, value) VALUES ('1999-01-01T00:00Z', 1, 1, 1)")


def test_the_month_ahead_is_given_up_while_a_long_transaction_reads_the_table(
        conn, db_url, caplog):
    ensure_month_partitions(conn, MARCH_END, MARCH_END + timedelta(hours=1))  # April, May
    with connect(db_url) as reader, reader.transaction():
        reader.execute("SELECT count(*) FROM billing.hourly_measurement").fetchone()
        with caplog.at_level(logging.WARNING, logger="billing_dagster.database"):
            # April exists; June (ahead of a window ending in May) would wait for the reader
            created = ensure_month_partitions(
                conn, datetime(2025, 5, 31, 23, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC),
                ahead_lock_timeout="200ms")
    assert created == []
    assert "not created ahead" in caplog.text
    assert ensure_month_partitions(conn, datetime(2025, 5, 31, 23, tzinfo=UTC),
                                   datetime(2025, 6, 1, tzinfo=UTC)) == [
        "hourly_measurement_2025_06", "hourly_posting_2025_06"]


def test_the_migration_carries_the_rows_written_before_it(empty_database_url, tmp_path: Path):
    before = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, before)
    for later in before.glob("*.sql"):
        if int(later.name[:4]) >= 16:
            later.unlink()
    # 04:00 UTC on March 1 is 23:00 on February 28 in New York; 05:00 is March's first hour
    rows = [(datetime(2025, 3, 1, 4, tzinfo=UTC), 1, 1, 3600, False),
            (datetime(2025, 3, 1, 5, tzinfo=UTC), 1, 1, 7200, True),
            (datetime(2025, 3, 1, 5, tzinfo=UTC), 2, 1, 60, False)]
    postings = [(datetime(2025, 3, 1, 4, tzinfo=UTC), "org-1", "space-1", "c-1", 1, 7, 1000,
                 3600, 3600, 1000, 1),
                (datetime(2025, 3, 1, 5, tzinfo=UTC), None, None, None, 1, None, None, None,
                 7260, None, 2)]
    with psycopg.connect(empty_database_url) as conn:
        migrate(conn, before)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO billing.hourly_measurement VALUES (%s, %s, %s, %s, %s)",
                            rows)
            cur.executemany("INSERT INTO billing.hourly_posting VALUES "
                            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", postings)
        conn.commit()
        applied = migrate(conn)
        assert [m.version for m in applied] == [m for m in range(16, 16 + len(applied))]
        assert conn.execute("SELECT * FROM billing.hourly_measurement ORDER BY 1, 2").fetchall() \
            == rows
        assert conn.execute("SELECT * FROM billing.hourly_posting ORDER BY 1").fetchall() \
            == postings
        assert conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM billing.hourly_measurement "
            "ORDER BY 1").fetchall() == [("billing.hourly_measurement_2025_02",),
                                         ("billing.hourly_measurement_2025_03",)]
