"""Configuration from the environment, read in one place and validated before anything starts.

Nothing here runs at import time: callers pass an environment mapping (``os.environ`` in
production, a dict in tests) and get frozen values back, or a ``ConfigError`` that names every
variable that is wrong and how to fix it.

Database, in order of precedence:

1. ``DATABASE_URL`` (``postgres://`` or ``postgresql://`` URL);
2. libpq variables (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``);
3. a cloud.gov service binding in ``VCAP_SERVICES`` (an ``aws-rds`` instance's ``credentials.uri``);
4. none of these: an embedded PostgreSQL server that the project starts itself under
   ``BILLING_DATA_DIR`` (default ``.billing`` in the working directory).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

PG_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")


class ConfigError(ValueError):
    """Configuration that cannot work; the message names each variable and the fix."""


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the billing schema and Dagster's storage live.

    ``url`` is None for the embedded server, whose socket address is only known once it runs.
    """

    source: str  # "DATABASE_URL", "PG variables", "VCAP_SERVICES" or "embedded"
    url: str | None
    embedded_data_dir: Path | None

    def describe(self) -> str:
        """A one-line description for logs, without the password."""
        if self.url is None:
            return f"embedded PostgreSQL in {self.embedded_data_dir}"
        return f"{redact_password(self.url)} (from {self.source})"


@dataclass(frozen=True)
class CloudFoundrySettings:
    api_url: str
    client_id: str
    client_secret: str


def database_settings(env: Mapping[str, str], cwd: Path) -> DatabaseSettings:
    """Choose the database from the environment; see the module docstring for the order."""
    if env.get("DATABASE_URL"):
        return DatabaseSettings("DATABASE_URL", _checked_url("DATABASE_URL", env["DATABASE_URL"]),
                                None)
    if any(env.get(name) for name in PG_VARIABLES):
        return DatabaseSettings("PG variables", _url_from_pg_variables(env), None)
    if env.get("VCAP_SERVICES"):
        return DatabaseSettings("VCAP_SERVICES", _url_from_vcap(env["VCAP_SERVICES"]), None)
    data_dir = Path(env.get("BILLING_DATA_DIR") or cwd / ".billing")
    if not data_dir.is_absolute():
        data_dir = cwd / data_dir
    return DatabaseSettings("embedded", None, data_dir / "pgdata")


def cloud_foundry_settings(env: Mapping[str, str]) -> CloudFoundrySettings:
    """The CF API and the UAA client that reads it; all three variables or a ConfigError."""
    missing = [n for n in ("CF_API_URL", "CF_CLIENT_ID", "CF_CLIENT_SECRET") if not env.get(n)]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: the Cloud Foundry client needs CF_API_URL (for example "
            "https://api.fr.cloud.gov), CF_CLIENT_ID and CF_CLIENT_SECRET of a UAA client with "
            "cloud_controller.admin_read_only. For local work, `make run` and `make dev` start the "
            "CF simulator and set them for you."
        )
    api_url = env["CF_API_URL"].rstrip("/")
    if urlsplit(api_url).scheme not in ("http", "https"):
        raise ConfigError(f"CF_API_URL={api_url!r} is not an http(s) URL: set it to the API root, "
                          "for example https://api.fr.cloud.gov")
    return CloudFoundrySettings(api_url, env["CF_CLIENT_ID"], env["CF_CLIENT_SECRET"])


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL for dagster-postgres, forced onto psycopg2.

    SQLAlchemy 2.1 picks psycopg 3 for ``postgresql://``, which breaks dagster-postgres's
    ``NOTIFY run_events, :id`` (see docs/dagster.md §5.1).
    """
    parts = urlsplit(url)
    return urlunsplit(("postgresql+psycopg2", *parts[1:]))


def redact_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, *parts[2:]))


def _checked_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"{name} must be a postgresql:// URL, got scheme {parts.scheme!r}: "
                          "for example postgresql://user:password@host:5432/billing")
    return urlunsplit(("postgresql", *parts[1:]))


def _url_from_pg_variables(env: Mapping[str, str]) -> str:
    port = env.get("PGPORT") or "5432"
    if not port.isdigit():
        raise ConfigError(f"PGPORT={port!r} is not a port number: set it to e.g. 5432")
    user = env.get("PGUSER") or "postgres"
    password = env.get("PGPASSWORD")
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    host = env.get("PGHOST") or "127.0.0.1"
    database = env.get("PGDATABASE") or user
    if host.startswith("/"):  # a socket directory goes in the query string
        return f"postgresql://{auth}@/{quote(database, safe='')}?host={quote(host, safe='/')}"
    return f"postgresql://{auth}@{host}:{port}/{quote(database, safe='')}"


def _url_from_vcap(raw: str) -> str:
    try:
        services = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"VCAP_SERVICES is not valid JSON ({exc}): unset it, or set "
                          "DATABASE_URL instead") from exc
    if not isinstance(services, dict):
        raise ConfigError("VCAP_SERVICES must be a JSON object of service lists")
    for label, instances in services.items():
        for instance in instances if isinstance(instances, list) else []:
            credentials = instance.get("credentials") or {}
            uri = credentials.get("uri") or ""
            if uri.startswith(("postgres://", "postgresql://")):
                return _checked_url(f"VCAP_SERVICES[{label!r}].credentials.uri", uri)
    raise ConfigError("VCAP_SERVICES has no binding with a postgres:// credentials.uri: bind an "
                      "aws-rds PostgreSQL instance to the app, or set DATABASE_URL")


def billing_start(env: Mapping[str, str], first_landing: datetime | None,
                  now: datetime) -> date:
    """The first day the UI's partitions cover: BILLING_START (YYYY-MM-DD) if set, else the
    first day of the New York month before the deployment's first landing (CF keeps 31 days of
    usage events, so the first landing reaches into it), else of the month before ``now``."""
    from billing_dagster.partitions import month_before  # partitions imports dagster

    raw = env.get("BILLING_START", "").strip()
    if raw:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise ConfigError(f"BILLING_START={raw!r} is not a date: set it to the first day "
                              "billing covers, as YYYY-MM-DD (e.g. 2025-07-01), or unset it to "
                              "start a month before the first landing") from None
    return month_before(first_landing or now)
