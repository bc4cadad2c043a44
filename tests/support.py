"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import quote, urljoin, urlsplit

import httpx
import uvicorn
from psycopg.conninfo import conninfo_to_dict

from billing_dagster.cf.client import CloudFoundryClient, RetryPolicy
from billing_dagster.simulator import Simulator

SIM_START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SIM_CLIENT = ("billing", "billing-secret")
T = TypeVar("T")


def cf_client(sim: Simulator, **options) -> CloudFoundryClient:
    """A client of the simulator that retries fast (tests measure behaviour, not waiting)."""
    options.setdefault("retry", RetryPolicy(max_attempts=3, backoff_seconds=0.01,
                                            max_wait_seconds=0.05))
    return CloudFoundryClient(sim.url, *SIM_CLIENT, **options)


def log_in(client: httpx.Client, base: str, user: str, password: str | None = None,
           next_path: str = "/") -> httpx.Response:
    """A browser's walk through the login: the UI's redirect, UAA's form, the callback.
    Returns the last answer: the callback's (a redirect with the session cookie), or UAA's
    form again when it refused the password."""
    form_page = client.get(base + next_path, headers={"Accept": "text/html"})
    hops = []
    while form_page.status_code == 302:
        hops.append(urlsplit(form_page.headers["location"]).path)
        form_page = client.get(urljoin(str(form_page.url), form_page.headers["location"]))
    assert hops[-1] == "/uaa/oauth/authorize", hops
    assert form_page.status_code == 200 and 'id="sign-in"' in form_page.text
    form = re.search(r'<form method="post" action="([^"]+)"', form_page.text)
    assert form is not None, form_page.text
    action = unescape(form[1])
    fields = {unescape(name): unescape(value) for name, value in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form_page.text)}
    back = client.post(action, data={**fields, "username": user,
                                     "password": password or f"{user}-password"})
    if back.status_code != 302:
        return back
    return client.get(back.headers["location"])


def conninfo_as_url(conninfo: str, scheme: str = "postgresql") -> str:
    """A libpq key-value conninfo as a URL (as a binding or DATABASE_URL gives it); a socket
    directory (the embedded server) goes in the ``host`` query parameter."""
    p = conninfo_to_dict(conninfo)
    host, port = str(p.get("host") or "127.0.0.1"), p.get("port") or 5432
    if host.startswith("/"):
        return f"{scheme}://{p['user']}@:{port}/{p['dbname']}?host={quote(host, safe='')}"
    return f"{scheme}://{p['user']}@{host}:{port}/{p['dbname']}"


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AwsFaultProxy:
    """A loopback HTTP proxy in front of the embedded AWS that answers chosen requests with a
    fault instead of forwarding them: ``throttle`` (HTTP 400 with the query protocol's
    ``Throttling`` error, as RDS sends it) or ``503`` (an empty Service Unavailable, as any
    AWS service may send). A request is chosen when ``match`` occurs in its method, path,
    ``X-Amz-Target`` header or body (``Action=DescribeDBInstances``, ``GetMetricData``).
    Everything else is forwarded unchanged; ``url`` is what boto3 is pointed at."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.match = ""
        self.kind = ""
        self.remaining = 0
        self.served = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._take(self.command, self.path,
                                    self.headers.get("X-Amz-Target", ""), body)
                if fault == "throttle":
                    self._reply(400, {"Content-Type": "text/xml"}, _THROTTLING)
                    return
                if fault == "503":
                    self._reply(503, {}, b"")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.request(self.command, proxy.upstream + self.path, content=body,
                                       headers=headers, timeout=30)
                self._reply(answer.status_code,
                            {k: v for k, v in answer.headers.items()
                             if k.lower() not in _HOP_HEADERS}, answer.content)

            def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def inject(self, kind: str, *, count: int, match: str) -> None:
        """The next ``count`` requests holding ``match`` get fault ``kind``."""
        if kind not in ("throttle", "503"):
            raise ValueError(f"unknown AWS fault {kind!r}: use 'throttle' or '503'")
        with self._lock:
            self.kind, self.remaining, self.match = kind, count, match

    def clear(self) -> None:
        with self._lock:
            self.remaining = 0

    def _take(self, method: str, path: str, target: str, body: bytes) -> str | None:
        text = f"{method} {path} {target} " + body.decode("latin-1")
        with self._lock:
            if self.remaining > 0 and self.match in text:
                self.remaining -= 1
                self.served += 1
                return self.kind
        return None

    def __enter__(self) -> AwsFaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


_THROTTLING = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
               b"<Message>Rate exceeded</Message></Error><RequestId>t</RequestId>"
               b"</ErrorResponse>")
# hop-by-hop headers and the length, which the proxy sets itself
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive",
                "content-encoding"}


def wait_until(condition: Callable[[], T | None], seconds: float, what: str,
               deployment_logs: Callable[[], str] = str) -> T:
    """Poll ``condition`` (once a second, at most ``seconds``) until it returns something
    true; an HTTP error counts as not yet. Fails naming ``what``, with the processes' logs."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}\n{deployment_logs()}")
        time.sleep(1)


@contextmanager
def served(app, port: int) -> Iterator[str]:
    """An ASGI app served by uvicorn on loopback (in a thread) while the block runs; its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off", loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
