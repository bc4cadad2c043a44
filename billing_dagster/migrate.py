"""Apply the numbered plain-SQL migrations in ``sql/migrations/``.

Each file ``NNNN_description.sql`` runs once, in its own transaction, in number order, and is
recorded in ``billing.schema_migration`` with the SHA-256 of its text. A session-level advisory
lock makes concurrent runners (webserver, daemon, tests) wait for each other instead of racing.
A file that changed after it was applied is refused: write a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString, cast

import psycopg

from billing_dagster.sql import SQL_DIR

log = logging.getLogger(__name__)

MIGRATIONS_DIR = SQL_DIR / "migrations"
# Any fixed 64-bit number; it only has to differ from other advisory locks on the server.
ADVISORY_LOCK_KEY = 0x62696C6C696E67  # "billing"
_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration cannot be applied; the message names the file and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_words.sql")
        migrations.append(Migration(int(match["version"]), match["name"], path, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations in {directory} share a number: {versions}")
    return migrations


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply what is pending; return the migrations applied now (empty when up to date)."""
    migrations = discover(directory)
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        conn.execute("CREATE SCHEMA IF NOT EXISTS billing")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS billing.schema_migration (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = conn.execute("SELECT version, name, checksum FROM billing.schema_migration")
        applied = {version: (name, checksum) for version, name, checksum in rows.fetchall()}
        known = {m.version for m in migrations}
        for version, (name, _) in sorted(applied.items()):
            if version not in known:
                raise MigrationError(
                    f"migration {version:04d}_{name}.sql is recorded as applied but its file is "
                    f"missing from {directory}: restore it (migrations are never removed)")
        done = []
        for migration in migrations:
            if migration.version in applied:
                _, checksum = applied[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} changed after it was applied (checksum "
                        f"{checksum[:12]} recorded, {migration.checksum[:12]} now): restore the "
                        "applied text and put the change in a new migration file")
                continue
            with conn.transaction():
                conn.execute(cast(LiteralString, migration.sql))
                conn.execute(
                    "INSERT INTO billing.schema_migration (version, name, checksum) "
                    "VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            log.info("applied migration %s", migration.path.name)
            done.append(migration)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
