"""A Cloud Foundry v3 API client: UAA auth, pagination, bounded retries, strict JSON.

Wire formats: docs/cf-and-uaa.md. The client never turns a failed read into an empty
one: every problem ends in a ``CfApiError`` that says which URL failed, how and what to do.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

MAX_PER_PAGE = 5000


class CfApiError(RuntimeError):
    """A Cloud Foundry or UAA call failed for good (after any retries)."""

    def __init__(self, message: str, *, url: str, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class Page:
    """One page of a v3 list: its resources and the parents asked for with ``include``."""

    resources: list[dict[str, Any]]
    included: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    next_url: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request, exponential backoff, and the longest wait."""

    max_attempts: int = 5
    backoff_seconds: float = 0.5
    max_wait_seconds: float = 60.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_wait_seconds, self.backoff_seconds * 2 ** (attempt - 1))


class _Retryable(Exception):
    """A failure worth another attempt; ``sent``: the request may have been acted on."""

    def __init__(self, reason: str, wait: float, *, sent: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.sent = sent


class CloudFoundryClient:
    """Reads the v3 API of one foundation as one UAA client (client-credentials grant)."""

    def __init__(
        self,
        api_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        refresh_margin_seconds: float = 60.0,
        per_page: int = MAX_PER_PAGE,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be 1..{MAX_PER_PAGE}, got {per_page}")
        self.api_url = api_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._retry = retry or RetryPolicy()
        self._refresh_margin = refresh_margin_seconds
        self._per_page = per_page
        self._now = now
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout_seconds, headers={"Accept": "application/json"})
        self._token_url: str | None = None
        self._unreachable: CfApiError | None = None
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.token_fetches = 0
        self._token_lock = threading.Lock()
        self._token_fetches_ended = 0
        self._token_error: CfApiError | None = None

    def __enter__(self) -> CloudFoundryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- auth ------------------------------------------------------------------------------

    def access_token(self) -> str:
        """A valid bearer token, fetched again when it is within the margin of its ``exp``.
        Threads reading at once (a snapshot's lists) share one fetch: the first fetches, the
        others wait for it, so UAA sees one token request, not one per thread; when that fetch
        fails (after its retries), the threads that waited for it fail with its error instead of
        each trying again."""
        fetches_before = self._token_fetches_ended
        with self._token_lock:
            if self._token_error is not None and self._token_fetches_ended != fetches_before:
                raise self._token_error
            if self._token is None or self._now() >= self._token_expires_at - self._refresh_margin:
                try:
                    self._token, self._token_expires_at = self._fetch_token()
                    self._token_error = None
                except CfApiError as exc:
                    self._token_error = exc
                    raise
                finally:
                    self._token_fetches_ended += 1
            return self._token

    def _discover_token_url(self) -> str:
        """The UAA token endpoint, from the API root's ``links.uaa`` (as go-cfclient does)."""
        if self._token_url is not None:
            return self._token_url
        if self._unreachable is not None:  # tried and failed: every later read fails as fast
            raise self._unreachable
        try:
            root = self._send("GET", self.api_url + "/", authenticated=False)
        except CfApiError as exc:
            self._unreachable = CfApiError(
                f"cannot reach the Cloud Foundry API root {self.api_url}/ (CF_API_URL): {exc} "
                "Check CF_API_URL (for example https://api.fr.cloud.gov) and the network.",
                url=exc.url, status=exc.status)
            raise self._unreachable from exc
        try:
            token_url: str = root["links"]["uaa"]["href"].rstrip("/") + "/oauth/token"
        except (KeyError, TypeError, AttributeError):
            raise CfApiError(
                f"GET {self.api_url}/ has no links.uaa.href: is CF_API_URL the API root "
                "(for example https://api.fr.cloud.gov)?", url=self.api_url + "/") from None
        self._token_url = token_url
        return token_url

    def _fetch_token(self) -> tuple[str, float]:
        token_url = self._discover_token_url()
        try:
            body = self._send(
                "POST", token_url, authenticated=False,
                data={"grant_type": "client_credentials"},
                auth=(self._client_id, self._client_secret),
            )
        except CfApiError as exc:
            if exc.status == 401:
                raise CfApiError(
                    f"UAA at {token_url} refused client {self._client_id!r}: check "
                    "CF_CLIENT_ID and CF_CLIENT_SECRET", url=exc.url, status=401) from exc
            raise
        token = body.get("access_token")
        if not isinstance(token, str):
            raise CfApiError("UAA token response has no access_token", url=token_url)
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            expires_at = float(claims["exp"])
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError) as exc:
            raise CfApiError(f"UAA returned an access token without a readable exp: {exc}",
                             url=token_url) from exc
        self.token_fetches += 1
        log.info("fetched a UAA token for client %s, valid until %s", self._client_id,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)))
        return token, expires_at

    # -- requests --------------------------------------------------------------------------

    def get(self, path_or_url: str, params: Mapping[str, str | int] | None = None) -> Any:
        """GET one v3 document (authenticated, retried, JSON-checked)."""
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url
        return self._send("GET", url, params=params)

    def post(self, path_or_url: str, body: Mapping[str, Any] | None = None, *,
             idempotent: bool = False) -> Any:
        """POST a JSON body (authenticated, JSON-checked). A request that may not be repeated
        (``idempotent=False``: it creates something) is retried only when it cannot have
        reached the Cloud Controller (no connection, or a 429); a time-out, a 5xx or a garbled
        reply fails at once, since a second attempt could create a second one."""
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url
        return self._send("POST", url, json=dict(body) if body is not None else None,
                          retry_unsure=idempotent)

    def pages(self, path: str, params: Mapping[str, str | int] | None = None) -> Iterator[Page]:
        """Every page of a v3 list, following ``pagination.next`` until it is null."""
        url: str | None = self.api_url + path
        query: Mapping[str, str | int] | None = {"per_page": self._per_page, **(params or {})}
        seen = 0
        followed: set[str] = set()
        while url is not None:
            document = self._send("GET", url, params=query)
            page = _parse_page(document, url)
            seen += len(page.resources)
            log.debug("GET %s: %d resources (%d so far)", url, len(page.resources), seen)
            yield page
            followed.add(url)
            if page.next_url in followed:  # a paging bug: following it would never end
                raise CfApiError(
                    f"GET {url}: pagination.next links to a page already read "
                    f"({page.next_url}), so the list would never end. Nothing from this read "
                    "was treated as complete; the next run reads it again.", url=url)
            url, query = page.next_url, None  # the next href already carries every parameter

    def list_all(self, path: str, params: Mapping[str, str | int] | None = None) -> Page:
        """All pages of a list merged into one (resources and included parents)."""
        resources: list[dict[str, Any]] = []
        included: dict[str, list[dict[str, Any]]] = {}
        for page in self.pages(path, params):
            resources.extend(page.resources)
            for kind, parents in page.included.items():
                included.setdefault(kind, []).extend(parents)
        return Page(resources, included)

    def _send(self, method: str, url: str, *, authenticated: bool = True,
              retry_unsure: bool = True, **kwargs: Any) -> Any:
        attempt = 0
        refreshed_after_401 = False
        while True:
            attempt += 1
            headers = {"Authorization": f"Bearer {self.access_token()}"} if authenticated else {}
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
                if response.status_code == 401 and authenticated and not refreshed_after_401:
                    refreshed_after_401 = True  # revoked or clock-skewed token: get a new one
                    self._token = None
                    attempt -= 1
                    continue
                return self._decode(method, response)
            except httpx.TimeoutException as exc:
                failure = _Retryable(f"timed out ({type(exc).__name__})",
                                     self._retry.backoff(attempt),
                                     sent=not isinstance(exc, httpx.ConnectTimeout))
            except httpx.TransportError as exc:
                failure = _Retryable(f"transport error: {exc}", self._retry.backoff(attempt),
                                     sent=not isinstance(exc, httpx.ConnectError))
            except _Retryable as exc:
                failure = exc if exc.wait >= 0 else _Retryable(exc.reason,
                                                               self._retry.backoff(attempt),
                                                               sent=exc.sent)
            if failure.sent and not retry_unsure:
                raise CfApiError(
                    f"{method} {url} failed: {failure.reason.rstrip('.')}. It was not repeated: "
                    "the Cloud Controller may have acted on it; look before trying again.",
                    url=url)
            if attempt >= self._retry.max_attempts:
                raise CfApiError(
                    f"{method} {url} failed {attempt} times, last: {failure.reason.rstrip('.')}. "
                    "Nothing from this read was treated as usage; the next run retries it.",
                    url=url)
            wait = min(failure.wait, self._retry.max_wait_seconds)
            log.warning("%s %s: %s; retry %d/%d in %.1fs", method, url, failure.reason,
                        attempt, self._retry.max_attempts - 1, wait)
            self._sleep(wait)

    def _decode(self, method: str, response: httpx.Response) -> Any:
        status = response.status_code
        url = str(response.request.url)
        if status == 429:
            raise _Retryable("429 rate limited", self._rate_limit_wait(response), sent=False)
        if status >= 500:
            raise _Retryable(f"{status} {_error_detail(response)}", -1)
        if status >= 400:
            raise CfApiError(f"{method} {url} returned {status}: {_error_detail(response)}",
                             url=url, status=status)
        try:
            with collector_paused():
                return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Retryable(f"malformed JSON ({len(response.content)} bytes, {exc})", -1) from exc

    def _rate_limit_wait(self, response: httpx.Response) -> float:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.strip().isdigit():
            return float(retry_after)
        reset = response.headers.get("X-RateLimit-Reset", "")
        if reset.strip().isdigit():
            return max(0.0, float(reset) - self._now())
        return -1  # no hint: exponential backoff


