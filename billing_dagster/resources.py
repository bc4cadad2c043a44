"""Dagster resources: the billing database, the Cloud Foundry API and the clock.

Secrets and addresses arrive as ``dg.EnvVar`` values resolved when a run starts; nothing here
reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import dagster as dg
import httpx
import psycopg

from billing_dagster.cf.client import CloudFoundryClient, RetryPolicy
from billing_dagster.database import connect, resolve_url
from billing_dagster.migrate import migrate
from billing_dagster.settings import ConfigError, database_settings, redact_password


@cache
def _migrated_url(url: str) -> str:
    """Apply pending migrations once per process and database."""
    with psycopg.connect(url) as conn:
        migrate(conn)
    return url


def _reachable(url: str, where: str) -> str:
    """The migrated URL, or a ConfigError that says which setting points where, and why not."""
    try:
        return _migrated_url(url)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split()).rstrip(" .?")
        raise ConfigError(
            f"cannot connect to the billing database {redact_password(url)} given by {where}: "
            f"{reason}. Check {where} (host, port, database name and credentials) and that "
            "the server is running; nothing was read or written.") from exc


class BillingDatabase(dg.ConfigurableResource):
    """The Postgres database holding the billing schema.

    With ``url`` unset, the database comes from the environment when a run starts
    (DATABASE_URL, PG* variables, VCAP_SERVICES, else the embedded server; see settings.py).
    Pending migrations are applied before the first connection of a process.
    """

    url: str | None = None

    def connection_url(self) -> str:
        if self.url:
            return _reachable(self.url, "the db resource's url")
        settings = database_settings(os.environ, Path.cwd())
        where = {"DATABASE_URL": "DATABASE_URL", "PG variables": "the PG* variables",
                 "VCAP_SERVICES": "the VCAP_SERVICES binding"}.get(settings.source,
                                                                   "the embedded server")
        return _reachable(resolve_url(settings), where)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with connect(self.connection_url()) as conn:
            yield conn


class CloudFoundryApi(dg.ConfigurableResource):
    """The Cloud Foundry v3 API read as a UAA client (client-credentials grant)."""

    api_url: str
    client_id: str
    client_secret: str
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_wait_seconds: float = 60.0
    per_page: int = 5000

    @contextmanager
    def client(self) -> Iterator[CloudFoundryClient]:
        retry = RetryPolicy(self.max_attempts, self.backoff_seconds, self.max_wait_seconds)
        with CloudFoundryClient(self.api_url, self.client_id, self.client_secret,
                                timeout_seconds=self.timeout_seconds, retry=retry,
                                per_page=self.per_page) as client:
            yield client


class Clock(dg.ConfigurableResource):
    """Where "now" comes from: the system's UTC time in production; the CF simulator's virtual
    time (``simulator_url``) in the demo and tests, so they can run whole days in seconds."""

    simulator_url: str | None = None

    def now(self) -> datetime:
        if self.simulator_url is None:
            return datetime.now(UTC)
        response = httpx.get(self.simulator_url.rstrip("/") + "/_sim/clock", timeout=10)
        response.raise_for_status()
        return datetime.fromisoformat(response.json()["now"]).astimezone(UTC)
