"""The oracle: what really ran on the simulated foundation, hour by hour.

``UsageHistory`` is written by the foundation's state as it changes (``FoundationState``), from
the changed records themselves (an app's desired state, a process's size, an instance's type
and plan), never from the usage events it serves: the events are what the project reads, the
history is what it is checked against. ``usage(start, end)`` integrates that history over
each UTC hour of a window into unit-seconds per resource and resource kind, in plain Python,
sharing nothing with the project's derivation (SQL over landed observations).

What counts, as billing counts it (README, "How usage is measured"):

- ``cfapps``: a process of a STARTED app uses ``instances x memory_in_mb`` MiB per second
  (resource: the process guid; kind ``app-memory``); a stopped app's processes use nothing;
- ``cfservices``: a managed service instance uses 1 per second while it exists (resource: the
  instance guid; kind: its plan guid). User-provided instances are never billed, so they are not
  recorded at all.

A change at second ``t`` holds from ``t`` on; several changes at one second leave the last one.
The history starts when the foundation does: nothing is known before ``known_from``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime

HOUR = 3600
APP_MEMORY_KIND = "app-memory"


@dataclass(frozen=True, slots=True)
class TrueUsage:
    """Usage of one resource of one kind in one UTC hour, in unit-seconds."""

    hour_start: int
    """Epoch second of the hour's start."""
    meter: str
    resource: str
    kind: str
    unit_seconds: int
    space_guid: str
    org_guid: str

    def as_json(self) -> dict[str, object]:
        return {
            "hour_start": datetime.fromtimestamp(self.hour_start, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "meter": self.meter, "resource": self.resource, "kind": self.kind,
            "unit_seconds": self.unit_seconds, "space_guid": self.space_guid,
            "org_guid": self.org_guid,
        }


class OutsideHistory(ValueError):
    """A window the history cannot answer: before it starts, after now, or not whole hours."""


class _Timeline:
    """One resource's billable state over time: parallel lists, sorted by time."""

    __slots__ = ("meter", "space_guid", "org_guid", "times", "rates", "kinds")

    def __init__(self, meter: str, space_guid: str, org_guid: str) -> None:
        self.meter = meter
        self.space_guid = space_guid
        self.org_guid = org_guid
        self.times: list[int] = []
        self.rates: list[int] = []
        self.kinds: list[str] = []

    def set(self, at: int, rate: int, kind: str) -> None:
        if self.times and at < self.times[-1]:
            raise ValueError(f"history of a resource cannot go back in time ({at} after "
                             f"{self.times[-1]})")
        if self.rates and self.rates[-1] == rate and self.kinds[-1] == kind:
            return  # nothing billable changed
        self.times.append(at)
        self.rates.append(rate)
        self.kinds.append(kind)

    def integrate(self, start: int, end: int, into: dict[tuple[int, str], int]) -> None:
        """Add this resource's unit-seconds in each hour of [start, end) to ``into``,
        keyed by (hour start, kind)."""
        times = self.times
        index = bisect_right(times, start) - 1  # the state holding at ``start``
        if index < 0:
            index = 0
        while index < len(times) and times[index] < end:
            rate = self.rates[index]
            seg_start = max(times[index], start)
            seg_end = times[index + 1] if index + 1 < len(times) else end
            seg_end = min(seg_end, end)
            if rate > 0 and seg_end > seg_start:
                kind = self.kinds[index]
                second = seg_start
                while second < seg_end:
                    hour = second - second % HOUR
                    upto = min(seg_end, hour + HOUR)
                    key = (hour, kind)
                    into[key] = into.get(key, 0) + rate * (upto - second)
                    second = upto
            index += 1


class UsageHistory:
    """The true billable state of every resource since ``known_from`` (epoch seconds)."""

    def __init__(self, known_from: int) -> None:
        self.known_from = known_from
        self.now = known_from
        self._timelines: dict[tuple[str, str], _Timeline] = {}

    def __len__(self) -> int:
        return len(self._timelines)

    def set(self, meter: str, resource: str, at: int, rate: int, kind: str,
            space_guid: str, org_guid: str) -> None:
        """From epoch second ``at`` on, ``resource`` uses ``rate`` units per second of ``kind``."""
        timeline = self._timelines.get((meter, resource))
        if timeline is None:
            timeline = self._timelines[(meter, resource)] = _Timeline(meter, space_guid,
                                                                     org_guid)
        timeline.set(at, rate, kind)

    def changes(self, meter: str) -> list[tuple[str, str, str, list[tuple[int, int, str]]]]:
        """Each resource of ``meter``: (resource, space guid, org guid, [(second, rate, kind)])
        as it changed, oldest first."""
        return [(resource, t.space_guid, t.org_guid, list(zip(t.times, t.rates, t.kinds,
                                                               strict=True)))
                for (m, resource), t in self._timelines.items() if m == meter]

    def usage(self, start: int, end: int) -> list[TrueUsage]:
        """Every resource's unit-seconds per kind in each UTC hour of [start, end), ordered
        by hour, meter, resource and kind; resource-hours that used nothing are left out."""
        if start % HOUR or end % HOUR:
            raise OutsideHistory("the window must start and end on whole UTC hours")
        if end <= start:
            raise OutsideHistory("the window must end after it starts")
        if start < self.known_from:
            raise OutsideHistory(
                f"the history starts at {_iso(self.known_from)}; nothing is known before it")
        if end > self.now:
            raise OutsideHistory(
                f"the window ends after virtual now ({_iso(self.now)}): advance time first")
        rows = []
        for (meter, resource), timeline in self._timelines.items():
            totals: dict[tuple[int, str], int] = {}
            timeline.integrate(start, end, totals)
            rows.extend(
                TrueUsage(hour, meter, resource, kind, value, timeline.space_guid,
                          timeline.org_guid)
                for (hour, kind), value in totals.items() if value > 0)
        rows.sort(key=lambda r: (r.hour_start, r.meter, r.resource, r.kind))
        return rows


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
