"""The embedded default: no PG* variables, no DATABASE_URL, and the project still runs."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from billing_dagster.database import connect, resolve_url, stop_embedded
from billing_dagster.meters import MeterSnapshot, ObservedResource
from billing_dagster.migrate import discover, migrate
from billing_dagster.settings import database_settings
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import Inventory, Snapshot, land_snapshot

pytestmark = pytest.mark.embedded


def test_with_no_database_configured_the_embedded_server_runs_the_schema(tmp_path):
    settings = database_settings({}, tmp_path)  # an environment with no PG*/DATABASE_URL
    assert settings.source == "embedded"
    url = resolve_url(settings)
    try:
        with psycopg.connect(url) as conn:
            assert [m.version for m in migrate(conn)] == [m.version for m in discover()]
            version = conn.execute("SHOW server_version_num").fetchone()
            assert version is not None and int(version[0]) >= 180000
        hour = datetime(2025, 3, 3, 10, tzinfo=UTC)
        with connect(url) as conn:
            for at in (hour - timedelta(minutes=1), hour + timedelta(minutes=30)):
                land_snapshot(conn, Snapshot(at, Inventory([("o", "org")], [("s", "o", "sp")]), [
                    MeterSnapshot("cfapps", [ObservedResource("p", "a/web", "s", "app-memory",
                                                              256)], [], complete=True)]))
            derived = derive_window(conn, hour, hour + timedelta(hours=1))
        assert {t.meter: t.unit_seconds for t in derived.totals}["cfapps"] == 256 * 3600
    finally:
        assert settings.embedded_data_dir is not None
        assert stop_embedded(settings.embedded_data_dir)
