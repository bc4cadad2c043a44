"""The Dagster UI as the `web` process serves it: dagster-webserver's own ASGI app, with the
statements to download beside it (statements.py) and the UAA login (login.py) in front of both,
on uvicorn.

    python -m billing_dagster.web [--host 0.0.0.0] [--port $PORT]

A reader's requests get Dagster's own read-only request context (what ``dagster-webserver
--read-only`` gives everyone): the UI greys out Materialize, backfills and schedule switches for
them, and Dagster refuses those mutations itself, behind the login's own refusal.

Dagster 1.13 has no public way to build the webserver's app from a workspace file, nor to choose
read-only per request: the private imports below are the ones dagster-webserver's own CLI uses,
kept to this module, and tests/test_web.py starts the app through them, so an upgrade that
moves them fails there first (docs/dagster.md §6).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

import uvicorn
from dagster import DagsterInstance
from dagster._core.workspace.context import (  # see the module doc
    WorkspaceProcessContext,
    WorkspaceRequestContext,
)
from dagster._core.workspace.load_target import WorkspaceFileTarget  # see the module doc
from dagster_webserver.app import create_app_from_workspace_process_context
from dagster_webserver.version import __version__ as webserver_version

from billing_dagster.web.check_order import order_check_partitions
from billing_dagster.web.login import LoginConfigError, LoginSettings, UaaLogin
from billing_dagster.web.statements import WithStatements

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def login_settings(env: Mapping[str, str], port: int) -> LoginSettings:
    """The login's settings from the environment; LoginConfigError names what is missing.

    UI_URL defaults to the app's first route on cloud.gov (VCAP_APPLICATION), over https, and
    to http://127.0.0.1:<port> elsewhere. UI_SESSION_KEY (any long random string) signs the
    short-lived login cookie; set it when more than one web instance runs, so that a login
    started on one can finish on another."""
    public_url = env.get("UI_URL", "")
    if not public_url and env.get("VCAP_APPLICATION"):
        try:
            uris = json.loads(env["VCAP_APPLICATION"]).get("application_uris") or []
        except ValueError as exc:
            raise LoginConfigError(f"VCAP_APPLICATION is not JSON ({exc}): set UI_URL") from exc
        public_url = f"https://{uris[0]}" if uris else ""
    public_url = public_url or f"http://127.0.0.1:{port}"
    settings = LoginSettings(cf_api_url=env.get("CF_API_URL", ""),
                             client_id=env.get("UI_CLIENT_ID", ""),
                             client_secret=env.get("UI_CLIENT_SECRET", ""),
                             public_url=public_url)
    if env.get("UI_SESSION_KEY"):
        settings = dataclasses.replace(settings, session_key=env["UI_SESSION_KEY"].encode())
    return settings


class RoleAwareWorkspace(WorkspaceProcessContext):
    """The webserver's workspace context, read-only for every request the login did not mark
    as an operator's (``scope["state"]["billing_user"]``, set by ``UaaLogin``)."""

    def create_request_context(self, source: object | None = None) -> WorkspaceRequestContext:
        return WorkspaceRequestContext(
            instance=self.instance, current_workspace=self.get_current_workspace(),
            process_context=self, version=self.version, source=source,
            read_only=self.read_only or role_of(source) != "operator")


def role_of(connection: object | None) -> str | None:
    """The role the login gave the request behind ``connection`` (a Starlette connection)."""
    scope = getattr(connection, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    user = state.get("billing_user") if isinstance(state, dict) else None
    return user.get("role") if isinstance(user, dict) else None


@contextlib.contextmanager
def dagster_app(workspace: Path = REPO_ROOT / "workspace.yaml",
                instance: DagsterInstance | None = None) -> Iterator[WithStatements]:
    """The webserver's ASGI app for ``workspace`` with the statements beside it, before the
    login (every request read-only without it), while the block runs (the workspace context
    owns the code server it starts). bench/ui_pages.py times the pages on it."""
    instance = instance or DagsterInstance.get()
    order_check_partitions(instance)  # the checks view at a year: see check_order.py
    with RoleAwareWorkspace(
            instance, version=webserver_version,
            workspace_load_target=WorkspaceFileTarget(paths=[str(workspace)])) as context:
        yield WithStatements(create_app_from_workspace_process_context(context))


@contextlib.contextmanager
def ui_app(settings: LoginSettings, workspace: Path = REPO_ROOT / "workspace.yaml",
           instance: DagsterInstance | None = None) -> Iterator[UaaLogin]:
    """dagster_app behind the login, while the block runs."""
    with dagster_app(workspace, instance) as app:
        yield UaaLogin(app, settings)


def serve(host: str, port: int) -> None:
    settings = login_settings(os.environ, port)
    log.info("Dagster UI at %s, behind UAA login (client %s, UAA from %s)",
             settings.public_url, settings.client_id, settings.cf_api_url)
    # uvicorn leaves the code server running on a plain SIGTERM (docs/dagster.md §7.2): make
    # SIGTERM unwind like ^C so the workspace context closes it
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ui_app(settings) as app, contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=host, port=port, log_level="warning",
                    proxy_headers=True, forwarded_allow_ips="*")
