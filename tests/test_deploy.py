"""The cloud.gov deployment, locally: manifest.yml's two processes started with its own commands
and the environment cloud.gov would give them (VCAP_SERVICES with an aws-rds database and the
user-provided billing-cf service; PORT), against a new, empty database and the CF simulator.

The web process answers its health check, applies the migrations (once, with the worker
starting at the same time), and serves the UI only after a UAA login; the worker's daemon
heartbeats into the same storage; an operator's backfill launched over GraphQL (as the UI's
button does) is run by the worker and succeeds.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from billing_dagster.catalog import EXAMPLE_CATALOG
from billing_dagster.migrate import MIGRATIONS_DIR
from billing_dagster.partitions import hourly_keys_between
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.uaa_login import UI_CLIENT
from tests.support import SIM_CLIENT, conninfo_as_url, free_port, log_in, wait_until

# the two processes run the migrations and a backfill whose SQL the other tests run on both
# servers; what this adds is the processes, which do not depend on the server
pytestmark = pytest.mark.once
REPO = Path(__file__).resolve().parents[1]
MANIFEST = yaml.safe_load((REPO / "manifest.yml").read_text())
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  }
}"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status } }
}"""


def process(kind: str) -> dict:
    (found,) = [p for p in MANIFEST["applications"][0]["processes"] if p["type"] == kind]
    return found


@pytest.fixture
def deployed(empty_database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    foundation = Foundation(seed=5, apps=6, service_instances=3,
                            start=datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
    port = free_port()
    with Simulator(foundation, client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1],
                   follow_wall_clock=True) as sim:
        uri = conninfo_as_url(empty_database_url, "postgres")  # as aws-rds writes it
        vcap = {"aws-rds": [{"name": "billing-db", "label": "aws-rds", "tags": ["PostgreSQL"],
                             "credentials": {"uri": uri}}],
                "user-provided": [{"name": "billing-cf", "label": "user-provided", "tags": [],
                                   "credentials": {
                                       "cf_api_url": sim.url, "cf_client_id": SIM_CLIENT[0],
                                       "cf_client_secret": SIM_CLIENT[1],
                                       "ui_client_id": UI_CLIENT[0],
                                       "ui_client_secret": UI_CLIENT[1]}}]}
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("PG", "CF_", "UI_", "AWS_", "DAGSTER", "BILLING"))
                     and k != "DATABASE_URL"}
        env = {**inherited, "VCAP_SERVICES": json.dumps(vcap), "PORT": str(port),
               "UI_URL": f"http://127.0.0.1:{port}", "DAGSTER_HOME": str(tmp_path / "home"),
               "BILLING_CATALOG": str(EXAMPLE_CATALOG), "HOME": str(tmp_path)}
        children = []
        try:
            for kind in ("worker", "web"):  # the two start together, as cf starts them
                command = shlex.split(process(kind)["command"])
                assert command[0] == "python"
                with (tmp_path / f"{kind}.log").open("wb") as log:  # the child's copy
                    children.append(subprocess.Popen(
                        [sys.executable, *command[1:]], cwd=REPO, env=env, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True))
            yield f"http://127.0.0.1:{port}", empty_database_url
        finally:
            for child in children:
                os.killpg(child.pid, signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()


def wait_for(condition, seconds: float, what: str, logs: Path):
    def tails() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(logs.glob("*.log")))

    return wait_until(condition, seconds, what, tails)


def test_the_manifest_describes_a_web_and_a_worker_process():
    app = MANIFEST["applications"][0]
    assert app["buildpacks"] == ["python_buildpack"]
    assert {"billing-db", "billing-cf"} <= set(app["services"])
    web, worker = process("web"), process("worker")
    assert web["health-check-type"] == "http" and web["health-check-http-endpoint"] == "/healthz"
    assert worker["health-check-type"] == "process"
    text = (REPO / "manifest.yml").read_text().lower()
    assert "secret" not in text.replace("ui_client_secret", "").replace("-p '{...}'", "")


def test_both_processes_start_as_cf_starts_them_and_an_operator_backfills(deployed, tmp_path):
    base, database = deployed
    wait_for(lambda: httpx.get(base + "/healthz", timeout=5).status_code == 200, 180,
             "the web process's health check", tmp_path)
    assert httpx.get(base + "/graphql", params={"query": DAEMONS}).status_code == 401
    with httpx.Client(follow_redirects=False, timeout=60) as operator:
        log_in(operator, base, "operator")

        def daemons_healthy():
            answer = operator.post(base + "/graphql", json={"query": DAEMONS}).json()
            statuses = answer["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
            healthy = {s["daemonType"] for s in statuses if s["healthy"]}
            return {"SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"} <= healthy

        wait_for(daemons_healthy, 180, "the worker's daemon to report healthy", tmp_path)
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        first, last = hourly_keys_between(hour - timedelta(hours=2), hour)
        launched = operator.post(base + "/graphql", json={"query": LAUNCH, "variables": {
            "params": {"partitionsByAssets": [{
                "assetKey": {"path": ["hourly_measurements"]},
                "partitions": {"range": {"start": first, "end": last}}}]}}}).json()
        backfill = launched["data"]["launchPartitionBackfill"]
        assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

        def settled():
            answer = operator.post(base + "/graphql", json={
                "query": BACKFILL, "variables": {"id": backfill["backfillId"]}}).json()
            status = answer["data"]["partitionBackfillOrError"].get("status")
            return status if status in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED",
                                        "COMPLETED_FAILED", "CANCELED") else None

        assert wait_for(settled, 300, "the backfill to finish", tmp_path) in (
            "COMPLETED", "COMPLETED_SUCCESS")
    with psycopg.connect(database) as conn:
        applied = conn.execute("SELECT count(*) FROM billing.schema_migration").fetchone()
        measured = conn.execute("SELECT count(*) FROM billing.hour_coverage").fetchone()
    assert applied == (len(list(MIGRATIONS_DIR.glob("*.sql"))),)
    assert measured is not None and measured[0] > 0
