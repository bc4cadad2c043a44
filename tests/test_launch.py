"""`make run` as a new user runs it: no PG*/DATABASE_URL/CF_* variables, a fresh data dir."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
    assert "| customer | tier today | credits left |" in out
    assert "Agreements, burn rate and runway" in out and "IAA-EPA-FY27" in out
    assert "Unknown resource kinds" in out
    assert "database: embedded PostgreSQL" in result.stderr


def test_make_dev_serves_the_ui_with_schedules_and_sensors_running(tmp_path: Path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "CF_", "DAGSTER_", "BILLING_")) and k != "DATABASE_URL"}
    env.update({"BILLING_DATA_DIR": str(tmp_path / "data"),
                "DAGSTER_HOME": str(tmp_path / "dagster_home")})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "dev.log"
    with log.open("w") as output, subprocess.Popen(
            [sys.executable, "-m", "billing_dagster.launch", "dev", "--port", str(port)],
            cwd=REPO, env=env, start_new_session=True, stdout=output,
            stderr=subprocess.STDOUT) as dev:
        try:
            states = _wait_for_states(f"http://127.0.0.1:{port}/graphql", dev, log)
        finally:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait()
            stop_embedded(tmp_path / "data" / "pgdata")
    assert states["landing_schedule"] == states["ledger_schedule"] == "RUNNING"
    for sensor in ("catalog_file_sensor", "metering_after_landing_sensor", "repricing_sensor",
                   "reposting_sensor", "unknown_kinds_sensor", "billing_automation"):
        assert states[sensor] == "RUNNING"
    assert dev.returncode is not None  # it stopped on SIGTERM


def _wait_for_states(url: str, dev: subprocess.Popen, log: Path) -> dict[str, str]:
    """Schedule and sensor states once the webserver answers (it takes ~10-30 s to start)."""
    query = ("{ repositoriesOrError { ... on RepositoryConnection { nodes { "
             "sensors { name sensorState { status } } "
             "schedules { name scheduleState { status } } } } } }")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert dev.poll() is None, log.read_text()[-3000:]
        try:
            nodes = httpx.post(url, json={"query": query}, timeout=5).json()[
                "data"]["repositoriesOrError"]["nodes"]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            time.sleep(1)
            continue
        return {**{s["name"]: s["sensorState"]["status"] for s in nodes[0]["sensors"]},
                **{s["name"]: s["scheduleState"]["status"] for s in nodes[0]["schedules"]}}
    raise AssertionError("the Dagster UI did not answer within 120 s")
