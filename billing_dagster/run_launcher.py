"""Runs as Cloud Foundry tasks: the run launcher of ``dagster.scale-out.yaml``.

Each run Dagster launches becomes a task of this same app (``POST /v3/apps/:guid/tasks``,
docs/cf-and-uaa.md §10): a container of its own, with the app's droplet, environment and
service bindings, that runs

    <python> -m billing_dagster.deploy task -- <python> -m dagster api execute_run '<args>'

``deploy task`` reads the bindings as the ``web`` and ``worker`` processes do (the database,
the CF credentials) and then becomes Dagster's own run worker, which loads the code location
from the run's origin and executes the run. The task's guid is kept on the run as the tag
``billing/cf_task_guid``; terminating the run cancels the task, and run monitoring
(``check_run_worker_health``) fails a run whose task died (docs/dagster.md §9).

The UAA client configured here starts and cancels tasks, so unlike the read-only ``billing``
client it needs ``cloud_controller.write`` and the SpaceDeveloper role in the app's space
(README, "Scaling out").

Dagster 1.13 has no public home for ``RunLauncher`` and ``ConfigurableClass``: the private
imports below are the ones Dagster's own launchers use, kept to this module.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
from collections.abc import Mapping
from typing import Any, Self

import dagster as dg
from dagster._core.events import EngineEventData  # see the module doc
from dagster._core.launcher import (  # see the module doc
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._grpc.types import ExecuteRunArgs  # see the module doc
from dagster._serdes import ConfigurableClass, ConfigurableClassData  # see the module doc

from billing_dagster.cf.client import CfApiError, CloudFoundryClient, RetryPolicy

TASK_GUID_TAG = "billing/cf_task_guid"
TASK_NAME_TAG = "billing/cf_task_name"
COMMAND_MAX_LENGTH = 4096  # the Cloud Controller refuses longer task commands (§10)
TASK_ENTRY = ("-m", "billing_dagster.deploy", "task", "--")
"""Run with the run's own Python before Dagster's command: reads the bindings (deploy.py)."""
WHERE = "dagster.scale-out.yaml, run_launcher.config"


class TaskLaunchError(RuntimeError):
    """A run could not be started as a Cloud Foundry task; the message says what to fix."""


class CloudFoundryTaskRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a Cloud Foundry task of this app (module doc).

    Config (``dagster.scale-out.yaml``): ``cf_api_url``, ``client_id``, ``client_secret`` (the
    task client; ``env:`` works for each), ``app_guid`` (default: ``application_id`` of
    ``VCAP_APPLICATION``, which Cloud Foundry sets in every app and task container),
    ``memory_in_mb``, ``disk_in_mb`` (each task's size, counted against the space's quota).
    """

    def __init__(self, cf_api_url: str, client_id: str, client_secret: str,
                 app_guid: str | None = None, memory_in_mb: int = 2048, disk_in_mb: int = 2048,
                 inst_data: ConfigurableClassData | None = None) -> None:
        for field, value in (("cf_api_url", cf_api_url), ("client_id", client_id),
                             ("client_secret", client_secret)):
            if not value:
                raise TaskLaunchError(f"{WHERE}.{field} is empty: give the task client's "
                                      "value (README, 'Scaling out')")
        for field, size in (("memory_in_mb", memory_in_mb), ("disk_in_mb", disk_in_mb)):
            if size <= 0:
                raise TaskLaunchError(f"{WHERE}.{field} must be a positive number of MB, "
                                      f"got {size}")
        self.cf_api_url = cf_api_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.configured_app_guid = app_guid or None
        self.memory_in_mb = memory_in_mb
        self.disk_in_mb = disk_in_mb
        self._inst_data = inst_data
        self._client: CloudFoundryClient | None = None
        self._client_lock = threading.Lock()
        super().__init__()

    # -- ConfigurableClass -----------------------------------------------------------------

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, dg.Field]:
        return {
            "cf_api_url": dg.Field(dg.StringSource, description="The Cloud Foundry API root, "
                                   "e.g. https://api.fr.cloud.gov"),
            "client_id": dg.Field(dg.StringSource, description="A UAA client with "
                                  "cloud_controller.write and SpaceDeveloper in the app's space"),
            "client_secret": dg.Field(dg.StringSource),
            "app_guid": dg.Field(dg.StringSource, is_required=False, description="The app whose "
                                 "tasks run the runs; default: VCAP_APPLICATION's "
                                 "application_id (this app)"),
            "memory_in_mb": dg.Field(dg.IntSource, is_required=False, default_value=2048),
            "disk_in_mb": dg.Field(dg.IntSource, is_required=False, default_value=2048),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData,
                          config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, **config_value)

    # -- RunLauncher -----------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            raise TaskLaunchError(f"run {run.run_id} has no code origin, so a task could not "
                                  "load its job; launch it from the UI or the daemon")
        app_guid = self.app_guid()
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id,
                              instance_ref=self._instance.get_ref(),
                              set_exit_code_on_failure=True)
        command = task_command(args)
        name = f"{run.job_name}-{run.run_id[:8]}"
        body = {"command": command, "name": name, "memory_in_mb": self.memory_in_mb,
                "disk_in_mb": self.disk_in_mb}
        try:
            task = self.client().post(f"/v3/apps/{app_guid}/tasks", body)
        except CfApiError as exc:
            raise self._launch_error(exc, app_guid) from exc
        guid = str(task.get("guid") or "")
        if not guid:
            raise TaskLaunchError(f"Cloud Foundry answered the task creation for run "
                                  f"{run.run_id} without a task guid: {json.dumps(task)[:300]}")
        self._instance.add_run_tags(run.run_id, {TASK_GUID_TAG: guid, TASK_NAME_TAG: name})
        self._instance.report_engine_event(
            f"Launched as Cloud Foundry task {name} (guid {guid}) of app {app_guid}: "
            f"{self.memory_in_mb} MB memory, {self.disk_in_mb} MB disk; its output is in "
            f"`cf logs` under APP/TASK/{name}.",
            run,
            EngineEventData(metadata={
                "cf_task_guid": guid, "cf_task_name": name, "cf_app_guid": app_guid,
                "cf_task_state": str(task.get("state")),
                "cf_task_sequence_id": str(task.get("sequence_id"))}),
            cls=self.__class__,
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        guid = run.tags.get(TASK_GUID_TAG)
        if not guid:
            self._instance.report_engine_event(
                f"Run has no {TASK_GUID_TAG} tag: no Cloud Foundry task to cancel (it was "
                "never launched, or its launch failed).", run, cls=self.__class__)
            return False
        try:
            task = self.client().post(f"/v3/tasks/{guid}/actions/cancel", idempotent=True)
        except CfApiError as exc:
            if exc.status in (404, 422):  # gone, or finished already
                self._instance.report_engine_event(
                    f"Cloud Foundry task {guid} was not cancelled: {exc}", run,
                    cls=self.__class__)
                return False
            raise self._client_error(exc, f"cancel task {guid}") from exc
        self._instance.report_engine_event(
            f"Cancelled Cloud Foundry task {guid} (state {task.get('state')}); its processes "
            "get SIGTERM, then SIGKILL.", run, cls=self.__class__)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """The run's task as Dagster's run monitoring sees it. A Cloud Foundry API that cannot
        be read raises (the monitoring daemon logs it and asks again next time) instead of
        answering UNKNOWN, which would fail a healthy run."""
        guid = run.tags.get(TASK_GUID_TAG)
        if not guid:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND,
                                        f"run has no {TASK_GUID_TAG} tag: no task was started")
        try:
            task = self.client().get(f"/v3/tasks/{guid}")
        except CfApiError as exc:
            if exc.status == 404:
                return CheckRunHealthResult(
                    WorkerStatus.NOT_FOUND, f"Cloud Foundry task {guid} not found (pruned, or "
                    "never created)", run_worker_id=guid)
            raise self._client_error(exc, f"read task {guid}") from exc
        state = task.get("state")
        reason = (task.get("result") or {}).get("failure_reason")
        summary = f"Cloud Foundry task {task.get('name')} ({guid}) is {state}"
        if state in ("PENDING", "RUNNING", "CANCELING"):
            return CheckRunHealthResult(WorkerStatus.RUNNING, summary, run_worker_id=guid)
        if state == "SUCCEEDED":
            return CheckRunHealthResult(WorkerStatus.SUCCESS, summary, run_worker_id=guid)
        if state == "FAILED":
            return CheckRunHealthResult(WorkerStatus.FAILED, f"{summary}: {reason}",
                                        run_worker_id=guid)
        return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"{summary} (unknown state)",
                                    run_worker_id=guid)

    def get_run_worker_debug_info(self, run: dg.DagsterRun,
                                  include_container_logs: bool | None = True) -> str | None:
        guid = run.tags.get(TASK_GUID_TAG)
        if not guid:
            return None
        try:
            task = self.client().get(f"/v3/tasks/{guid}")
        except CfApiError as exc:
            return f"Cloud Foundry task {guid}: could not be read ({exc})"
        reason = (task.get("result") or {}).get("failure_reason")
        return (f"Cloud Foundry task {task.get('name')} ({guid}): {task.get('state')}"
                + (f", {reason}" if reason else "")
                + f". Its output: cf logs <app> --recent, source APP/TASK/{task.get('name')}.")

    def dispose(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- helpers ---------------------------------------------------------------------------

    def app_guid(self) -> str:
        """The app whose tasks run the runs: configured, or this app (VCAP_APPLICATION)."""
        if self.configured_app_guid:
            return self.configured_app_guid
        raw = os.environ.get("VCAP_APPLICATION")
        if raw:
            try:
                found = json.loads(raw).get("application_id")
            except (ValueError, AttributeError) as exc:
                raise TaskLaunchError(f"VCAP_APPLICATION is not a JSON object ({exc}); set "
                                      f"{WHERE}.app_guid") from exc
            if found:
                return str(found)
        raise TaskLaunchError(
            f"no app to run tasks of: {WHERE}.app_guid is unset and VCAP_APPLICATION names no "
            "application_id. On cloud.gov, Cloud Foundry sets VCAP_APPLICATION in the app; "
            "elsewhere set app_guid (cf app billing-dagster --guid).")

    def client(self) -> CloudFoundryClient:
        with self._client_lock:
            if self._client is None:
                self._client = CloudFoundryClient(
                    self.cf_api_url, self.client_id, self._client_secret, timeout_seconds=30,
                    retry=RetryPolicy(max_attempts=4, backoff_seconds=0.5, max_wait_seconds=10))
            return self._client

    def _launch_error(self, exc: CfApiError, app_guid: str) -> TaskLaunchError:
        if exc.status == 403:
            return TaskLaunchError(
                f"Cloud Foundry refused to start a task of app {app_guid} for UAA client "
                f"{self.client_id!r} (403): the task client needs the cloud_controller.write "
                "scope and the SpaceDeveloper role in the app's space (cf set-space-role "
                f"{self.client_id} ORG SPACE SpaceDeveloper --client); the read-only billing "
                f"client cannot start tasks. Set {WHERE}.client_id and client_secret "
                f"(CF_TASK_CLIENT_ID, CF_TASK_CLIENT_SECRET). {exc}")
        if exc.status == 404:
            return TaskLaunchError(
                f"Cloud Foundry has no app {app_guid} that client {self.client_id!r} can see "
                f"(404): check {WHERE}.app_guid (cf app billing-dagster --guid; unset, it is "
                f"VCAP_APPLICATION's application_id) and the client's space role. {exc}")
        if exc.status == 422:
            return TaskLaunchError(
                f"Cloud Foundry refused the task of app {app_guid} (422): {exc}. If it names "
                f"a memory quota, lower {WHERE}.memory_in_mb or concurrency.runs."
                "max_concurrent_runs, or raise the space's quota; disk_in_mb may not exceed "
                "the foundation's maximum_app_disk_in_mb.")
        return self._client_error(exc, f"start a task of app {app_guid}")

    def _client_error(self, exc: CfApiError, doing: str) -> TaskLaunchError:
        if exc.status == 401:
            return TaskLaunchError(
                f"UAA refused the task client {self.client_id!r} (401), so no task could "
                f"{doing}: check {WHERE}.client_id and client_secret (CF_TASK_CLIENT_ID, "
                f"CF_TASK_CLIENT_SECRET). {exc}")
        return TaskLaunchError(f"could not {doing} at {self.cf_api_url}: {exc}")


def task_command(args: ExecuteRunArgs) -> str:
    """The task's shell command (Cloud Foundry runs it with ``bash -c``): the bindings read by
    ``deploy task``, then Dagster's run worker, both with the Python of the run's code origin
    (the same path in every container of the droplet); each argument quoted for the shell
    (the last one is JSON). Refused when longer than the Cloud Controller accepts."""
    python = args.job_origin.executable_path
    worker = list(args.get_command_args())  # <entry point...> api execute_run <json>
    if worker[:-3] == ["dagster"]:  # a bare entry point: not on a task's PATH for certain
        worker = [python, "-m", "dagster", *worker[-3:]]
    command = shlex.join([python, *TASK_ENTRY, *worker])
    if len(command) > COMMAND_MAX_LENGTH:
        raise TaskLaunchError(
            f"the task command for run {args.run_id} is {len(command)} characters, and Cloud "
            f"Foundry accepts at most {COMMAND_MAX_LENGTH}: shorten the instance configuration "
            "(dagster.scale-out.yaml: its settings travel in the command) or the code "
            "location's paths")
    return command
