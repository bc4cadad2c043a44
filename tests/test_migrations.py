import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from billing_dagster.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate


def applied_versions(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, checksum FROM billing.schema_migration ORDER BY version").fetchall()


def test_migrations_apply_on_an_empty_database_then_are_a_no_op(empty_database_url):
    with psycopg.connect(empty_database_url) as conn:
        first = migrate(conn)
    with psycopg.connect(empty_database_url) as conn:
        second = migrate(conn)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert second == []
    assert applied_versions(empty_database_url) == [(m.version, m.checksum) for m in discover()]


def test_a_changed_migration_is_refused_with_its_file_named(empty_database_url, tmp_path: Path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    with psycopg.connect(empty_database_url) as conn:
        migrate(conn, copy)
    changed = copy / "0001_reference_data.sql"
    changed.write_text(changed.read_text() + "\n-- an edit after the fact\n")
    with psycopg.connect(empty_database_url) as conn, pytest.raises(MigrationError) as error:
        migrate(conn, copy)
    assert "0001_reference_data.sql changed after it was applied" in str(error.value)
    assert "new migration" in str(error.value)


def test_a_failing_migration_leaves_nothing_half_applied(empty_database_url, tmp_path: Path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    (copy / "0999_broken.sql").write_text(
        "CREATE TABLE billing.half_done (x int);\nSELECT no_such_function();\n")
    with psycopg.connect(empty_database_url) as conn, pytest.raises(psycopg.Error):
        migrate(conn, copy)
    with psycopg.connect(empty_database_url) as conn:
        exists = conn.execute("SELECT to_regclass('billing.half_done')").fetchone()
    assert exists == (None,)
    assert 999 not in [v for v, _ in applied_versions(empty_database_url)]


def test_concurrent_runners_apply_each_migration_once(empty_database_url):
    errors: list[BaseException] = []
    applied: list[int] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_database_url) as conn:
                applied.extend(m.version for m in migrate(conn))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(applied) == [m.version for m in discover()]


def test_migration_file_names_are_checked(tmp_path: Path):
    (tmp_path / "1_bad name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_words.sql"):
        discover(tmp_path)
