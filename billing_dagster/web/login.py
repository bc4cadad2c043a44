"""The login in front of the Dagster UI: OpenID Connect against cloud.gov's UAA.

``UaaLogin`` wraps the webserver's ASGI app (pages, ``/graphql`` over HTTP and its websocket,
static files, everything). Nothing is served without a valid session except ``/healthz`` and
the login's own ``/auth/*`` routes:

- ``/auth/login`` starts the authorization-code flow (with PKCE and a ``state`` kept in a
  signed, short-lived cookie) at the UAA discovered from the CF API root;
- ``/auth/callback`` trades the code for the user's access token, verifies it against UAA's
  ``/token_keys`` (RS256, issuer, audience = our client, expiry) and keeps it as the session
  cookie (HttpOnly, SameSite=Lax, Secure over https), which expires with the token;
- ``/auth/logout`` drops the cookie and ends the UAA session.

Every request verifies the session token again (the keys are cached). The token's scopes decide
the role: the operator scope (``usage.admin``) may do anything the UI offers; the reader scope
(``usage.read``) may look at everything, but GraphQL mutations (launching runs and backfills,
turning schedules and sensors on and off, wiping, terminating) and the asset-reporting POST
endpoints are refused with 403, over HTTP and over the websocket; only mutations that change
nothing but the reader's own view (``HARMLESS_MUTATIONS``: dismissing the community pop-up) pass.
The webserver behind gives readers Dagster's read-only request context too (web/app.py), so the
UI does not offer them what the login would refuse. A browser without a session is
redirected to the login; an API call or a websocket is refused (401, close 4401). Tokens and
secrets are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from html import escape
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import jwt
from graphql import FieldNode, OperationDefinitionNode, OperationType, parse
from graphql.error import GraphQLError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "billing_session"
LOGIN_COOKIE = "billing_login"
LOGIN_COOKIE_SECONDS = 600
OPEN_PATHS = frozenset({"/healthz"})
# top-level mutation fields a reader may run: setNuxSeen records that the community pop-up
# was seen (the UI sends it when anyone dismisses it)
HARMLESS_MUTATIONS = frozenset({"setNuxSeen"})
# POST endpoints of the webserver that write to the instance (outside GraphQL)
REPORTING_PREFIXES = ("/report_asset_materialization/", "/report_asset_check/",
                      "/report_asset_observation/")


class LoginConfigError(ValueError):
    """A login setting is missing or wrong; the message names it and the fix."""


@dataclass(frozen=True)
class LoginSettings:
    """What the login needs; see README, "Deploying on cloud.gov", for each variable."""

    cf_api_url: str  # CF_API_URL: the UAA is discovered from its root
    client_id: str  # UI_CLIENT_ID: a UAA client with the authorization_code grant
    client_secret: str  # UI_CLIENT_SECRET
    public_url: str  # UI_URL: where people reach the UI; /auth/callback is under it
    session_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    reader_scope: str = "usage.read"
    operator_scope: str = "usage.admin"

    def __post_init__(self) -> None:
        for name, value in (("CF_API_URL", self.cf_api_url), ("UI_CLIENT_ID", self.client_id),
                            ("UI_CLIENT_SECRET", self.client_secret),
                            ("UI_URL", self.public_url)):
            if not value:
                raise LoginConfigError(f"{name} is not set: the UI's login needs it "
                                       "(see README, 'Deploying on cloud.gov')")
        if urlsplit(self.public_url).scheme not in ("http", "https"):
            raise LoginConfigError(f"UI_URL {self.public_url!r} is not an http(s) URL: set it "
                                   "to where people open the UI, e.g. https://billing.app.cloud.gov")

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + "/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")


@dataclass(frozen=True)
class Session:
    user_name: str
    scopes: frozenset[str]
    expires_at: int


@dataclass
class Uaa:
    """The UAA's endpoints (from OpenID discovery) and its signing keys (cached)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    keys: dict[str, Any] = field(default_factory=dict)
    keys_fetched: float = 0.0


