"""The simulator UAA's user side: people log in to the billing UI through it as through UAA.

The authorization-code flow of OAuth 2 / OpenID Connect, as UAA serves it:

- ``GET /oauth/authorize?response_type=code&client_id&redirect_uri&scope&state``
  (``code_challenge``/``code_challenge_method`` for PKCE) shows a login form;
- ``POST /login.do`` with the form's fields checks the user's password and redirects to
  ``redirect_uri?code=...&state=...``; a wrong password shows the form again (401);
- ``POST /oauth/token`` with ``grant_type=authorization_code`` (see ``Uaa.token``) trades the
  code, once, for a user's access token (and an ``id_token`` when ``openid`` was asked for);
- ``GET /logout.do?redirect=<url>&client_id=<id>`` ends the session and redirects.

Users and the UI's client are configuration of the simulator (``DEMO_USERS``, ``UI_CLIENT``):
the demo operator has ``usage.admin`` and ``usage.read``, the demo reader only ``usage.read``.
A user gets the scopes asked for that they hold (``openid`` always).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from billing_dagster.simulator.responses import Response


@dataclass(frozen=True)
class User:
    user_name: str
    password: str
    user_id: str
    scopes: tuple[str, ...]

    @property
    def email(self) -> str:
        return f"{self.user_name}@example.gov"


DEMO_USERS: tuple[User, ...] = (
    User("operator", "operator-password", "a1b2c3d4-0000-4000-8000-00000000b111",
         ("openid", "usage.admin", "usage.read")),
    User("reader", "reader-password", "a1b2c3d4-0000-4000-8000-00000000b222",
         ("openid", "usage.read")),
    User("stranger", "stranger-password", "a1b2c3d4-0000-4000-8000-00000000b333",
         ("openid",)),
)
"""Who can log in to a simulated foundation's UI (the README documents them)."""

UI_CLIENT = ("billing-ui", "billing-ui-secret")
"""The UAA client the billing UI logs people in with (authorization_code grant)."""

CODE_VALIDITY_SECONDS = 300


@dataclass(frozen=True)
class Grant:
    """What an authorization code stands for until it is traded."""

    client_id: str
    redirect_uri: str
    user: User
    scopes: tuple[str, ...]
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    expires: float


class Logins:
    """The users, the UI client and the codes not yet traded."""

    def __init__(self, users: tuple[User, ...] = DEMO_USERS,
                 ui_client: tuple[str, str] = UI_CLIENT) -> None:
        self.users = {u.user_name: u for u in users}
        self.ui_client_id, self._ui_secret = ui_client
        self._codes: dict[str, Grant] = {}

    def client_ok(self, client_id: str, secret: str) -> bool:
        return client_id == self.ui_client_id and secrets.compare_digest(secret, self._ui_secret)

    # -- the login form --------------------------------------------------------------------

    def authorize(self, query: Mapping[str, str], uaa_base: str) -> Response:
        problem = self._request_problem(query)
        if problem:
            return _page(400, "Invalid authorization request", f"<p>{html.escape(problem)}</p>")
        return _login_form(query, uaa_base, error=None)

    def login(self, form: Mapping[str, str], uaa_base: str) -> Response:
        problem = self._request_problem(form)
        if problem:
            return _page(400, "Invalid authorization request", f"<p>{html.escape(problem)}</p>")
        user = self.users.get(form.get("username", ""))
        if user is None or not secrets.compare_digest(form.get("password", ""), user.password):
            return _login_form(form, uaa_base, error="Unable to verify email or password. "
                                                     "Please try again.")
        asked = form.get("scope", "openid").split()
        scopes = tuple(s for s in user.scopes if s in asked or s == "openid")
        code = secrets.token_urlsafe(12)
        self._codes[code] = Grant(
            form["client_id"], form["redirect_uri"], user, scopes,
            form.get("code_challenge") or None, form.get("code_challenge_method") or "plain",
            form.get("nonce") or None, time.time() + CODE_VALIDITY_SECONDS)
        back = {"code": code, **({"state": form["state"]} if form.get("state") else {})}
        return _redirect(_with_query(form["redirect_uri"], back))

    def _request_problem(self, params: Mapping[str, str]) -> str | None:
        if params.get("response_type") != "code":
            return "response_type must be code"
        if params.get("client_id") != self.ui_client_id:
            return f"unknown client_id {params.get('client_id')!r}"
        redirect = params.get("redirect_uri", "")
        if urlsplit(redirect).scheme not in ("http", "https"):
            return "redirect_uri must be an http(s) URL"
        return None

    # -- the code grant --------------------------------------------------------------------

    def redeem(self, form: Mapping[str, str], client_id: str) -> Grant | str:
        """The grant behind ``form["code"]``, used up; or the OAuth error description."""
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant.expires < time.time():
            return "Invalid authorization code"
        if grant.client_id != client_id:
            return "Invalid authorization code (issued to another client)"
        if form.get("redirect_uri") != grant.redirect_uri:
            return "Redirect URI mismatch."
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if grant.code_challenge_method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            else:
                computed = verifier
            if not secrets.compare_digest(computed, grant.code_challenge):
                return "Code verifier does not match the code challenge"
        return grant

    # -- logout ----------------------------------------------------------------------------

    def logout(self, query: Mapping[str, str]) -> Response:
        target = query.get("redirect", "")
        if target and urlsplit(target).scheme in ("http", "https"):
            return _redirect(target)
        return _page(200, "Logged out", "<p>You have been logged out.</p>")


def _with_query(url: str, params: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _redirect(location: str) -> Response:
    return Response(302, b"", "text/plain", (("Location", location),
                                             ("Cache-Control", "no-store")))


def _page(status: int, title: str, body: str) -> Response:
    page = (f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(status, page.encode(), "text/html; charset=utf-8",
                    (("Cache-Control", "no-store"),))


_FORM_FIELDS = ("response_type", "client_id", "redirect_uri", "scope", "state",
                "code_challenge", "code_challenge_method", "nonce")


def _login_form(params: Mapping[str, str], uaa_base: str, error: str | None) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
        for name in _FORM_FIELDS if params.get(name))
    warning = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (f"{warning}<form method=\"post\" action=\"{html.escape(uaa_base)}/login.do\">"
            f"{hidden}"
            '<label>Username <input name="username" id="username" autocomplete="username">'
            "</label> "
            '<label>Password <input name="password" id="password" type="password" '
            'autocomplete="current-password"></label> '
            '<button type="submit" id="sign-in">Sign in</button></form>')
    return _page(401 if error else 200, "Cloud Foundry (simulated UAA): sign in", body)
