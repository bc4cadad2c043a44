"""`make run` as a new user runs it: no PG*/DATABASE_URL/CF_* variables, a fresh data dir."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from billing_dagster.database import stop_embedded
from tests.support import log_in

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
             "--apps", "30", "--service-instances", "12", "--backfill-hours", "48"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        stop_embedded(tmp_path / "data" / "pgdata")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Backfilled 48 hours in one run" in out and "hours flagged: 0" in out
    assert "Posted business month" in out
    assert list((tmp_path / "statements").glob("*/*.csv"))
    charged = [line for line in out.splitlines() if line.endswith("credits)")]
    assert charged and all(int(line.split()[1].replace(",", "")) > 0 for line in charged)
    assert "| customer | tier today | credits left |" in out
    assert "Agreements, burn rate and runway" in out and "IAA-EPA-FY27" in out
    assert "Unknown resource kinds" in out
    assert "database: embedded PostgreSQL" in result.stderr


def test_make_dev_serves_the_ui_behind_the_login_with_schedules_and_sensors_running(
        tmp_path: Path):
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
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for(lambda: httpx.get(base + "/healthz", timeout=5).status_code == 200,
                      dev, log)
            assert httpx.post(base + "/graphql", json={"query": STATES}).status_code == 401
            with httpx.Client(follow_redirects=False, timeout=60) as reader:
                assert log_in(reader, base, "reader").status_code == 302
                states = _states(reader, base)
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
    assert dev.returncode == 0, log.read_text()[-3000:]  # both children stopped on SIGTERM
    output = log.read_text()
    assert "operator / operator-password" in output  # the demo users are announced


STATES = ("{ repositoriesOrError { ... on RepositoryConnection { nodes { "
          "sensors { name sensorState { status } } "
          "schedules { name scheduleState { status } } } } } }")


def _wait_for(ready: Callable[[], bool], dev: subprocess.Popen, log: Path) -> None:
    """Until ``ready()`` (the UI takes ~10-30 s to start), while `make dev` runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert dev.poll() is None, log.read_text()[-3000:]
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"the Dagster UI did not answer within 120 s: {log.read_text()[-3000:]}")


def _states(client: httpx.Client, base: str) -> dict[str, str]:
    """Schedule and sensor states, asked as the logged-in user."""
    nodes = client.post(base + "/graphql", json={"query": STATES}).json()[
        "data"]["repositoriesOrError"]["nodes"]
    return {**{s["name"]: s["sensorState"]["status"] for s in nodes[0]["sensors"]},
            **{s["name"]: s["scheduleState"]["status"] for s in nodes[0]["schedules"]}}
