"""The scale-out path: runs as Cloud Foundry tasks (billing_dagster/run_launcher.py with the
repository's dagster.scale-out.yaml), against the CF simulator over HTTP, whose tasks run as
local processes with the app's environment (VCAP_SERVICES with the database and the billing-cf
credentials, VCAP_APPLICATION), and real PostgreSQL.

The instance is the worker's: deploy.prepare with BILLING_DAGSTER_YAML=dagster.scale-out.yaml.
A run of the project's catalog_job is created with the origin a code server gives it (module
billing_dagster.definitions, attribute code_location) and launched through the launcher; the
task then starts as cloud.gov starts it (`python -m billing_dagster.deploy task -- ...`).
Holding the catalog's advisory lock stops a run mid-step, so a kill or a cancel lands there.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
import psycopg
import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, instance_for_test
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher import WorkerStatus
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from dagster._grpc.types import ExecuteRunArgs
from dagster._utils.tags import TagConcurrencyLimitsCounter

from billing_dagster import deploy
from billing_dagster.catalog import EXAMPLE_CATALOG
from billing_dagster.cf.client import CfApiError, CloudFoundryClient, RetryPolicy
from billing_dagster.jobs import landing_job
from billing_dagster.run_launcher import (
    COMMAND_MAX_LENGTH,
    TASK_GUID_TAG,
    CloudFoundryTaskRunLauncher,
    TaskLaunchError,
    task_command,
)
from billing_dagster.settings import ConfigError
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.uaa import TASK_CLIENT
from tests.support import SIM_CLIENT, SIM_START, cf_client, conninfo_as_url

if TYPE_CHECKING:
    from dagster._core.workspace.context import BaseWorkspaceRequestContext

REPO = Path(__file__).resolve().parents[1]
NO_WORKSPACE = cast("BaseWorkspaceRequestContext", None)  # the task launcher needs none
CATALOG_LOCK = "SELECT pg_advisory_xact_lock(hashtext('billing.catalog'))"
log = logging.getLogger(__name__)


def messages(instance: DagsterInstance, run: DagsterRun) -> list[str]:
    """What the run's event log says, event by event (the UI's log lines)."""
    return [(e.dagster_event.message if e.dagster_event else None) or e.user_message or ""
            for e in instance.all_logs(run.run_id)]


@dataclass
class ScaleOut:
    sim: Simulator
    instance: DagsterInstance
    launcher: CloudFoundryTaskRunLauncher
    db: str
    app_guid: str

    def launch(self, job_name: str = "catalog_job") -> DagsterRun:
        """A run of one of the project's jobs, launched as a task; the run as launched."""
        recon = ReconstructableRepository.for_module(
            "billing_dagster.definitions", "code_location", working_directory=str(REPO),
        ).get_reconstructable_job(job_name)
        run = self.instance.create_run_for_job(job_def=recon.get_definition(),
                                               job_code_origin=recon.get_python_origin())
        self.instance.launch_run(run.run_id, NO_WORKSPACE)
        launched = self.instance.get_run_by_id(run.run_id)
        assert launched is not None and TASK_GUID_TAG in launched.tags, launched
        return launched

    def wait(self, condition: Callable[[], Any], seconds: float, what: str, run: DagsterRun
             ) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        guid = run.tags.get(TASK_GUID_TAG, "")
        output = self.sim.tasks.output(guid)[-4000:] if guid else "(no task)"
        raise AssertionError(f"waited {seconds:.0f} s for {what}; the task said:\n{output}")

    def status(self, run: DagsterRun) -> DagsterRunStatus:
        found = self.instance.get_run_by_id(run.run_id)
        assert found is not None
        return found.status

    def waiting_on_the_catalog_lock(self) -> bool:
        with psycopg.connect(self.db, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()
        return bool(row and row[0])


class ConnectionPeak:
    """The most connections to the database seen at once (not counting its own), sampled
    continuously in a thread while the block runs."""

    def __init__(self, db: str) -> None:
        self.db, self.most, self._stop = db, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with psycopg.connect(self.db, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                   "current_database() AND pid <> pg_backend_pid()").fetchone()
                self.most = max(self.most, row[0] if row else 0)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def app_environment(sim: Simulator, db_url: str, app_guid: str, home: Path,
                    task_client: tuple[str, str] = TASK_CLIENT) -> dict[str, str]:
    """What Cloud Foundry gives the app's processes and tasks: the bindings, the app's own
    variables (manifest.yml and cf set-env), VCAP_APPLICATION; nothing from this machine's
    PG*, CF_*, UI_*, DAGSTER* or BILLING* variables."""
    vcap = {"aws-rds": [{"name": "billing-db", "label": "aws-rds", "tags": ["PostgreSQL"],
                         "credentials": {"uri": conninfo_as_url(db_url, "postgres")}}],
            "user-provided": [{"name": "billing-cf", "label": "user-provided", "tags": [],
                               "credentials": {
                                   "cf_api_url": sim.url, "cf_client_id": SIM_CLIENT[0],
                                   "cf_client_secret": SIM_CLIENT[1],
                                   "cf_task_client_id": task_client[0],
                                   "cf_task_client_secret": task_client[1]}}]}
    application = {"application_id": app_guid, "application_name": "billing-dagster",
                   "cf_api": sim.url, "space_name": "billing", "limits": {"mem": 2048}}
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PG", "CF_", "UI_", "AWS_", "DAGSTER", "BILLING", "VCAP"))
                 and k != "DATABASE_URL"}
    return {**inherited, "VCAP_SERVICES": json.dumps(vcap),
            "VCAP_APPLICATION": json.dumps(application),
            "BILLING_DAGSTER_YAML": "dagster.scale-out.yaml",
            "BILLING_CATALOG": str(EXAMPLE_CATALOG), "DAGSTER_HOME": str(home),
            "HOME": str(home.parent)}


