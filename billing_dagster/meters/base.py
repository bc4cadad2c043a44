"""What a meter returns: the state of its resources at one instant, as plain frozen records."""

from __future__ import annotations

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


class Meter(Protocol):
    name: str

    def snapshot(self, cf: CloudFoundryClient) -> MeterSnapshot:
        """Read the current state of every resource of this meter. A failure after some data
        was read returns what was read with complete=False and the error, never raises it
        away; a failure before anything was read returns an empty, failed snapshot."""
        ...