class UaaLogin:
    """ASGI middleware: the UAA login and the roles in front of ``app``."""

    def __init__(self, app: ASGIApp, settings: LoginSettings) -> None:
        self.app = app
        self.settings = settings
        self._uaa: Uaa | None = None

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)  # lifespan
        try:
            return await self._guarded(scope, receive, send)
        except (LoginConfigError, httpx.HTTPError) as exc:
            # UAA unreachable or misconfigured: say so, serve nothing else
            log.error("login unavailable: %s", exc)
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1013})
            return await _respond(send, 503, _page("Login unavailable", (
                f"<p>{escape(str(exc))}</p>")))

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] == "http":
            if path in OPEN_PATHS:
                return await _respond(send, 200, b"ok", "text/plain")
            if path == "/auth/login":
                return await self._start_login(scope, send)
            if path == "/auth/callback":
                return await self._finish_login(scope, send)
            if path == "/auth/logout":
                return await self._logout(send)
            if path == "/auth/logged-out":
                return await _respond(send, 200, _page(
                    "Logged out", '<p>You are logged out. <a href="/auth/login">Log in</a></p>'))
        session = await self._session(scope)
        if session is None:
            return await self._refuse_anonymous(scope, send)
        role = self._role(session)
        if role is None:
            log.info("user %s has neither %s nor %s: refused", session.user_name,
                     self.settings.reader_scope, self.settings.operator_scope)
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 4403})
            return await _respond(send, 403, _page(
                "Not allowed", f"<p>{escape(session.user_name)} has neither the "
                f"{self.settings.reader_scope} nor the {self.settings.operator_scope} scope. "
                'Ask a cloud.gov admin to add you to the billing group. '
                '<a href="/auth/logout">Log out</a></p>'))
        scope.setdefault("state", {})["billing_user"] = {"user_name": session.user_name,
                                                         "role": role}
        if role == "operator":
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await self.app(scope, _reader_websocket(receive, send), send)
        return await self._as_reader(scope, receive, send, session)

    # -- login flow ------------------------------------------------------------------------

    async def _start_login(self, scope: Scope, send: Send) -> None:
        uaa = await self._discover()
        query = parse_qs(scope.get("query_string", b"").decode())
        after = _local_path(query.get("next", ["/"])[0])
        state, verifier, nonce = (secrets.token_urlsafe(24) for _ in range(3))
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {"response_type": "code", "client_id": self.settings.client_id,
                  "redirect_uri": self.settings.redirect_uri,
                  "scope": f"openid {self.settings.reader_scope} {self.settings.operator_scope}",
                  "state": state, "nonce": nonce, "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        cookie = self._sign({"state": state, "verifier": verifier, "next": after,
                             "until": int(time.time()) + LOGIN_COOKIE_SECONDS})
        await _redirect(send, f"{uaa.authorization_endpoint}?{urlencode(params)}",
                        [self._cookie(LOGIN_COOKIE, cookie, LOGIN_COOKIE_SECONDS)])

    async def _finish_login(self, scope: Scope, send: Send) -> None:
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        started = self._unsign(_cookies(scope).get(LOGIN_COOKIE, ""))
        if "error" in query:
            return await _respond(send, 403, _page("Login refused", (
                f"<p>UAA said: {escape(query.get('error_description', query['error']))}. "
                '<a href="/auth/login">Try again</a></p>')))
        if started is None or started.get("until", 0) < time.time() or \
                not hmac.compare_digest(str(started.get("state")), query.get("state", "")):
            return await _respond(send, 400, _page("Login expired", (
                '<p>This login was not started here or took too long. '
                '<a href="/auth/login">Log in again</a></p>')))
        uaa = await self._discover()
        async with _uaa_client() as http:
            reply = await http.post(uaa.token_endpoint, data={
                "grant_type": "authorization_code", "code": query.get("code", ""),
                "redirect_uri": self.settings.redirect_uri,
                "code_verifier": started["verifier"]},
                auth=(self.settings.client_id, self.settings.client_secret),
                headers={"Accept": "application/json"})
        if reply.status_code != 200:
            log.warning("UAA refused the authorization code: HTTP %d %s", reply.status_code,
                        _oauth_error(reply))
            return await _respond(send, 502, _page("Login failed", (
                f"<p>UAA refused the login ({escape(_oauth_error(reply))}). If this "
                "persists, check UI_CLIENT_ID and UI_CLIENT_SECRET. "
                '<a href="/auth/login">Try again</a></p>')))
        token = reply.json().get("access_token", "")
        session = await self._verify(token)
        if session is None:
            return await _respond(send, 502, _page("Login failed", (
                "<p>UAA's token did not verify against its /token_keys. "
                '<a href="/auth/login">Try again</a></p>')))
        log.info("user %s logged in (%s)", session.user_name,
                 self._role(session) or "no billing scope")
        lifetime = max(session.expires_at - int(time.time()), 0)
        await _redirect(send, started.get("next", "/"), [
            self._cookie(SESSION_COOKIE, token, lifetime),
            self._cookie(LOGIN_COOKIE, "", 0)])

    async def _logout(self, send: Send) -> None:
        uaa = await self._discover()
        back = self.settings.public_url.rstrip("/") + "/auth/logged-out"
        target = f"{uaa.end_session_endpoint}?" + urlencode(
            {"redirect": back, "client_id": self.settings.client_id})
        await _redirect(send, target, [self._cookie(SESSION_COOKIE, "", 0)])

    # -- sessions and roles ----------------------------------------------------------------

    async def _session(self, scope: Scope) -> Session | None:
        token = _cookies(scope).get(SESSION_COOKIE)
        if not token:
            return None
        return await self._verify(token)

    async def _verify(self, token: str) -> Session | None:
        uaa = await self._discover()
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
            key = await self._key(uaa, kid)
            if key is None:
                return None
            claims = jwt.decode(token, key, algorithms=["RS256"],
                                audience=self.settings.client_id, issuer=uaa.issuer,
                                options={"require": ["exp", "iat", "sub"]})
        except jwt.InvalidTokenError:
            return None
        scopes = claims.get("scope", [])
        return Session(str(claims.get("user_name") or claims["sub"]),
                       frozenset(scopes if isinstance(scopes, list) else str(scopes).split()),
                       int(claims["exp"]))

    def _role(self, session: Session) -> str | None:
        if self.settings.operator_scope in session.scopes:
            return "operator"
        if self.settings.reader_scope in session.scopes:
            return "reader"
        return None

    async def _refuse_anonymous(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 4401})
        headers = _headers(scope)
        wants_page = scope.get("method") == "GET" and "text/html" in headers.get("accept", "")
        if wants_page:
            here = scope["path"] + (f"?{scope['query_string'].decode()}"
                                    if scope.get("query_string") else "")
            return await _redirect(send, "/auth/login?next=" + quote(here, safe=""))
        return await _respond(send, 401, json.dumps(
            {"errors": [{"message": "not logged in: open /auth/login"}]}).encode(),
            "application/json", [(b"www-authenticate", b'Bearer realm="billing-dagster"')])

    async def _as_reader(self, scope: Scope, receive: Receive, send: Send,
                         session: Session) -> None:
        method, path = scope.get("method", "GET"), scope["path"]
        if method == "POST" and path.startswith(REPORTING_PREFIXES):
            return await _refuse_reader(send, session, f"POST {path}")
        if path != "/graphql":
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        if method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode())
            documents = [(query.get("query", [""])[0], query.get("operationName", [None])[0])]
        else:
            documents = _graphql_documents(body)
        mutation = next((name for text, op in documents
                         if (name := _mutation_in(text, op)) is not None), None)
        if mutation is not None:
            return await _refuse_reader(send, session, f"the GraphQL mutation {mutation}")
        return await self.app(scope, _replay(body), send)

    # -- UAA -------------------------------------------------------------------------------

    async def _discover(self) -> Uaa:
        if self._uaa is not None:
            return self._uaa
        api = self.settings.cf_api_url.rstrip("/")
        try:
            async with _uaa_client() as http:
                root = (await http.get(api + "/")).raise_for_status().json()
                login = root["links"].get("login") or root["links"]["uaa"]
                base = login["href"].rstrip("/")
                config = (await http.get(base + "/.well-known/openid-configuration")
                          ).raise_for_status().json()
            self._uaa = Uaa(config["issuer"], config["authorization_endpoint"],
                            config["token_endpoint"], config["jwks_uri"],
                            config.get("end_session_endpoint", base + "/logout.do"))
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
            raise LoginConfigError(
                f"could not discover UAA from CF_API_URL {api}: {type(exc).__name__}: {exc}; "
                "check CF_API_URL (the API root, e.g. https://api.fr.cloud.gov)") from exc
        return self._uaa

    async def _key(self, uaa: Uaa, kid: str) -> Any:
        if kid not in uaa.keys and time.monotonic() - uaa.keys_fetched > 60:
            async with _uaa_client() as http:
                reply = (await http.get(uaa.jwks_uri)).raise_for_status().json()
            uaa.keys = {k["kid"]: jwt.PyJWK(k).key for k in reply.get("keys", [])
                        if k.get("kty") == "RSA"}
            uaa.keys_fetched = time.monotonic()
        return uaa.keys.get(kid)

    # -- cookies ---------------------------------------------------------------------------

    def _sign(self, payload: dict[str, Any]) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        mac = hmac.new(self.settings.session_key, raw.encode(), hashlib.sha256).hexdigest()
        return f"{raw}.{mac}"

    def _unsign(self, value: str) -> dict[str, Any] | None:
        raw, _, mac = value.rpartition(".")
        expected = hmac.new(self.settings.session_key, raw.encode(), hashlib.sha256).hexdigest()
        if not raw or not hmac.compare_digest(mac, expected):
            return None
        try:
            return json.loads(base64.urlsafe_b64decode(raw))
        except ValueError:
            return None

    def _cookie(self, name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
        parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
        if self.settings.secure_cookies:
            parts.append("Secure")
        return b"set-cookie", "; ".join(parts).encode()


# -- readers ---------------------------------------------------------------------------------


def _graphql_documents(body: bytes) -> list[tuple[str, str | None]]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return []
    items = payload if isinstance(payload, list) else [payload]
    return [(str(item.get("query") or ""), item.get("operationName"))
            for item in items if isinstance(item, dict)]


def _mutation_in(text: str, operation_name: str | None) -> str | None:
    """The name of the mutation the document would run, or None (a query, a subscription, a
    mutation of ``HARMLESS_MUTATIONS`` only, or nothing GraphQL could run)."""
    try:
        document = parse(text)
    except GraphQLError:
        return None
    for node in document.definitions:
        if not isinstance(node, OperationDefinitionNode):
            continue
        name = node.name.value if node.name else None
        if operation_name and name != operation_name:
            continue
        if node.operation != OperationType.MUTATION:
            continue
        fields = {selection.name.value for selection in node.selection_set.selections
                  if isinstance(selection, FieldNode)}
        if len(fields) != len(node.selection_set.selections) or fields - HARMLESS_MUTATIONS:
            return name or "(anonymous)"  # fragments at the top are refused too
    return None


async def _refuse_reader(send: Send, session: Session, what: str) -> None:
    log.info("reader %s refused: %s", session.user_name, what)
    message = (f"{session.user_name} may read but not change anything: {what} needs the "
               "operator scope (usage.admin)")
    await _respond(send, 403, json.dumps({"errors": [{"message": message}]}).encode(),
                   "application/json")


def _reader_websocket(receive: Receive, send: Send) -> Receive:
    """``receive`` for a reader's websocket: a subscription goes through, a mutation sent
    over the socket closes it (4403)."""

    async def checked() -> Message:
        message = await receive()
        if message["type"] == "websocket.receive" and message.get("text"):
            try:
                frame = json.loads(message["text"])
            except ValueError:
                return message
            payload = frame.get("payload") if isinstance(frame, dict) else None
            if isinstance(payload, dict) and _mutation_in(
                    str(payload.get("query") or ""), payload.get("operationName")):
                await send({"type": "websocket.close", "code": 4403})
                return {"type": "websocket.disconnect", "code": 4403}
        return message

    return checked


# -- small ASGI helpers ----------------------------------------------------------------------


def _uaa_client() -> httpx.AsyncClient:
    """A client for one exchange with UAA (discovery, keys, a code): rare enough that no
    connection is kept open between them."""
    return httpx.AsyncClient(timeout=15)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(scope: Scope) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(_headers(scope).get("cookie", ""))
    except Exception:  # a malformed Cookie header: no session, not a crash
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def _local_path(target: str) -> str:
    """Only a path on this site (never another host) may follow the login."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _respond(send: Send, status: int, body: bytes,
                   content_type: str = "text/html; charset=utf-8",
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, 302, b"", "text/plain",
                   [(b"location", location.encode()), *(headers or [])])


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><title>{escape(title)} - billing-dagster</title>"
            f"</head><body><h1>{escape(title)}</h1>{body}</body></html>").encode()


def _oauth_error(reply: httpx.Response) -> str:
    try:
        body = reply.json()
        return f"{body.get('error')}: {body.get('error_description')}"
    except ValueError:
        return f"HTTP {reply.status_code}"
