"""The code location deployed as on cloud.gov: the Dagster webserver and the Dagster daemon, each a
process of its own (with its code server and run workers under it), on the campaign's server.

Used by the scenario where the daemon's machine dies in the middle of a backfill: the operator
launches the backfill as the UI does (GraphQL ``launchPartitionBackfill`` over HTTP), the daemon
turns it into one run, and the whole process group of the daemon (daemon, code server, run
worker) is SIGKILLed at a seeded phase. Then the operator does what the UI offers: start the
daemon again, mark a run that no process is left to finish as canceled (``terminateRun``), and
launch the same backfill again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's dagster-webserver and dagster-daemon

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
  }
}"""
BACKFILL_RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    __typename
    ... on Runs { results { runId status stepStats { stepKey status } } }
  }
}"""
TERMINATE = """
mutation Terminate($id: String!) {
  terminateRun(runId: $id, terminatePolicy: MARK_AS_CANCELED_IMMEDIATELY) {
    __typename
    ... on PythonError { message }
  }
}"""


class Deployment:
    """The webserver and daemon of billing_dagster.definitions, configured by ``env``."""

    def __init__(self, env: dict[str, str], dagster_storage_url: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="faults-dagster-home-"))
        config = yaml.safe_load((REPO / "dagster.yaml").read_text())
        # The repository's dagster.yaml, with run monitoring polling faster than production's
        # so that the campaign need not wait minutes for a run that never started.
        config["run_monitoring"] = {**config.get("run_monitoring", {}),
                                    "enabled": True, "poll_interval_seconds": 5,
                                    "start_timeout_seconds": 30}
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(config))
        self.env = {**env, "DAGSTER_HOME": str(self.home),
                    "BILLING_DAGSTER_PG_URL": dagster_storage_url,
                    "PYTHONPATH": str(REPO)}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.webserver: subprocess.Popen[bytes] | None = None

    # -- processes -------------------------------------------------------------------------

    def _start(self, *command: str) -> subprocess.Popen[bytes]:
        with (self.home / f"{Path(command[0]).name}.log").open("ab") as log:  # the child's copy
            return subprocess.Popen(
                list(command), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                # Dagster maps SIGTERM onto SIGINT's handler; make that the default one
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def start_webserver(self) -> None:
        self.webserver = self._start(str(BIN / "dagster-webserver"), "-w",
                                     str(REPO / "workspace.yaml"), "-h", "127.0.0.1",
                                     "-p", str(self.port))
        self.wait_for(lambda: _answers(self.url + "/server_info"), 90, "the webserver to answer")

    def start_daemon(self) -> None:
        self.daemon = self._start(str(BIN / "dagster-daemon"), "run", "-w",
                                  str(REPO / "workspace.yaml"))

    def kill_daemon(self) -> None:
        """SIGKILL the daemon and everything it started (its code server, the run worker)."""
        if self.daemon is not None:
            _kill_group(self.daemon)
            self.daemon = None

    def stop(self) -> None:
        for process in (self.daemon, self.webserver):
            if process is not None:
                _kill_group(process)
        self.daemon = self.webserver = None
        shutil.rmtree(self.home, ignore_errors=True)

    # -- what the UI does ------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.url + "/graphql", json={"query": query,
                                                           "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_backfill(self, assets: list[str], first_key: str, last_key: str) -> str:
        params = {"partitionsByAssets": [
            {"assetKey": {"path": [asset]},
             "partitions": {"range": {"start": first_key, "end": last_key}}}
            for asset in assets]}
        result = self.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {result}")
        return result["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        result = self.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return result.get("status", result["__typename"])

    def backfill_runs(self, backfill_id: str) -> list[dict[str, Any]]:
        return self.graphql(BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]

    def mark_canceled(self, run_id: str) -> None:
        result = self.graphql(TERMINATE, {"id": run_id})["terminateRun"]
        if result["__typename"] != "TerminateRunSuccess":
            raise RuntimeError(f"run {run_id} not marked canceled: {result}")

    def wait_for(self, condition: Callable[[], Any], seconds: float, what: str) -> Any:
        """The first true value of ``condition``, polled; TimeoutError with the logs if none."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"waited {seconds:.0f} s for {what}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.home.glob("*.log")))


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