def as_this_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def scale_out(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[ScaleOut]:
    foundation = Foundation(seed=3, apps=3, service_instances=1, start=SIM_START)
    with Simulator(foundation, client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1],
                   task_cwd=REPO, task_grace_seconds=5) as sim:
        app_guid = sorted(sim.foundation.apps)[0]  # stands for billing-dagster itself
        sim.tasks.env = app_environment(sim, db_url, app_guid, tmp_path / "task-home")
        worker = app_environment(sim, db_url, app_guid, tmp_path / "home")
        deploy.prepare(worker, tmp_path / "home")  # the worker's start, as on cloud.gov
        as_this_process(worker, monkeypatch)
        instance = DagsterInstance.from_config(str(tmp_path / "home"))
        try:
            launcher = instance.run_launcher
            assert isinstance(launcher, CloudFoundryTaskRunLauncher)
            yield ScaleOut(sim, instance, launcher, db_url, app_guid)
        finally:
            instance.dispose()


def test_a_run_leaves_as_a_cloud_foundry_task_and_succeeds(scale_out: ScaleOut):
    s = scale_out
    run = s.launch("catalog_job")
    guid = run.tags[TASK_GUID_TAG]
    task = httpx.get(f"{s.sim.url}/v3/tasks/{guid}", headers={
        "Authorization": f"bearer {s.launcher.client().access_token()}"}).json()
    python = sys.executable
    assert task["command"].startswith(f"{python} -m billing_dagster.deploy task -- {python} "
                                      "-m dagster api execute_run '{"), task["command"]
    assert (task["name"], task["memory_in_mb"], task["disk_in_mb"]) == (
        f"catalog_job-{run.run_id[:8]}", 2048, 2048)
    assert task["relationships"]["app"]["data"]["guid"] == s.app_guid
    # the task's own connections to the database at their peak, sampled as fast as the server
    # answers while only HTTP is asked of the simulator here
    with ConnectionPeak(s.db) as peak:
        health = s.wait(lambda: (h := s.launcher.check_run_worker_health(run)).status
                        != WorkerStatus.RUNNING and h, 90, "the task to end", run)
    assert health.status == WorkerStatus.SUCCESS, s.sim.tasks.output(guid)[-4000:]
    assert s.status(run) == DagsterRunStatus.SUCCESS
    launched = [m for m in messages(s.instance, run) if "Launched as Cloud Foundry task" in m]
    assert launched and guid in launched[0]
    with psycopg.connect(s.db) as conn:
        customers = conn.execute("SELECT count(*) FROM billing.customer").fetchone()
    assert customers is not None and customers[0] > 0
    # dagster.scale-out.yaml's budget for a run of one step at a time: the run worker's storage
    # connection, the step's own and its storage connection (an upper bound the sampling can
    # only approach from below)
    assert 1 <= peak.most <= 3, peak.most


