"""Shared fixtures: a fresh Postgres database per test (copied from a migrated template made
once per session on the local server), the CF simulator over real HTTP, and a webhook that
keeps the alerts posted to it."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from billing_dagster.aws.embedded import EmbeddedAws
from billing_dagster.database import connect, start_embedded, stop_embedded
from billing_dagster.migrate import migrate
from billing_dagster.simulator import Foundation, Simulator
from tests.support import SIM_CLIENT, SIM_START

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RUN_TAG = uuid.uuid4().hex[:8]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the embedded server (the second run of `make test`), run again only the tests whose
    databases come from ``admin_url``: the others (the simulator, the clients, the processes
    started against a server of their own) would repeat the first run to the letter; so would
    those marked ``once``, whose SQL the others run too."""
    if os.environ.get("BILLING_TEST_DATABASE") != "embedded":
        return
    on_server, repeated = [], []
    for item in items:
        again = "admin_url" in getattr(item, "fixturenames", ()) and \
            item.get_closest_marker("once") is None
        (on_server if again else repeated).append(item)
    if repeated:
        config.hook.pytest_deselected(items=repeated)
        items[:] = on_server


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server the tests create their databases on.

    BILLING_TEST_DATABASE=embedded runs the suite on the embedded PostgreSQL 18 server (started
    for the session); otherwise BILLING_TEST_ADMIN_URL, by default the local PostgreSQL 15.
    """
    if os.environ.get("BILLING_TEST_DATABASE") == "embedded":
        data_dir = tmp_path_factory.mktemp("embedded") / "pgdata"
        try:
            yield start_embedded(data_dir)
        finally:
            stop_embedded(data_dir)
    else:
        yield os.environ.get("BILLING_TEST_ADMIN_URL", LOCAL_ADMIN_URL)


def database_url(admin_url: str, name: str) -> str:
    return make_conninfo(admin_url, dbname=name)


def _admin(admin_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def _drop(admin_url: str, name: str) -> None:
    _admin(admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_database(admin_url: str) -> Iterator[str]:
    """A database with every migration applied, copied for each test; dropped at the end."""
    name = f"billing_test_template_{RUN_TAG}"
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(database_url(admin_url, name)) as conn:
            migrate(conn)
        yield name
    finally:
        _drop(admin_url, name)


@pytest.fixture
def empty_database_url(admin_url: str) -> Iterator[str]:
    """A database with nothing in it, for migration tests."""
    name = f"billing_test_empty_{RUN_TAG}_{uuid.uuid4().hex[:8]}"
    _admin(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(admin_url, name)
    finally:
        _drop(admin_url, name)


@contextmanager
def fresh_database(admin_url: str, template_database: str) -> Iterator[str]:
    """A copy of the migrated template, dropped on leaving the block."""
    name = f"billing_test_{RUN_TAG}_{uuid.uuid4().hex[:8]}"
    _admin(admin_url, sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template_database)))
    try:
        yield database_url(admin_url, name)
    finally:
        _drop(admin_url, name)


@pytest.fixture
def db_url(admin_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with fresh_database(admin_url, template_database) as url:
        yield url


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A small simulated foundation served over HTTP on loopback, virtual time at SIM_START."""
    foundation = Foundation(seed=3, apps=40, service_instances=25, start=SIM_START)
    with Simulator(foundation, client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1]) as sim:
        yield sim


@pytest.fixture(scope="session")
def embedded_aws() -> Iterator[EmbeddedAws]:
    """moto's server on loopback, one per test session (it is reset by the ``aws`` fixture)."""
    with EmbeddedAws() as server:
        yield server


@pytest.fixture
def aws(embedded_aws: EmbeddedAws) -> EmbeddedAws:
    """The embedded AWS, empty."""
    embedded_aws.reset()
    return embedded_aws


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """A real HTTP server on loopback that keeps every JSON payload posted to it."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - its name
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("BILLING_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/")
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
