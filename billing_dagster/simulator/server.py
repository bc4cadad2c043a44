"""The simulator's HTTP server: Cloud Controller v3 subset, UAA under ``/uaa``, control endpoints.

One ``ThreadingHTTPServer`` on loopback, HTTP/1.1 with keep-alive, run in a daemon thread.
Every foundation read or change happens under one lock, so a page is always cut from one
consistent state and ``advance_to`` never interleaves with a request.

Control endpoints (no auth, never faulted, not counted in ``requests``):

- ``GET /_sim/clock`` -> ``{"now": "2025-03-01T00:00:00Z"}``; ``POST /_sim/clock`` with
  ``{"now": "<iso>"}`` advances virtual time;
- ``POST /_sim/faults`` with ``{"kind", "count", "path_prefix", "retry_after",
  "delay_seconds", "skip"}`` queues a fault, ``DELETE /_sim/faults`` clears them, ``GET``
  lists them;
- ``GET /_sim/stats`` -> ``{"token_requests", "requests", "now", "apps", "processes",
  "service_instances", "app_events", "service_events"}``;
- ``POST /_sim/tasks/<guid>/kill`` kills a task's processes as a vanished Diego cell would
  (``tasks.py``);
- ``GET /_sim/usage?start=<iso>&end=<iso>`` -> the oracle: what really ran in each UTC hour of
  the window (whole hours, from the foundation's start up to virtual now), as ``{"start",
  "end", "known_from", "rows": [{"hour_start", "meter", "resource", "kind", "unit_seconds",
  "space_guid", "org_guid"}]}`` (see ``oracle``); 400 with the reason for any other window.
"""

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from billing_dagster.simulator import cc_api
from billing_dagster.simulator.faults import (
    CORRUPTING_KINDS,
    ERROR_KINDS,
    Fault,
    FaultQueue,
    corrupt,
    error_reply,
)
from billing_dagster.simulator.foundation import Foundation
from billing_dagster.simulator.responses import ApiError, Response, cf_error_body, json_response
from billing_dagster.simulator.tasks import Tasks, task_route
from billing_dagster.simulator.uaa import DEFAULT_AUTHORITIES, TASK_AUTHORITIES, TASK_CLIENT, Uaa

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_sim/"
UAA_PREFIX = "/uaa"
_IDLE_CONNECTION_SECONDS = 120


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _last_values(query: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}


