"""Dagster resources: the billing database, the Cloud Foundry API, AWS and the clock.

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

from billing_dagster.aws.client import (
    DEFAULT_REGION,
    AwsClients,
    AwsSettings,
    aws_credentials_from_vcap,
)
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


class AwsApi(dg.ConfigurableResource):
    """The foundation's AWS account, read-only, for the metered services (RDS, OpenSearch, S3,
    SES, CloudWatch).

    Unset fields come, when a run starts, from the standard AWS variables (AWS_REGION,
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or a bound
    ``billing-aws`` user-provided service (VCAP_SERVICES), else boto3's own chain (a role).
    Throttling and 5xx replies are retried up to ``max_attempts`` calls in all; every call is
    bounded by the two timeouts.
    """

    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    max_attempts: int = 6
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0

    def settings(self) -> AwsSettings:
        env = os.environ
        bound = aws_credentials_from_vcap(env.get("VCAP_SERVICES"))
        return AwsSettings(
            region=(self.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                    or bound.get("region") or DEFAULT_REGION),
            endpoint_url=self.endpoint_url or env.get("AWS_ENDPOINT_URL") or None,
            access_key_id=self.access_key_id or bound.get("aws_access_key_id"),
            secret_access_key=self.secret_access_key or bound.get("aws_secret_access_key"),
            max_attempts=self.max_attempts,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds)

    def clients(self) -> AwsClients:
        return AwsClients(self.settings())


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