def test_a_task_killed_mid_run_is_seen_by_run_monitoring_and_fails_the_run(scale_out):
    s = scale_out
    with psycopg.connect(s.db) as blocker:
        blocker.execute(CATALOG_LOCK)  # the catalog step will wait here, mid-run
        run = s.launch()
        s.wait(s.waiting_on_the_catalog_lock, 60, "the catalog step to wait on its lock", run)
        assert s.status(run) == DagsterRunStatus.STARTED
        assert s.launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        guid = run.tags[TASK_GUID_TAG]
        httpx.post(f"{s.sim.url}/_sim/tasks/{guid}/kill").raise_for_status()  # the cell dies
        health = s.wait(lambda: (h := s.launcher.check_run_worker_health(run)).status
                        != WorkerStatus.RUNNING and h, 20, "the task to end", run)
        assert health.status == WorkerStatus.FAILED
        assert "cell disappeared before completion" in (health.msg or "")
        assert s.status(run) == DagsterRunStatus.STARTED  # nobody else can tell
        (record,) = s.instance.get_run_records()
        monitor_started_run(s.instance, NO_WORKSPACE, record, log)  # one monitoring pass
        assert s.status(run) == DagsterRunStatus.FAILURE
        blocker.rollback()
    failure = [m for m in messages(s.instance, run) if "cell disappeared before completion" in m]
    assert failure, "the run's failure should name the task's failure reason"


def test_terminate_cancels_the_task_and_the_run_ends_canceled(scale_out):
    s = scale_out
    with psycopg.connect(s.db) as blocker:
        blocker.execute(CATALOG_LOCK)
        run = s.launch()
        s.wait(s.waiting_on_the_catalog_lock, 60, "the catalog step to wait on its lock", run)
        assert s.launcher.terminate(run.run_id) is True
        assert s.status(run) in (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED)
        health = s.wait(lambda: (h := s.launcher.check_run_worker_health(run)).status
                        != WorkerStatus.RUNNING and h, 20, "the cancelled task to end", run)
        assert health.status == WorkerStatus.FAILED and "task was cancelled" in (health.msg or "")
        s.wait(lambda: s.status(run) == DagsterRunStatus.CANCELED, 20, "the run's end", run)
        assert s.launcher.terminate(run.run_id) is False  # finished: nothing to cancel
        blocker.rollback()


def test_the_run_queue_limits_landings_and_backfills_as_the_yaml_says(scale_out: ScaleOut):
    """dagster.scale-out.yaml's queue, as the daemon's run coordinator reads it."""
    queue = scale_out.instance.get_concurrency_config().run_queue_config
    assert queue is not None and queue.max_concurrent_runs == 6
    assert (landing_job.tags or {}).get("billing/queue") == "landing"

    def run(**tags: str) -> DagsterRun:
        return DagsterRun(job_name="a_job", run_id=str(uuid.uuid4()), tags=tags)

    def blocked(running: list[DagsterRun], candidate: DagsterRun) -> bool:
        return TagConcurrencyLimitsCounter(queue.tag_concurrency_limits,
                                           running).is_blocked(candidate)

    landing = {"billing/queue": "landing"}
    assert blocked([run(**landing)], run(**landing))
    assert not blocked([run(**landing)], run())  # metering beside a landing
    one, two, three = ({"dagster/backfill": name} for name in ("one", "two", "three"))
    assert blocked([run(**one), run(**one)], run(**one))  # two per backfill
    assert not blocked([run(**one), run(**one)], run(**two))
    assert blocked([run(**one), run(**one), run(**two), run(**two)], run(**three))  # four in all
    assert not blocked([run(**one), run(**one), run(**two), run(**two)], run(**landing))


def test_the_task_command_fits_cloud_foundry_with_room_to_spare(scale_out: ScaleOut):
    """With cloud.gov's paths (droplet under /home/vcap), the command that carries the
    instance configuration stays well under the Cloud Controller's 4096 characters."""
    recon = ReconstructableRepository.for_module(
        "billing_dagster.definitions", "code_location", working_directory="/home/vcap/app",
    ).get_reconstructable_job("landing_job")
    origin = recon.get_python_origin()
    origin = origin._replace(repository_origin=origin.repository_origin._replace(
        executable_path="/home/vcap/deps/0/python/bin/python"))
    ref = scale_out.instance.get_ref()
    command = task_command(ExecuteRunArgs(job_origin=origin, run_id="f" * 36,
                                          instance_ref=ref, set_exit_code_on_failure=True))
    assert command.startswith("/home/vcap/deps/0/python/bin/python -m billing_dagster.deploy "
                              "task -- /home/vcap/deps/0/python/bin/python -m dagster api "
                              "execute_run '{")
    assert len(command) < COMMAND_MAX_LENGTH - 600, len(command)