class Simulator:
    """A loopback CF API + UAA serving one Foundation; use as ``with Simulator(f) as sim:``.

    Besides the main client (``client_id``, ``authorities``), the UAA knows ``task_client``
    (id, secret), which may run tasks. A task's command runs as a local process with
    ``task_env`` (default: this process's environment) in ``task_cwd`` (``tasks.py``).
    """

    def __init__(
        self,
        foundation: Foundation,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "billing",
        client_secret: str = "billing-secret",
        token_validity_seconds: int = 43_200,
        follow_wall_clock: bool = False,
        authorities: Sequence[str] = DEFAULT_AUTHORITIES,
        task_client: tuple[str, str] = TASK_CLIENT,
        task_env: Mapping[str, str] | None = None,
        task_cwd: Path | None = None,
        task_grace_seconds: float = 10.0,
    ) -> None:
        self._foundation = foundation
        self._host = host
        self._port = port
        self._follow_wall_clock = follow_wall_clock
        self._uaa = Uaa(client_id, client_secret, authorities, token_validity_seconds,
                        other_clients={task_client[0]: (task_client[1], TASK_AUTHORITIES)})
        self._tasks = Tasks(task_env, task_cwd, task_grace_seconds)
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._token_requests = 0
        self._requests: list[tuple[str, str]] = []
        self._faults = FaultQueue()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Simulator":
        """Bind (port 0 = any free port) and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((self._host, self._port), self)
        host, port = server.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self._url = f"http://{shown}:{port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"cf-simulator-{port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and release the port."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._tasks.close()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "Simulator":
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- public state ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:54321`` (UAA is at ``url + "/uaa"``)."""
        if self._url is None:
            raise RuntimeError("simulator not started: call start() or use it as a context")
        return self._url

    @property
    def uaa_url(self) -> str:
        return self.url + UAA_PREFIX

    @property
    def foundation(self) -> Foundation:
        """The served foundation; read it under ``with sim.lock:`` while the server runs."""
        return self._foundation

    @property
    def lock(self) -> threading.Lock:
        """The lock every request holds while it reads or changes the foundation."""
        return self._lock

    @property
    def client_id(self) -> str:
        return self._uaa.client_id

    @property
    def tasks(self) -> Tasks:
        """The tasks run so far (``kill``, ``output``, ``guids``; ``tasks.py``)."""
        return self._tasks

    @property
    def token_requests(self) -> int:
        """Requests answered by ``POST /uaa/oauth/token`` (faulted ones not included)."""
        with self._stats_lock:
            return self._token_requests

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path with query) of every non-control request, in arrival order (a copy)."""
        with self._stats_lock:
            return list(self._requests)

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._token_requests = 0
            self._requests.clear()

    def advance_to(self, t: datetime) -> None:
        """Move virtual time forward (thread-safe; ValueError if ``t`` is in the past)."""
        with self._lock:
            self._foundation.advance_to(t)

    def inject_fault(
        self,
        kind: str,
        *,
        count: int = 1,
        path_prefix: str = "/v3/",
        retry_after: int = 1,
        delay_seconds: float = 2.0,
        skip: int = 0,
    ) -> None:
        """Make the next ``count`` requests whose path starts with ``path_prefix`` fail, after
        letting ``skip`` of them through.

        ``kind``: one of ``faults.FAULT_KINDS`` (see ``faults``). Faults queue in order: the
        first pending one that matches is used.
        """
        self._faults.add(Fault(kind, path_prefix, retry_after, delay_seconds, skip), count)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> list[dict[str, object]]:
        return self._faults.pending()

    @property
    def faults_served(self) -> int:
        """Faulty replies served so far (each request a fault hit counts once)."""
        return self._faults.served

    # -- request handling (called from server threads) -------------------------------------

    def respond(self, method: str, target: str, headers: Any, body: bytes) -> Response:
        """Produce the reply to one request; never raises."""
        try:
            split = urlsplit(target)
            path = split.path or "/"
            if path.startswith(CONTROL_PREFIX):
                return self._control(method, path, _last_values(split.query), body)
            with self._stats_lock:
                self._requests.append((method, target))
            fault = self._faults.take(path)
            if fault is not None and fault.kind in ERROR_KINDS:
                return error_reply(fault)
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay_seconds)
            response = self._serve(method, path, _last_values(split.query), headers, body)
            if fault is not None and fault.kind in CORRUPTING_KINDS:
                response = corrupt(response, fault, self.url + target)
            return response
        except Exception:
            log.exception("simulator failed on %s %s", method, target)
            return json_response(
                500, cf_error_body("UnknownError", 10001, "An unknown error occurred.")
            )

    def _serve(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> Response:
        if self._follow_wall_clock:
            self._catch_up_with_wall_clock()
        base = self.url
        if path == UAA_PREFIX or path.startswith(UAA_PREFIX + "/"):
            return self._serve_uaa(method, path[len(UAA_PREFIX):], query, headers, body)
        scopes: frozenset[str] = frozenset()
        if cc_api.requires_auth(path):
            try:
                scopes = self._uaa.verify(headers.get("Authorization"), self.uaa_url)
            except ApiError as error:
                return error.response()
        if task_route(method, path):
            return self._tasks.handle(method, path, body, scopes, base, self._droplet_of)
        request = cc_api.CcRequest(method, path, query, base, scopes)
        with self._lock:
            return cc_api.handle(self._foundation, request)

    def _droplet_of(self, app_guid: str) -> tuple[bool, str | None]:
        with self._lock:
            app = self._foundation.apps.get(app_guid)
        return (app is not None, app.droplet_guid if app is not None else None)

    def _catch_up_with_wall_clock(self) -> None:
        wall = datetime.now(UTC)
        with self._lock:
            if wall > self._foundation.now:
                self._foundation.advance_to(wall)

    def _serve_uaa(self, method: str, path: str, query: dict[str, str], headers: Any,
                   body: bytes) -> Response:
        uaa_base = self.uaa_url
        logins = self._uaa.logins
        if method == "GET" and path == "/oauth/authorize":
            return logins.authorize(query, uaa_base)
        if method == "POST" and path == "/login.do":
            return logins.login(_last_values(body.decode("utf-8", errors="replace")), uaa_base)
        if method == "GET" and path == "/logout.do":
            return logins.logout(query)
        if method == "POST" and path == "/oauth/token":
            form = _last_values(body.decode("utf-8", errors="replace"))
            with self._stats_lock:
                self._token_requests += 1
            return self._uaa.token(form, headers.get("Authorization"), uaa_base)
        if method == "GET" and path == "/token_keys":
            return self._uaa.token_keys()
        if method == "GET" and path == "/token_key":
            return json_response(200, self._uaa.jwk())
        if method == "GET" and path in (
            "/.well-known/openid-configuration", "/oauth/token/.well-known/openid-configuration"
        ):
            return self._uaa.openid_configuration(uaa_base)
        return json_response(404, {"error": "not_found", "error_description": "Not Found"})

    # -- control endpoints -----------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> Response:
        try:
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            if path == "/_sim/clock" and method == "GET":
                return json_response(200, {"now": _iso(self._foundation_now())})
            if path == "/_sim/clock" and method == "POST":
                if "now" not in payload:
                    raise ValueError('give the new virtual time as {"now": "<ISO 8601>"}')
                moment = datetime.fromisoformat(str(payload["now"]))
                self.advance_to(moment)
                return json_response(200, {"now": _iso(self._foundation_now())})
            if path == "/_sim/faults" and method == "POST":
                self.inject_fault(
                    str(payload.get("kind", "")),
                    count=int(payload.get("count", 1)),
                    path_prefix=str(payload.get("path_prefix", "/v3/")),
                    retry_after=int(payload.get("retry_after", 1)),
                    delay_seconds=float(payload.get("delay_seconds", 2.0)),
                    skip=int(payload.get("skip", 0)),
                )
                return json_response(201, {"faults": self.pending_faults})
            if path == "/_sim/faults" and method == "GET":
                return json_response(200, {"faults": self.pending_faults})
            if path == "/_sim/faults" and method == "DELETE":
                self.clear_faults()
                return json_response(200, {"faults": []})
            if path == "/_sim/stats" and method == "GET":
                return json_response(200, self._stats())
            if path == "/_sim/usage" and method == "GET":
                return json_response(200, self._true_usage(query))
            parts = path.split("/")
            if method == "POST" and len(parts) == 5 and parts[2:5:2] == ["tasks", "kill"]:
                self._tasks.kill(parts[3])
                return json_response(200, {"killed": parts[3]})
        except ApiError as error:
            return error.response()
        except (ValueError, TypeError) as error:
            return json_response(400, {"error": str(error)})
        return json_response(404, {"error": f"no control endpoint {method} {path}"})

    def _true_usage(self, query: dict[str, str]) -> dict[str, object]:
        missing = [name for name in ("start", "end") if not query.get(name)]
        if missing:
            raise ValueError(f"give the window as ?start=<ISO 8601>&end=<ISO 8601> (whole UTC "
                             f"hours); missing: {', '.join(missing)}")
        start, end = (datetime.fromisoformat(query[name]) for name in ("start", "end"))
        with self._lock:
            rows = self._foundation.true_usage(start, end)
            known_from = self._foundation.start
        return {"start": _iso(start), "end": _iso(end), "known_from": _iso(known_from),
                "rows": [row.as_json() for row in rows]}

    def _foundation_now(self) -> datetime:
        with self._lock:
            return self._foundation.now

    def _stats(self) -> dict[str, object]:
        with self._lock:
            foundation = self._foundation
            counts = {
                "now": _iso(foundation.now),
                "apps": len(foundation.apps),
                "processes": len(foundation.processes),
                "service_instances": len(foundation.service_instances),
                "app_events": len(foundation.app_events),
                "service_events": len(foundation.service_events),
            }
        with self._stats_lock:
            return {
                "token_requests": self._token_requests,
                "requests": [list(request) for request in self._requests],
                **counts,
            }


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the Simulator for the reply, writes it with Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "cf-simulator"
    timeout = _IDLE_CONNECTION_SECONDS
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        server = self.server
        assert isinstance(server, _Server)
        response = server.simulator.respond(self.command, self.path, self.headers, body)
        try:
            self._write(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout): nothing to tell it

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-VCAP-Request-ID", str(uuid.uuid4()))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines of BaseHTTPRequestHandler."""


class _Server(ThreadingHTTPServer):
    """Threaded server that can drop its open keep-alive connections when stopping."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
