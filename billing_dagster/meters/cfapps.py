"""Meter ``cfapps``: memory of running app processes, in MiB per second of running.

A process of a STARTED app uses ``instances x memory_in_mb``; a process of a STOPPED app uses
nothing (CF keeps its desired instance count while stopped). The resource is the process (the
web process's guid is the app's guid); there is one resource kind, ``app-memory``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from billing_dagster.cf.client import CfApiError, CloudFoundryClient
from billing_dagster.meters.base import EventStream, MeterSnapshot, ObservedResource, malformed

log = logging.getLogger(__name__)

APP_MEMORY_KIND = "app-memory"
_Process = tuple[str, Any, Any, Any]  # guid, type, instances, memory_in_mb
_App = tuple[str, Any, Any, Any]  # guid, name, state, space guid


def _event_row(pos: int, e: dict[str, Any]) -> tuple:
    """One app usage event as a row of stage_app_event (sql/queries/events.sql)."""
    return (pos, e["guid"], e["created_at"], e["state"]["current"], e["state"]["previous"],
            e["app"]["guid"], e["app"]["name"], e["process"]["guid"], e["process"]["type"],
            e["space"]["guid"], e["space"]["name"], e["organization"]["guid"],
            e["instance_count"]["current"], e["instance_count"]["previous"],
            e["memory_in_mb_per_instance"]["current"], e["memory_in_mb_per_instance"]["previous"])


class CfAppsMeter:
    name = "cfapps"
    events: EventStream | None = EventStream(
        "app_usage_events", "cfapps", _event_row, "copy_stage_app_event", "land_app_events",
        "ensure_event_processes", "app_event_observations", "rebuild_app_history")

    def snapshot(self, cf: CloudFoundryClient) -> MeterSnapshot:
        """Processes and apps, read at once; each record kept as the fields used, not as the
        API's whole record (a 100k-app foundation's apps and processes: some 170 MB of JSON)."""
        with ThreadPoolExecutor(1, thread_name_prefix="cf-processes") as pool:
            processes = pool.submit(_read_processes, cf)
            apps, apps_error = _read_apps(cf)
        processes_by_app, error = processes.result()
        if error is not None:
            return MeterSnapshot(self.name, [], [], complete=False, error=error)
        observed: list[ObservedResource] = []
        for app in apps:
            try:
                observed.extend(_observe_app(app, processes_by_app.get(app[0], [])))
            except (TypeError, ValueError) as exc:
                apps_error = malformed("process", len(observed), exc)
                break
        if apps_error is not None:
            log.warning("cfapps: %s", apps_error)
            return MeterSnapshot(self.name, observed, [], complete=False, error=apps_error)
        return MeterSnapshot(self.name, observed, [], complete=True)


def _read_processes(cf: CloudFoundryClient) -> tuple[dict[str, list[_Process]], str | None]:
    """Every process by its app's guid, or why they could not all be read."""
    by_app: dict[str, list[_Process]] = {}
    read = 0
    try:
        for page in cf.pages("/v3/processes"):
            for process in page.resources:
                by_app.setdefault(process["relationships"]["app"]["data"]["guid"], []).append(
                    (process["guid"], process.get("type"), process["instances"],
                     process["memory_in_mb"]))
                read += 1
    except CfApiError as exc:
        return {}, str(exc)
    except (KeyError, TypeError) as exc:
        return {}, malformed("process", read, exc)
    return by_app, None


def _read_apps(cf: CloudFoundryClient) -> tuple[list[_App], str | None]:
    """The apps listed, and why the listing stopped short if it did (what was read is kept)."""
    apps: list[_App] = []
    try:
        for page in cf.pages("/v3/apps"):
            for app in page.resources:
                space = (app.get("relationships", {}).get("space") or {}).get("data") or {}
                apps.append((app["guid"], app.get("name"), app.get("state"), space.get("guid")))
    except CfApiError as exc:
        return apps, f"apps listing failed after {len(apps)} apps: {exc}"
    except (KeyError, TypeError, AttributeError) as exc:
        return apps, malformed("app", len(apps), exc)
    return apps, None


def _observe_app(app: _App, processes: list[_Process]) -> list[ObservedResource]:
    app_guid, name, state, space_guid = app
    running = state == "STARTED"
    return [
        ObservedResource(
            natural_id=guid,
            name=f"{name}/{process_type}",
            space_guid=space_guid,
            kind_natural_id=APP_MEMORY_KIND,
            rate=int(instances) * int(memory_in_mb) if running else 0,
            details={"app_guid": app_guid, "process_type": process_type},
        )
        for guid, process_type, instances, memory_in_mb in processes
    ]
