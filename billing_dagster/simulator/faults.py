"""Switchable faults: the next N matching requests fail in a chosen way.

Kinds:

- ``429``: rate limited, with ``Retry-After``, the ``X-RateLimit-*`` headers and the
  CF-RateLimitExceeded body, sent as ``text/plain`` like the real limiter
  (docs/cf-and-uaa.md §6.2);
- ``500``, ``502``, ``503``: a server error with a v3 error body;
- ``slow``: the reply is delayed by ``delay_seconds``, then served normally;
- ``truncate``: the normal reply with its body cut in half (Content-Length matches the cut);
- ``malformed``: status 200, JSON content type, a body that is not JSON;
- ``drop_guid``: valid JSON whose last listed resource has no ``guid``;
- ``401``: CF-InvalidAuthToken, as CF answers a token that expired during a read;
- ``repeat_next``: a list page whose ``pagination.next`` links back to the page itself.

A fault may let ``skip`` matching requests through first, so it can hit the middle of a read.
"""

import json
import threading
import time
from dataclasses import asdict, dataclass

from billing_dagster.simulator.responses import Response, cf_error_body, dump_json

FAULT_KINDS: tuple[str, ...] = ("429", "500", "502", "503", "slow", "truncate", "malformed",
                                "drop_guid", "401", "repeat_next")
ERROR_KINDS = frozenset({"429", "500", "502", "503", "401"})
CORRUPTING_KINDS = frozenset({"truncate", "malformed", "drop_guid", "repeat_next"})
MALFORMED_BODY = b"<html><body><h1>502 Bad Gateway</h1>upstream reset</body></html>"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    path_prefix: str = "/v3/"
    retry_after: int = 1
    delay_seconds: float = 2.0
    skip: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {FAULT_KINDS}")
        if self.retry_after < 0 or self.delay_seconds < 0 or self.skip < 0:
            raise ValueError("retry_after, delay_seconds and skip must be >= 0")


class FaultQueue:
    """Pending faults in the order they were injected, each with the matching requests it
    still lets through (its ``skip``) and the requests it has left to hit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[Fault, int, int]] = []  # (fault, to let through, to hit)
        self.served = 0  # faulty replies served since the queue was made

    def add(self, fault: Fault, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._entries.append((fault, fault.skip, count))

    def clear(self) -> int:
        """Drop every pending fault; returns how many requests they would still have hit."""
        with self._lock:
            left = sum(count for _, _, count in self._entries)
            self._entries.clear()
            return left

    def take(self, path: str) -> Fault | None:
        """The first pending fault whose prefix matches ``path``, using up one of its count
        (or, while it still lets requests through, one of those: then None)."""
        with self._lock:
            for index, (fault, skip, count) in enumerate(self._entries):
                if path.startswith(fault.path_prefix):
                    if skip > 0:
                        self._entries[index] = (fault, skip - 1, count)
                        return None
                    self.served += 1
                    if count == 1:
                        del self._entries[index]
                    else:
                        self._entries[index] = (fault, 0, count - 1)
                    return fault
        return None

    def pending(self) -> list[dict[str, object]]:
        with self._lock:
            return [{**asdict(fault), "count": count} for fault, _, count in self._entries]


_SERVER_ERRORS: dict[str, tuple[int, str, int, str]] = {
    "500": (500, "UnknownError", 10001, "An unknown error occurred."),
    "502": (502, "UnknownError", 10001, "Bad Gateway: the upstream server failed to respond."),
    "503": (503, "CF-ServiceUnavailable", 10015, "Service Unavailable"),
}


def error_reply(fault: Fault) -> Response:
    """The whole reply of a ``429`` or 5xx fault."""
    if fault.kind == "429":
        reset = int(time.time()) + fault.retry_after
        return Response(
            status=429,
            body=dump_json(cf_error_body("CF-RateLimitExceeded", 10013, "Rate Limit Exceeded")),
            content_type="text/plain; charset=utf-8",
            headers=(
                ("Retry-After", str(fault.retry_after)),
                ("X-RateLimit-Limit", "20000"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", str(reset)),
            ),
        )
    if fault.kind == "401":
        return Response(status=401, body=dump_json(cf_error_body(
            "CF-InvalidAuthToken", 1000, "Invalid Auth Token")))
    status, title, code, detail = _SERVER_ERRORS[fault.kind]
    headers = (("Retry-After", str(fault.retry_after)),) if fault.kind == "503" else ()
    return Response(status=status, body=dump_json(cf_error_body(title, code, detail)),
                    headers=headers)


def corrupt(response: Response, fault: Fault, url: str) -> Response:
    """Apply a ``truncate``, ``malformed``, ``drop_guid`` or ``repeat_next`` fault to an
    otherwise normal reply to ``url``.

    ``drop_guid`` is valid JSON whose last listed resource has lost its ``guid``: a record a
    reader must reject by name, not a transport failure to retry. ``repeat_next`` points the
    page's next link at ``url`` itself, as a paginator bug would: a reader that follows it
    reads the same page again, forever if the fault lasts.
    """
    if fault.kind == "truncate":
        return Response(response.status, response.body[: len(response.body) // 2],
                        response.content_type, response.headers)
    if fault.kind == "drop_guid":
        document = json.loads(response.body)
        if document.get("resources"):
            document["resources"][-1].pop("guid", None)
        return Response(response.status, dump_json(document), response.content_type,
                        response.headers)
    if fault.kind == "repeat_next":
        document = json.loads(response.body)
        if isinstance(document.get("pagination"), dict):
            document["pagination"]["next"] = {"href": url}
        return Response(response.status, dump_json(document), response.content_type,
                        response.headers)
    return Response(200, MALFORMED_BODY, response.content_type, response.headers)
