"""Meter ``cfapps``: memory of running app processes, in MiB per second of running.

A process of a STARTED app uses ``instances x memory_in_mb``; a process of a STOPPED app uses
nothing (CF keeps its desired instance count while stopped). The resource is the process (the
web process's guid is the app's guid); there is one resource kind, ``app-memory``.
"""

from __future__ import annotations

import logging
from typing import Any

from billing_dagster.cf.client import CfApiError, CloudFoundryClient
from billing_dagster.meters.base import EventStream, MeterSnapshot, ObservedResource, malformed

log = logging.getLogger(__name__)

APP_MEMORY_KIND = "app-memory"


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
        try:
            processes_by_app: dict[str, list[dict[str, Any]]] = {}
            for process in cf.list_all("/v3/processes").resources:
                app_guid = process["relationships"]["app"]["data"]["guid"]
                processes_by_app.setdefault(app_guid, []).append(process)
        except CfApiError as exc:
            return MeterSnapshot(self.name, [], [], complete=False, error=str(exc))

        observed: list[ObservedResource] = []
        try:
            for page in cf.pages("/v3/apps"):
                for app in page.resources:
                    observed.extend(_observe_app(app, processes_by_app.get(app["guid"], [])))
        except CfApiError as exc:
            log.warning("cfapps: apps listing failed after %d processes: %s", len(observed), exc)
            return MeterSnapshot(self.name, observed, [], complete=False, error=str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            error = malformed("app", len(observed), exc)
            log.warning("cfapps: %s", error)
            return MeterSnapshot(self.name, observed, [], complete=False, error=error)
        return MeterSnapshot(self.name, observed, [], complete=True)


def _observe_app(app: dict[str, Any], processes: list[dict[str, Any]]) -> list[ObservedResource]:
    running = app.get("state") == "STARTED"
    space = (app.get("relationships", {}).get("space") or {}).get("data") or {}
    return [
        ObservedResource(
            natural_id=process["guid"],
            name=f"{app.get('name')}/{process.get('type')}",
            space_guid=space.get("guid"),
            kind_natural_id=APP_MEMORY_KIND,
            rate=int(process["instances"]) * int(process["memory_in_mb"]) if running else 0,
            details={"app_guid": app["guid"], "process_type": process.get("type")},
        )
        for process in processes
    ]
