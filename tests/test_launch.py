"""`make run` as a new user runs it: no PG*/DATABASE_URL/CF_* variables, a fresh data dir."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from billing_dagster.database import stop_embedded

pytestmark = pytest.mark.embedded
REPO = Path(__file__).resolve().parent.parent


def test_the_demo_runs_on_the_embedded_defaults(tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "CF_", "DAGSTER_", "BILLING_")) and k != "DATABASE_URL"}
    env["BILLING_DATA_DIR"] = str(tmp_path / "data")
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    env["BILLING_STATEMENTS_DIR"] = str(tmp_path / "statements")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "billing_dagster.launch", "run",
             "--apps", "30", "--service-instances", "12"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        stop_embedded(tmp_path / "data" / "pgdata")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Backfilled 168 hours in one run" in out and "hours flagged: 0" in out
    assert "Posted business month" in out
    assert list((tmp_path / "statements").glob("*/*.csv"))
    charged = [line for line in out.splitlines() if line.endswith("credits)")]
    assert charged and all(int(line.split()[1].replace(",", "")) > 0 for line in charged)
    assert "| customer | tier | credits left |" in out
    assert "Unknown resource kinds" in out
    assert "database: embedded PostgreSQL" in result.stderr
