"""One stream of usage events as the Cloud Controller keeps it (docs/cf-and-uaa.md §5.5-§5.7).

Events are kept in API order (increasing integer id, which is also creation order here),
can be read after a given event guid, are pruned by age while always keeping the newest row,
and can be truncated for a purge-and-reseed. Ids keep increasing across a purge, as a
database sequence does.
"""

from bisect import bisect_left, bisect_right
from operator import attrgetter
from typing import Generic, Protocol, TypeVar


class UnknownEventGuid(LookupError):
    """``after_guid`` names no event of the stream (never existed, pruned or purged)."""


class _Event(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def guid(self) -> str: ...

    @property
    def created_at(self) -> str: ...


E = TypeVar("E", bound=_Event)

_event_id = attrgetter("id")
_event_created_at = attrgetter("created_at")


class EventLog(Generic[E]):
    """The retained events of one stream (app or service usage events)."""

    __slots__ = ("_events", "_ids", "_last_id")

    def __init__(self) -> None:
        self._events: list[E] = []
        self._ids: dict[str, int] = {}
        self._last_id = 0

    def __len__(self) -> int:
        return len(self._events)

    def next_id(self) -> int:
        """Reserve the id of the next event (ids are never reused, even after a purge)."""
        self._last_id += 1
        return self._last_id

    def append(self, event: E) -> None:
        """Add an event made with the id from ``next_id`` (so ids stay increasing)."""
        self._events.append(event)
        self._ids[event.guid] = event.id

    def all(self) -> list[E]:
        return list(self._events)

    def after(self, after_guid: str | None) -> list[E]:
        """Events with an id greater than the event ``after_guid`` (all of them for None)."""
        if after_guid is None:
            return list(self._events)
        event_id = self._ids.get(after_guid)
        if event_id is None:
            raise UnknownEventGuid(after_guid)
        return self._events[bisect_right(self._events, event_id, key=_event_id):]

    def get(self, guid: str) -> E | None:
        event_id = self._ids.get(guid)
        if event_id is None:
            return None
        return self._events[bisect_left(self._events, event_id, key=_event_id)]

    def prune_before(self, cutoff: str) -> int:
        """Drop events created before ``cutoff`` (wire timestamp), keeping the newest one."""
        events = self._events
        count = min(bisect_left(events, cutoff, key=_event_created_at), len(events) - 1)
        if count <= 0:
            return 0
        for event in events[:count]:
            del self._ids[event.guid]
        del events[:count]
        return count

    def clear(self) -> None:
        """Truncate the stream (the first half of a purge-and-reseed)."""
        self._events.clear()
        self._ids.clear()
