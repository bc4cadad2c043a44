"""Cloud Foundry tasks in the simulator: each task's command runs as a local process.

The Cloud Controller side of docs/cf-and-uaa.md §10, as far as the scale-out run launcher
(billing_dagster/run_launcher.py) uses it:

- ``POST /v3/apps/:guid/tasks`` with ``command`` (required), ``name``, ``memory_in_mb``,
  ``disk_in_mb``: 202 and the task, already ``RUNNING``; the command runs as ``bash -c
  <command>`` in a new process group, with the environment and working directory the test gave
  the Simulator (on Cloud Foundry: the app's environment, in the app's directory);
- ``GET /v3/tasks/:guid``: the task; ``RUNNING`` until its process exits, then ``SUCCEEDED``
  (exit status 0) or ``FAILED`` with ``result.failure_reason`` "Exited with status N";
- ``POST /v3/tasks/:guid/actions/cancel``: 202 and the task in ``CANCELING``; the process group
  gets SIGTERM, SIGKILL after the grace period, and the task ends ``FAILED`` with "task was
  cancelled"; cancelling a finished task is a 422.

Creating and cancelling need a write scope (``cloud_controller.write`` or ``.admin``), reading
a read scope; errors use CF's v3 envelope. ``kill`` (a test's control, not an endpoint) kills a
task's processes as a vanished Diego cell would: ``FAILED``, "cell disappeared before
completion". What a real foundation does beyond this is listed in docs/cf-and-uaa.md §8.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_dagster.simulator.responses import (
    ApiError,
    Response,
    json_response,
    not_authorized,
    resource_not_found,
    unprocessable,
)

READ_SCOPES = frozenset({
    "cloud_controller.admin", "cloud_controller.admin_read_only",
    "cloud_controller.global_auditor", "cloud_controller.read",
})
WRITE_SCOPES = frozenset({"cloud_controller.admin", "cloud_controller.write"})
COMMAND_MAX_LENGTH = 4096
DEFAULT_MEMORY_IN_MB = 1024  # the Cloud Controller's default_app_memory
DEFAULT_DISK_IN_MB = 1024  # default_app_disk_in_mb
MAXIMUM_DISK_IN_MB = 2048  # maximum_app_disk_in_mb
CREATE_KEYS = ("name", "command", "disk_in_mb", "memory_in_mb",
               "log_rate_limit_in_bytes_per_second", "droplet_guid", "template", "user",
               "metadata")
CANCELLED = "task was cancelled"
CELL_GONE = "cell disappeared before completion"
TERMINAL = ("SUCCEEDED", "FAILED")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Task:
    guid: str
    name: str
    command: str
    app_guid: str
    droplet_guid: str | None
    sequence_id: int
    memory_in_mb: int
    disk_in_mb: int
    log_path: Path
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    state: str = "RUNNING"
    failure_reason: str | None = None
    ending: str | None = None
    """Why the process is being ended (cancel, a vanished cell), reported when it exits."""
    process: subprocess.Popen[bytes] | None = None
    reaped: bool = False
    """The process has exited and its group was killed (the container is gone)."""

    def present(self, base: str) -> dict[str, Any]:
        url = f"{base}/v3/tasks/{self.guid}"
        return {
            "guid": self.guid, "created_at": self.created_at, "updated_at": self.updated_at,
            "sequence_id": self.sequence_id, "name": self.name, "command": self.command,
            "user": "vcap", "state": self.state, "memory_in_mb": self.memory_in_mb,
            "disk_in_mb": self.disk_in_mb, "log_rate_limit_in_bytes_per_second": -1,
            "result": {"failure_reason": self.failure_reason},
            "droplet_guid": self.droplet_guid,
            "relationships": {"app": {"data": {"guid": self.app_guid}}},
            "metadata": {"labels": {}, "annotations": {}},
            "links": {"self": {"href": url}, "app": {"href": f"{base}/v3/apps/{self.app_guid}"},
                      "cancel": {"href": f"{url}/actions/cancel", "method": "POST"},
                      "droplet": {"href": f"{base}/v3/droplets/{self.droplet_guid}"}},
        }


def task_route(method: str, path: str) -> bool:
    """Whether a request is for the task endpoints this module serves."""
    parts = path.split("/")[2:] if path.startswith("/v3/") else []
    return ((method == "POST" and len(parts) == 3 and parts[0] == "apps" and parts[2] == "tasks")
            or (method == "GET" and len(parts) == 2 and parts[0] == "tasks")
            or (method == "POST" and len(parts) == 4 and parts[0] == "tasks"
                and parts[2:] == ["actions", "cancel"]))


class Tasks:
    """The tasks of every app of the simulated foundation, each a local process group.

    ``env``: the environment every task gets (default: this process's); ``cwd``: where its
    command runs (default: this process's); ``grace_seconds``: how long a cancelled task has
    between SIGTERM and SIGKILL (Diego gives a stopping container 10 s)."""

    def __init__(self, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 grace_seconds: float = 10.0) -> None:
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.grace_seconds = grace_seconds
        self._tasks: dict[str, Task] = {}
        self._sequence: dict[str, int] = {}
        self._watchers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._log_dir = Path(tempfile.mkdtemp(prefix="cf-sim-tasks-"))

    # -- the endpoints -----------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes, scopes: frozenset[str], base: str,
               droplet_of: Callable[[str], tuple[bool, str | None]]) -> Response:
        """Answer one task request (``task_route`` said it is one). ``droplet_of(app_guid)``
        says whether the app exists and its current droplet."""
        parts = path.split("/")[2:]
        try:
            if method == "GET":
                if not scopes & READ_SCOPES:
                    raise not_authorized()
                return json_response(200, self._get(parts[1]).present(base))
            if not scopes & WRITE_SCOPES:
                raise not_authorized()
            if parts[0] == "apps":
                exists, droplet = droplet_of(parts[1])
                if not exists:
                    raise resource_not_found("App not found")
                return json_response(202, self._create(parts[1], droplet, body).present(base))
            return json_response(202, self._cancel(parts[1]).present(base))
        except ApiError as error:
            return error.response()

    def _get(self, guid: str) -> Task:
        with self._lock:
            task = self._tasks.get(guid)
        if task is None:
            raise resource_not_found("Task not found")
        return task

    def _create(self, app_guid: str, droplet: str | None, body: bytes) -> Task:
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise ApiError(400, "CF-MessageParseError", 1001,
                           f"Request invalid due to parse error: {exc}") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "CF-MessageParseError", 1001,
                           "Request invalid due to parse error: the body is not an object")
        extra = [key for key in payload if key not in CREATE_KEYS]
        if extra:
            raise unprocessable("Unknown field(s): '" + "', '".join(extra) + "'")
        command = payload.get("command")
        if not command:
            raise unprocessable("Command No command or template provided")
        if not isinstance(command, str):
            raise unprocessable("Command must be a string")
        if len(command) > COMMAND_MAX_LENGTH:
            raise unprocessable(f"command must be shorter than {COMMAND_MAX_LENGTH + 1} "
                                "characters")
        memory = _size(payload, "memory_in_mb", DEFAULT_MEMORY_IN_MB)
        disk = _size(payload, "disk_in_mb", DEFAULT_DISK_IN_MB)
        if "disk_in_mb" in payload and disk > MAXIMUM_DISK_IN_MB:
            raise unprocessable(f"Cannot request disk_in_mb greater than {MAXIMUM_DISK_IN_MB}")
        if droplet is None:
            raise unprocessable("Task must have a droplet. Specify droplet or assign current "
                                "droplet to app.")
        guid = str(uuid.uuid4())
        name = payload.get("name") or uuid.uuid4().hex[:8]
        with self._lock:
            sequence = self._sequence[app_guid] = self._sequence.get(app_guid, 0) + 1
            task = Task(guid, str(name), command, app_guid, droplet, sequence, memory, disk,
                        self._log_dir / f"{guid}.log")
            with task.log_path.open("wb") as log:
                task.process = subprocess.Popen(
                    ["bash", "-c", command], cwd=self.cwd, env=self.env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self._tasks[guid] = task
            watcher = threading.Thread(target=self._watch, args=(task,),
                                       name=f"cf-sim-task-{sequence}", daemon=True)
            self._watchers.append(watcher)
            created = replace(task)  # as it stands when the request is answered: RUNNING
        watcher.start()
        return created

    def _cancel(self, guid: str) -> Task:
        task = self._get(guid)
        with self._lock:
            if task.state in TERMINAL:
                raise unprocessable(f"Task state is {task.state} and therefore cannot be "
                                    "canceled")
            if task.state == "CANCELING":
                return task  # cancelling is idempotent
            task.state, task.updated_at, task.ending = "CANCELING", _now(), CANCELLED
            answer = replace(task)  # as it stands when the request is answered
        self._signal(task, signal.SIGTERM)
        timer = threading.Timer(self.grace_seconds, self._signal, (task, signal.SIGKILL))
        timer.daemon = True
        timer.start()
        return answer

    # -- what tests use --------------------------------------------------------------------

    def kill(self, guid: str) -> None:
        """SIGKILL a task's processes, as when the Diego cell running it disappears."""
        task = self._get(guid)
        with self._lock:
            if task.state in TERMINAL:
                return
            task.ending = CELL_GONE
        self._signal(task, signal.SIGKILL)

    def output(self, guid: str) -> str:
        """What the task's command wrote (stdout and stderr), as `cf logs` would show it."""
        return self._get(guid).log_path.read_text(errors="replace")

    def guids(self) -> list[str]:
        with self._lock:
            return list(self._tasks)

    def close(self) -> None:
        """Kill every task still running and wait for their watchers."""
        with self._lock:
            running = [t for t in self._tasks.values() if t.state not in TERMINAL]
            watchers = list(self._watchers)
        for task in running:
            self._signal(task, signal.SIGKILL)
        for watcher in watchers:
            watcher.join(timeout=10)

    # -- processes -------------------------------------------------------------------------

    def _watch(self, task: Task) -> None:
        assert task.process is not None
        status = task.process.wait()
        with self._lock:
            # the main process is gone, so is its container: nothing it started survives
            self._killpg(task.process.pid, signal.SIGKILL)
            task.reaped = True
            if task.ending is not None:
                task.state, task.failure_reason = "FAILED", task.ending
            elif status == 0:
                task.state = "SUCCEEDED"
            else:
                code = status if status > 0 else 128 - status  # killed by a signal: 128 + n
                task.state, task.failure_reason = "FAILED", f"Exited with status {code}"
            task.updated_at = _now()

    def _signal(self, task: Task, signum: int) -> None:
        with self._lock:  # never signal a reaped group: its id may belong to another by now
            if task.process is not None and not task.reaped:
                self._killpg(task.process.pid, signum)

    @staticmethod
    def _killpg(pgid: int, signum: int) -> None:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass


def _size(payload: Mapping[str, Any], key: str, default: int) -> int:
    value = payload.get(key)
    if value is None:
        return default
    label = key.replace("_", " ").capitalize()
    if not isinstance(value, int) or isinstance(value, bool):
        raise unprocessable(f"{label} must be an integer")
    if value <= 0:
        raise unprocessable(f"{label} must be greater than 0")
    return value