def _parse_page(document: Any, url: str) -> Page:
    """Check the v3 list envelope; a missing part is an error, never an empty page."""
    if not isinstance(document, dict):
        raise CfApiError(f"GET {url} did not return a JSON object", url=url)
    resources = document.get("resources")
    pagination = document.get("pagination")
    if not isinstance(resources, list) or not isinstance(pagination, dict):
        raise CfApiError(f"GET {url} is not a v3 list: 'resources' or 'pagination' missing",
                         url=url)
    next_link = pagination.get("next")
    next_url = next_link.get("href") if isinstance(next_link, dict) else None
    included = document.get("included") or {}
    return Page(resources, included if isinstance(included, dict) else {}, next_url)


def _error_detail(response: httpx.Response) -> str:
    """The CF error title and detail, or the start of the body when it is not a CF error."""
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('title')}: {e.get('detail')}" for e in errors) or "no detail"
    except (ValueError, AttributeError):
        return response.text[:200] or "empty body"


_paused = 0
_paused_lock = threading.Lock()
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while the block runs (threads may nest it).

    Decoding a page allocates some 100k dicts and lists; each allocation counts towards a
    collection, and a full collection walks every object the process holds, the pages read
    before included: decoding the 61 pages of a 100k-app snapshot took 7.1 s, 1.8 s with the
    collector paused (a page 20-40 ms paused, up to 1 s not; bench.snapshot). Decoded JSON
    holds no reference cycles, so pausing it misses nothing; objects freed meanwhile are freed
    by their reference counts as always."""
    global _paused, _was_enabled
    with _paused_lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()
