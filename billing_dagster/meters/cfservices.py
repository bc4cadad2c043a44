"""Meter ``cfservices``: presence of managed service instances, one unit per second present.

The resource is the service instance; its resource kind is its service plan (by plan guid),
named ``<offering>/<plan>`` from the plan listing. User-provided instances have no plan and are
not billed: they are not read (``type=managed``) and any that slip through are counted as ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from billing_dagster.cf.client import CfApiError, CloudFoundryClient
from billing_dagster.meters.base import (
    EventStream,
    MeterSnapshot,
    ObservedKind,
    ObservedResource,
    malformed,
    missing_field,
)

log = logging.getLogger(__name__)

NO_PLAN_KIND = "no-plan"  # a managed instance without a plan relationship: kept, flagged


def _event_row(pos: int, e: dict[str, Any]) -> tuple:
    """One service usage event as a row of stage_service_event (sql/queries/events.sql)."""
    return (pos, e["guid"], e["created_at"], e["state"], e["service_instance"]["guid"],
            e["service_instance"]["name"], e["service_instance"]["type"],
            e["service_plan"]["guid"], e["service_plan"]["name"], e["service_offering"]["name"],
            e["service_broker"]["name"], e["space"]["guid"], e["space"]["name"],
            e["organization"]["guid"])


class CfServicesMeter:
    name = "cfservices"
    events: EventStream | None = EventStream("service_usage_events", "cfservices", _event_row,
                         "copy_stage_service_event", "land_service_events",
                         "ensure_event_plans_and_instances", "service_event_observations",
                         "rebuild_service_history")

    def snapshot(self, cf: CloudFoundryClient) -> MeterSnapshot:
        kinds: list[ObservedKind] = []
        plan_error = None
        try:
            plans = cf.list_all("/v3/service_plans", {"include": "service_offering"})
            kinds = _plan_kinds(plans.resources, plans.included.get("service_offerings", []))
        except CfApiError as exc:  # usage still counts; the plans become stub kinds
            plan_error = f"service plans not read, plan names unknown: {exc}"
            log.warning("cfservices: %s", plan_error)
        except (KeyError, TypeError, ValueError) as exc:  # the same: one bad plan record
            plan_error = (f"service plans not used, plan names unknown: a record of "
                          f"/v3/service_plans has no valid field {missing_field(exc)!r}; "
                          "instances still count, on stub plans until a later read names them")
            log.warning("cfservices: %s", plan_error)

        observed: list[ObservedResource] = []
        ignored: dict[str, int] = {}
        try:
            for page in cf.pages("/v3/service_instances", {"type": "managed"}):
                for instance in page.resources:
                    if instance.get("type") != "managed":
                        ignored["not managed"] = ignored.get("not managed", 0) + 1
                        continue
                    observed.append(_observe_instance(instance))
        except CfApiError as exc:
            log.warning("cfservices: listing failed after %d instances: %s", len(observed), exc)
            return MeterSnapshot(self.name, observed, kinds, complete=False, error=str(exc),
                                 ignored=ignored)
        except (KeyError, TypeError, ValueError) as exc:
            error = malformed("service instance", len(observed), exc)
            log.warning("cfservices: %s", error)
            return MeterSnapshot(self.name, observed, kinds, complete=False, error=error,
                                 ignored=ignored)
        return MeterSnapshot(self.name, observed, kinds, complete=True, error=plan_error,
                             ignored=ignored)


def _plan_kinds(plans: list[dict[str, Any]], offerings: list[dict[str, Any]]) -> list[ObservedKind]:
    offering_names = {o["guid"]: o.get("name") for o in offerings}
    kinds = []
    for plan in plans:
        offering = (plan.get("relationships", {}).get("service_offering") or {}).get("data") or {}
        offering_name = offering_names.get(offering.get("guid"))
        kinds.append(ObservedKind(
            natural_id=plan["guid"],
            name=f"{offering_name or '?'}/{plan.get('name')}",
            details={"service_offering": offering_name, "service_plan": plan.get("name"),
                     "free": plan.get("free")},
        ))
    return kinds


def _observe_instance(instance: dict[str, Any]) -> ObservedResource:
    relationships = instance.get("relationships", {})
    plan = (relationships.get("service_plan") or {}).get("data") or {}
    space = (relationships.get("space") or {}).get("data") or {}
    return ObservedResource(
        natural_id=instance["guid"],
        name=instance.get("name"),
        space_guid=space.get("guid"),
        kind_natural_id=plan.get("guid") or NO_PLAN_KIND,
        rate=1,
        details={},
    )