@pytest.mark.parametrize("case", ["read-only client", "unknown app", "no app", "bad secret"])
def test_a_launch_that_cannot_work_fails_the_run_with_the_fix(case: str, db_url: str,
                                                               monkeypatch: pytest.MonkeyPatch):
    foundation = Foundation(seed=3, apps=2, service_instances=1, start=SIM_START)
    with Simulator(foundation, client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1]) as sim:
        app_guid = sorted(sim.foundation.apps)[0]
        config: dict[str, Any] = {"cf_api_url": sim.url, "client_id": TASK_CLIENT[0],
                                  "client_secret": TASK_CLIENT[1], "app_guid": app_guid}
        expected = {"read-only client": ("cloud_controller.write", "SpaceDeveloper",
                                         "CF_TASK_CLIENT_ID"),
                    "unknown app": ("app_guid", "404"),
                    "no app": ("app_guid", "VCAP_APPLICATION"),
                    "bad secret": ("401", "CF_TASK_CLIENT_SECRET")}[case]
        if case == "read-only client":  # the billing client reads everything, writes nothing
            config.update(client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1])
        elif case == "unknown app":
            config["app_guid"] = "00000000-0000-4000-8000-000000000000"
        elif case == "no app":
            del config["app_guid"]
            monkeypatch.delenv("VCAP_APPLICATION", raising=False)
        else:
            config["client_secret"] = "not-the-secret"
        overrides = {"run_launcher": {"module": "billing_dagster.run_launcher",
                                      "class": "CloudFoundryTaskRunLauncher",
                                      "config": config}}
        with instance_for_test(overrides=overrides) as instance:
            recon = ReconstructableRepository.for_module(
                "billing_dagster.definitions", "code_location", working_directory=str(REPO),
            ).get_reconstructable_job("catalog_job")
            monkeypatch.setenv("DATABASE_URL", conninfo_as_url(db_url))
            run = instance.create_run_for_job(job_def=recon.get_definition(),
                                              job_code_origin=recon.get_python_origin())
            with pytest.raises(TaskLaunchError) as raised:
                instance.launch_run(run.run_id, NO_WORKSPACE)
            for words in expected:
                assert words in str(raised.value), str(raised.value)
            failed = instance.get_run_by_id(run.run_id)
            assert failed is not None and failed.status == DagsterRunStatus.FAILURE
            assert any(str(raised.value)[:80] in m for m in messages(instance, run))
            assert sim.tasks.guids() == []


def test_the_launcher_refuses_a_size_that_is_not_positive():
    with pytest.raises(TaskLaunchError, match="memory_in_mb must be a positive"):
        CloudFoundryTaskRunLauncher("http://127.0.0.1:9", "id", "secret", memory_in_mb=0)


def test_deploy_picks_the_instance_configuration_by_name(tmp_path: Path, db_url: str):
    base = {"DATABASE_URL": conninfo_as_url(db_url)}
    env = dict(base)
    deploy.prepare(env, tmp_path / "default")
    assert (tmp_path / "default" / "dagster.yaml").read_text() == \
        (REPO / "dagster.yaml").read_text()
    with pytest.raises(ConfigError, match="dagster.scale-out.yaml") as raised:
        deploy.prepare({**base, "BILLING_DAGSTER_YAML": "dagster.yml"}, tmp_path / "typo")
    assert "BILLING_DAGSTER_YAML='dagster.yml'" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        deploy.prepare({**base, "BILLING_DAGSTER_YAML": "dagster.scale-out.yaml",
                        "CF_API_URL": "https://api.example"}, tmp_path / "no-client")
    assert "'cf_task_client_id', 'cf_task_client_secret'" in str(raised.value)
    env = {**base, "BILLING_DAGSTER_YAML": "dagster.scale-out.yaml", "CF_API_URL": "x",
           "CF_TASK_CLIENT_ID": "id", "CF_TASK_CLIENT_SECRET": "secret"}
    deploy.prepare(env, tmp_path / "scale-out")
    assert (tmp_path / "scale-out" / "dagster.yaml").read_text() == \
        (REPO / "dagster.scale-out.yaml").read_text()


# -- the simulator's tasks and the client's POST, over HTTP ----------------------------------


@pytest.fixture
def sim_tasks(tmp_path: Path) -> Iterator[tuple[Simulator, str, httpx.Client]]:
    foundation = Foundation(seed=3, apps=2, service_instances=1, start=SIM_START)
    with Simulator(foundation, client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1],
                   task_cwd=tmp_path, task_grace_seconds=2) as sim, \
            httpx.Client(base_url=sim.url, timeout=10) as http:
        yield sim, sorted(sim.foundation.apps)[0], http


