"""What a meter returns: the state of its resources at one instant, as plain frozen records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from billing_dagster.cf.client import CloudFoundryClient


@dataclass(frozen=True)
class ObservedResource:
    """One metered thing as read now: from this instant it uses ``rate`` units per second of
    the resource kind ``kind_natural_id`` (0 = not running)."""

    natural_id: str
    name: str | None
    space_guid: str | None
    kind_natural_id: str
    rate: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedKind:
    """A resource kind whose name this read learned (e.g. a service plan and its offering)."""

    natural_id: str
    name: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MeterSnapshot:
    """A meter's reading. ``complete`` means every resource of the meter was read, so a
    resource missing from it has stopped or gone; a partial reading only adds what it saw."""

    meter: str
    resources: list[ObservedResource]
    kinds: list[ObservedKind]
    complete: bool
    error: str | None = None
    ignored: dict[str, int] = field(default_factory=dict)  # what was skipped, by reason

    @property
    def status(self) -> str:
        if self.complete:
            return "complete"
        return "partial" if self.resources else "failed"


@dataclass(frozen=True)
class EventStream:
    """A CF usage-event stream and the meter whose resources its events change: how to turn
    one event into a staging row, and the named queries that land it and observe it."""

    name: str  # the v3 list, e.g. app_usage_events
    meter: str
    row: Callable[[int, dict[str, Any]], tuple]
    copy: str
    land: str
    ensure: str  # creates the resources (and kinds) first seen in the page
    observe: str  # then turns the page's new events into observations of them
    rebuild: str  # the state at the oldest retained event, after a rebasing read

    @property
    def path(self) -> str:
        return f"/v3/{self.name}"


class Meter(Protocol):
    name: str
    events: EventStream | None

    def snapshot(self, cf: CloudFoundryClient) -> MeterSnapshot:
        """Read the current state of every resource of this meter. A failure after some data
        was read returns what was read with complete=False and the error, never raises it
        away; a failure before anything was read returns an empty, failed snapshot."""
        ...


def missing_field(exc: Exception) -> object:
    """The field a record lacked (a KeyError's key), or the error itself."""
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else exc


def malformed(record: str, read: int, exc: Exception) -> str:
    """The error of a listing that stopped at a record without a field it needs."""
    return (f"malformed {record} record after {read} good ones: missing or invalid field "
            f"{missing_field(exc)!r}; what was read before it is kept as a partial reading")
