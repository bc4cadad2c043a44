"""The UI behind the UAA login, over real HTTP: the webserver's own ASGI app wrapped by
``UaaLogin``, served by uvicorn on loopback, logging in through the CF simulator's UAA with the
demo users (authorization-code flow with PKCE, tokens verified against ``/token_keys``).

Nothing is served without a session; a reader reads but cannot mutate (over HTTP or the
websocket); an operator can; sessions end with the token or at logout; nothing secret is logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.uaa_login import UI_CLIENT
from billing_dagster.web.app import login_settings, ui_app
from billing_dagster.web.login import LoginSettings, UaaLogin
from tests.support import free_port, log_in, served

VERSION = "{ version }"
# a mutation that would change the instance (wiping an asset no code location defines)
MUTATION = ('mutation WipeIt { wipeAssets(assetPartitionRanges: '
            '[{assetKey: {path: ["no_such_asset"]}}]) { __typename } }')
NUX_SEEN = "mutation SeenIt { setNuxSeen }"
PERMISSIONS = "{ permissions { permission value } }"


@contextmanager
def uaa(**options) -> Iterator[Simulator]:
    foundation = Foundation(seed=1, apps=3, service_instances=1,
                            start=datetime(2025, 3, 3, tzinfo=UTC))
    with Simulator(foundation, **options) as sim:
        yield sim


def settings_for(sim: Simulator, port: int) -> LoginSettings:
    return login_settings({"CF_API_URL": sim.url, "UI_CLIENT_ID": UI_CLIENT[0],
                           "UI_CLIENT_SECRET": UI_CLIENT[1]}, port)


@pytest.fixture
def browser() -> Iterator[Callable[[], httpx.Client]]:
    """Makes HTTP clients that keep cookies and do not follow redirects (each step is
    checked); closes them after the test."""
    made: list[httpx.Client] = []

    def make() -> httpx.Client:
        made.append(httpx.Client(follow_redirects=False, timeout=30))
        return made[-1]

    yield make
    for client in made:
        client.close()


def graphql(client: httpx.Client, base: str, query: str) -> httpx.Response:
    return client.post(base + "/graphql", json={"query": query})


def permissions(client: httpx.Client, base: str) -> dict[str, bool]:
    """What Dagster says the session may do (its ``permissions`` query)."""
    answer = graphql(client, base, PERMISSIONS).json()["data"]["permissions"]
    return {p["permission"]: p["value"] for p in answer}


def cookie_header(client: httpx.Client) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


# -- the real Dagster UI behind the login ---------------------------------------------------


@pytest.fixture(scope="module")
def ui() -> Iterator[str]:
    port = free_port()
    with uaa() as sim, dg.instance_for_test() as instance, \
            ui_app(settings_for(sim, port), instance=instance) as app, \
            served(app, port) as base:
        yield base


def test_nothing_is_served_without_a_session(ui, browser):
    anonymous = browser()
    page = anonymous.get(ui + "/assets/hourly_measurements", headers={"Accept": "text/html"})
    assert page.status_code == 302
    assert page.headers["location"] == "/auth/login?next=%2Fassets%2Fhourly_measurements"
    for response in (anonymous.post(ui + "/graphql", json={"query": VERSION}),
                     anonymous.get(ui + "/graphql", params={"query": VERSION}),
                     anonymous.get(ui + "/server_info"),
                     anonymous.get(ui + "/favicon.svg")):
        assert response.status_code == 401, response.request.url
        assert "not logged in" in response.text
    forged = anonymous.post(ui + "/graphql", json={"query": VERSION},
                            headers={"Cookie": "billing_session=eyJhbGciOiJub25lIn0.e30."})
    assert forged.status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ui.replace("http", "ws") + "/graphql", subprotocols=[Subprotocol("graphql-ws")])
    assert refused.value.response.status_code == 403
    assert anonymous.get(ui + "/healthz").text == "ok"


def test_a_reader_sees_the_ui_but_cannot_change_anything(ui, browser):
    reader = browser()
    assert log_in(reader, ui, "reader").status_code == 302
    home = reader.get(ui + "/", headers={"Accept": "text/html"})
    assert home.status_code == 200 and "<html" in home.text.lower()
    assert graphql(reader, ui, VERSION).json()["data"]["version"]
    refused = graphql(reader, ui, MUTATION)
    assert refused.status_code == 403
    assert "reader may read but not change anything: the GraphQL mutation WipeIt needs the " \
           "operator scope (usage.admin)" in refused.json()["errors"][0]["message"]
    # a document with a query and a mutation, naming the mutation, is still a mutation
    both = reader.post(ui + "/graphql", json={"query": f"query V {VERSION} {MUTATION}",
                                              "operationName": "WipeIt"})
    assert both.status_code == 403
    # so is a harmless field beside a harmful one
    mixed = MUTATION.replace("{ wipeAssets", "{ setNuxSeen wipeAssets")
    assert graphql(reader, ui, mixed).status_code == 403
    # dismissing the community pop-up changes nothing but the reader's own view: it passes
    seen = graphql(reader, ui, NUX_SEEN)
    assert seen.status_code == 200 and seen.json()["data"] == {"setNuxSeen": True}
    # and Dagster itself treats the reader as read-only, so its UI offers no launch button
    granted = permissions(reader, ui)
    assert granted["launch_partition_backfill"] is False
    assert not any(granted.values()), granted
    assert reader.post(ui + "/report_asset_materialization/hourly_measurements").status_code \
        == 403
    # the websocket: subscriptions yes, a mutation sent over it closes it
    with ws_connect(ui.replace("http", "ws") + "/graphql", subprotocols=[Subprotocol("graphql-ws")],
                    additional_headers={"Cookie": cookie_header(reader)}) as socket:
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=30))["type"] == "connection_ack"
        socket.send(json.dumps({"type": "start", "id": "1", "payload": {"query": MUTATION}}))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_an_operator_can_mutate(ui, browser):
    operator = browser()
    log_in(operator, ui, "operator")
    done = graphql(operator, ui, MUTATION)
    assert done.status_code == 200
    assert done.json()["data"]["wipeAssets"]["__typename"] == "AssetWipeSuccess"
    granted = permissions(operator, ui)
    assert granted["launch_partition_backfill"] is True
    assert granted["wipe_assets"] is True


def test_a_user_without_a_billing_scope_is_refused(ui, browser):
    stranger = browser()
    log_in(stranger, ui, "stranger")
    page = stranger.get(ui + "/", headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert "stranger has neither the usage.read nor the usage.admin scope" in page.text


def test_a_wrong_password_stays_on_uaa(ui, browser):
    attempt = browser()
    page = log_in(attempt, ui, "operator", password="guess")
    assert page.status_code == 401 and "Unable to verify email or password" in page.text
    assert "billing_session" not in attempt.cookies


def test_the_login_returns_to_the_page_asked_for(ui, browser):
    assert log_in(browser(), ui, "reader", next_path="/runs").headers["location"] == "/runs"


# -- sessions, on a stand-in app (the login does not care what it guards) ------------------


async def _hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_session_ends_with_its_token_and_at_logout(caplog, browser):
    port = free_port()
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="billing_dagster")
    with uaa(token_validity_seconds=3) as sim, \
            served(UaaLogin(_hello, settings_for(sim, port)), port) as base:
        reader = browser()
        set_cookie = log_in(reader, base, "reader").headers["set-cookie"]
        session = reader.cookies["billing_session"]
        assert reader.get(base + "/").text == "hello"
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        assert re.search(r"billing_session=[^;]+; Path=/; Max-Age=[0-3];", set_cookie)
        time.sleep(3.5)
        # the browser would have dropped the cookie; a client that keeps it is refused anyway
        stale = httpx.get(base + "/", headers={"Cookie": f"billing_session={session}",
                                               "Accept": "text/html"})
        assert stale.status_code == 302 and stale.headers["location"].startswith("/auth/login")

        operator = browser()
        log_in(operator, base, "operator")
        out = operator.get(base + "/auth/logout")
        assert out.status_code == 302
        assert urlsplit(out.headers["location"]).path == "/uaa/logout.do"
        assert "billing_session=; Path=/; Max-Age=0" in out.headers["set-cookie"]
        assert parse_qs(urlsplit(out.headers["location"]).query)["redirect"] == [
            base + "/auth/logged-out"]
        assert operator.get(out.headers["location"]).headers["location"] == \
            base + "/auth/logged-out"
        assert operator.get(base + "/").status_code == 401
    logged = caplog.text
    assert "user reader logged in (reader)" in logged
    for secret in (session, UI_CLIENT[1], "reader-password", "operator-password"):
        assert secret not in logged


def test_a_callback_not_started_here_or_pointing_elsewhere_is_refused(browser):
    port = free_port()
    with uaa() as sim, served(UaaLogin(_hello, settings_for(sim, port)), port) as base:
        client = browser()
        forged = client.get(base + "/auth/callback", params={"code": "x", "state": "y"})
        assert forged.status_code == 400 and "Log in again" in forged.text
        # a next= naming another site falls back to the UI's home
        back = log_in(browser(), base, "reader",
                      next_path="/auth/login?next=https%3A%2F%2Fevil.example")
        assert back.headers["location"] == "/"


def test_uaa_unreachable_is_a_clear_503():
    port = free_port()
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = login_settings({"CF_API_URL": nowhere, "UI_CLIENT_ID": UI_CLIENT[0],
                               "UI_CLIENT_SECRET": UI_CLIENT[1]}, port)
    with served(UaaLogin(_hello, settings), port) as base:
        to_login = httpx.get(base + "/", headers={"Accept": "text/html"})
        assert to_login.status_code == 302
        page = httpx.get(base + to_login.headers["location"])
    assert page.status_code == 503
    assert f"could not discover UAA from CF_API_URL {nowhere}" in page.text


def test_missing_settings_name_the_variable():
    with pytest.raises(ValueError, match="UI_CLIENT_SECRET is not set"):
        login_settings({"CF_API_URL": "https://api.example.gov", "UI_CLIENT_ID": "ui"}, 3000)
    vcap = json.dumps({"application_uris": ["billing.app.cloud.gov"]})
    settings = login_settings({"CF_API_URL": "https://api.example.gov", "UI_CLIENT_ID": "ui",
                               "UI_CLIENT_SECRET": "s", "VCAP_APPLICATION": vcap}, 8080)
    assert settings.redirect_uri == "https://billing.app.cloud.gov/auth/callback"
    assert settings.secure_cookies
