"""Immutable records of a simulated foundation: the resources and the usage events.

A change to a resource replaces its record (``dataclasses.replace``), so a record handed out
once never changes under its reader. Timestamps are kept in their wire form,
``YYYY-MM-DDThh:mm:ssZ`` (whole seconds, UTC), which also sorts chronologically as text.
"""

from dataclasses import dataclass
from typing import Literal

AppState = Literal["STARTED", "STOPPED"]
ServiceInstanceType = Literal["managed", "user-provided"]
ServiceEventState = Literal["CREATED", "UPDATED", "DELETED"]

USAGE_EVENT_INSTANCE_TYPES: dict[str, str] = {
    "managed": "managed_service_instance",
    "user-provided": "user_provided_service_instance",
}
"""The spelling of a service instance type in usage events (differs from /v3/service_instances)."""


@dataclass(frozen=True, slots=True)
class Organization:
    guid: str
    name: str
    created_at: str
    quota_guid: str


@dataclass(frozen=True, slots=True)
class Space:
    guid: str
    name: str
    created_at: str
    organization_guid: str


@dataclass(frozen=True, slots=True)
class Buildpack:
    guid: str
    name: str


@dataclass(frozen=True, slots=True)
class App:
    """An app; ``state`` is the desired state, the one billing counts."""

    guid: str
    name: str
    state: AppState
    space_guid: str
    created_at: str
    updated_at: str
    buildpack_guid: str | None
    """None for a docker app."""
    droplet_guid: str


@dataclass(frozen=True, slots=True)
class Process:
    """A process of an app; the ``web`` process has the app's guid, as in CF."""

    guid: str
    app_guid: str
    type: str
    instances: int
    memory_in_mb: int
    created_at: str
    updated_at: str
    version: str


@dataclass(frozen=True, slots=True)
class ServiceBroker:
    guid: str
    name: str
    url: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ServiceOffering:
    guid: str
    name: str
    description: str
    tags: tuple[str, ...]
    documentation_url: str
    broker_guid: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ServicePlan:
    guid: str
    name: str
    description: str
    free: bool
    offering_guid: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """A service instance; user-provided ones have no plan."""

    guid: str
    name: str
    type: ServiceInstanceType
    space_guid: str
    plan_guid: str | None
    created_at: str
    updated_at: str
    last_operation: Literal["create", "update"]


@dataclass(frozen=True, slots=True)
class AppUsageEvent:
    """One row of /v3/app_usage_events (docs/cf-and-uaa.md §5.2), with values as of its
    ``created_at``."""

    id: int
    guid: str
    created_at: str
    state: AppState
    previous_state: AppState
    app_guid: str
    app_name: str
    process_guid: str
    process_type: str
    space_guid: str
    space_name: str
    organization_guid: str
    buildpack_guid: str | None
    buildpack_name: str | None
    instance_count: int
    previous_instance_count: int
    memory_in_mb_per_instance: int
    previous_memory_in_mb_per_instance: int


@dataclass(frozen=True, slots=True)
class ServiceUsageEvent:
    """One row of /v3/service_usage_events (docs/cf-and-uaa.md §5.3); plan fields None if
    user-provided."""

    id: int
    guid: str
    created_at: str
    state: ServiceEventState
    space_guid: str
    space_name: str
    organization_guid: str
    service_instance_guid: str
    service_instance_name: str
    service_instance_type: str
    """``managed_service_instance`` or ``user_provided_service_instance``."""
    service_plan_guid: str | None
    service_plan_name: str | None
    service_offering_guid: str | None
    service_offering_name: str | None
    service_broker_guid: str | None
    service_broker_name: str | None