def token(http: httpx.Client, client: tuple[str, str]) -> dict[str, str]:
    answer = http.post("/uaa/oauth/token", data={"grant_type": "client_credentials"},
                       auth=client)
    answer.raise_for_status()
    return {"Authorization": f"bearer {answer.json()['access_token']}"}


def cf_error(answer: httpx.Response) -> tuple[int, str, str]:
    (error,) = answer.json()["errors"]
    return answer.status_code, error["title"], error["detail"]


def test_simulated_tasks_run_commands_and_answer_as_the_cloud_controller(sim_tasks):
    sim, app, http = sim_tasks
    writer, reader = token(http, TASK_CLIENT), token(http, SIM_CLIENT)

    def create(command: str, **fields: object) -> httpx.Response:
        return http.post(f"/v3/apps/{app}/tasks", json={"command": command, **fields},
                         headers=writer)

    def settled(guid: str) -> dict:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            task = http.get(f"/v3/tasks/{guid}", headers=reader).json()
            if task["state"] in ("SUCCEEDED", "FAILED"):
                return task
            time.sleep(0.05)
        raise AssertionError(f"task {guid} never ended")

    ok = create("echo hello from $PWD", name="greet", memory_in_mb=256)
    assert ok.status_code == 202 and ok.json()["state"] == "RUNNING"
    task = settled(ok.json()["guid"])
    assert (task["state"], task["result"]["failure_reason"], task["name"],
            task["memory_in_mb"], task["disk_in_mb"], task["sequence_id"]) == (
        "SUCCEEDED", None, "greet", 256, 1024, 1)
    assert sim.tasks.output(task["guid"]).strip() == f"hello from {sim.tasks.cwd}"
    failed = settled(create("exit 3").json()["guid"])
    assert (failed["state"], failed["result"]["failure_reason"], failed["sequence_id"]) == (
        "FAILED", "Exited with status 3", 2)
    assert cf_error(http.post(f"/v3/tasks/{failed['guid']}/actions/cancel", headers=writer)) \
        == (422, "CF-UnprocessableEntity", "Task state is FAILED and therefore cannot be "
            "canceled")
    long = create("sleep 30").json()
    canceling = http.post(f"/v3/tasks/{long['guid']}/actions/cancel", headers=writer)
    assert canceling.status_code == 202 and canceling.json()["state"] == "CANCELING"
    assert settled(long["guid"])["result"]["failure_reason"] == "task was cancelled"
    # refusals, in the v3 error envelope
    assert cf_error(http.post(f"/v3/apps/{app}/tasks", json={"command": "true"},
                              headers=reader))[:2] == (403, "CF-NotAuthorized")
    assert cf_error(http.post("/v3/apps/no-such-app/tasks", json={"command": "true"},
                              headers=writer)) == (404, "CF-ResourceNotFound", "App not found")
    assert cf_error(http.get("/v3/tasks/no-such-task", headers=reader)) == (
        404, "CF-ResourceNotFound", "Task not found")
    assert cf_error(create("", name="x"))[:2] == (422, "CF-UnprocessableEntity")
    assert cf_error(create("true", color="red"))[2] == "Unknown field(s): 'color'"
    assert cf_error(create("x" * 4097))[2] == "command must be shorter than 4097 characters"
    assert cf_error(create("true", disk_in_mb=4096))[2] == \
        "Cannot request disk_in_mb greater than 2048"


def test_the_client_never_repeats_a_creation_that_may_have_reached_cloud_foundry(sim_tasks):
    sim, app, _ = sim_tasks
    with cf_client(sim) as client:
        client.access_token()
        sim.inject_fault("500", path_prefix=f"/v3/apps/{app}/tasks")
        with pytest.raises(CfApiError, match="It was not repeated"):
            client.post(f"/v3/apps/{app}/tasks", {"command": "true"})
        assert [r for r in sim.requests if r[0] == "POST" and "/tasks" in r[1]] == [
            ("POST", f"/v3/apps/{app}/tasks")]
    with CloudFoundryClient(sim.url, *TASK_CLIENT, retry=RetryPolicy(3, 0.01, 0.05)) as client:
        sim.inject_fault("429", path_prefix=f"/v3/apps/{app}/tasks")  # refused unread: retried
        created = client.post(f"/v3/apps/{app}/tasks", {"command": "true"})
    assert sim.tasks.guids() == [created["guid"]]
