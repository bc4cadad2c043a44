"""The mutable store behind a Foundation: resources by guid, and every state change with its events.

Each mutation writes the usage events the Cloud Controller's model hooks would write for it
(docs/cf-and-uaa.md §5.4), so the events can never disagree with the state. Resource dicts keep
insertion order, which is the API's default (id) order; a replaced record keeps its position.
"""

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from billing_dagster.simulator.catalog import Catalog
from billing_dagster.simulator.event_log import EventLog
from billing_dagster.simulator.oracle import APP_MEMORY_KIND, UsageHistory
from billing_dagster.simulator.records import (
    USAGE_EVENT_INSTANCE_TYPES,
    App,
    AppState,
    AppUsageEvent,
    Organization,
    Process,
    ServiceEventState,
    ServiceInstance,
    ServiceUsageEvent,
    Space,
)

T = TypeVar("T")


_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_BITS = (4 << 76) | (0x8000 << 48)


def new_guid(rng: random.Random) -> str:
    """A version-4 guid drawn from ``rng`` (so it is reproducible from the seed).

    Same text as ``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, several times faster,
    which matters when generating hundreds of thousands of resources.
    """
    h = f"{(rng.getrandbits(128) & _VERSION_MASK) | _VERSION_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _epoch(at: str) -> int:
    """Epoch second of a wire timestamp (``YYYY-MM-DDThh:mm:ssZ``)."""
    return int(datetime.fromisoformat(at).timestamp())


def pick(rng: random.Random, items: Sequence[T]) -> T:
    """A uniform choice like ``rng.choice``, cheaper (one ``random()`` call)."""
    return items[int(rng.random() * len(items))]


class IndexedSet:
    """A set of guids with O(1) add, remove and uniform random choice.

    Removal swaps the last item into the hole, so the order depends only on the sequence of
    operations, which keeps random choices reproducible.
    """

    __slots__ = ("_items", "_positions")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._positions: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, guid: object) -> bool:
        return guid in self._positions

    def __getitem__(self, index: int) -> str:
        return self._items[index]

    def add(self, guid: str) -> None:
        if guid not in self._positions:
            self._positions[guid] = len(self._items)
            self._items.append(guid)

    def discard(self, guid: str) -> None:
        position = self._positions.pop(guid, None)
        if position is None:
            return
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._positions[last] = position

    def choice(self, rng: random.Random) -> str:
        return self._items[rng.randrange(len(self._items))]


class FoundationState:
    """Resources, the indexes used to pick random targets, and the two event streams."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.organizations: dict[str, Organization] = {}
        self.spaces: dict[str, Space] = {}
        self.space_guids: list[str] = []
        self.apps: dict[str, App] = {}
        self.processes: dict[str, Process] = {}
        self.app_processes: dict[str, list[str]] = {}
        self.service_instances: dict[str, ServiceInstance] = {}
        self.started_apps = IndexedSet()
        self.stopped_apps = IndexedSet()
        self.managed_instances = IndexedSet()
        self.user_provided_instances = IndexedSet()
        self.app_events: EventLog[AppUsageEvent] = EventLog()
        self.service_events: EventLog[ServiceUsageEvent] = EventLog()
        self.history: UsageHistory | None = None
        """The oracle's record of what really ran; started by ``start_history``."""

    # -- the oracle's history (what really ran, written from the records, not the events) ---

    def start_history(self, at: str) -> None:
        """Begin the true history at ``at`` with the state of every resource as it stands."""
        self.history = UsageHistory(_epoch(at))
        self.history.now = _epoch(at)
        for app_guid in self.apps:
            self._record_app(app_guid, at)
        for instance in self.service_instances.values():
            self._record_instance(instance, at, present=True)

    def record_now(self, at: int) -> None:
        """Virtual time has reached epoch second ``at`` (the history answers up to it)."""
        if self.history is not None:
            self.history.now = max(self.history.now, at)

    def _record_app(self, app_guid: str, at: str, gone: bool = False) -> None:
        if self.history is None:
            return
        app = self.apps[app_guid]
        space = self.spaces[app.space_guid]
        when = _epoch(at)
        for process in self.processes_of(app_guid):
            rate = 0 if gone or app.state != "STARTED" else process.instances * process.memory_in_mb
            self.history.set("cfapps", process.guid, when, rate, APP_MEMORY_KIND, space.guid,
                             space.organization_guid)

    def _record_instance(self, instance: ServiceInstance, at: str, *, present: bool) -> None:
        if self.history is None or instance.type != "managed" or instance.plan_guid is None:
            return  # user-provided instances are never billed
        space = self.spaces[instance.space_guid]
        self.history.set("cfservices", instance.guid, _epoch(at), 1 if present else 0,
                         instance.plan_guid, space.guid, space.organization_guid)

    # -- inventory without events (initial population) -------------------------------------

    def add_organization(self, org: Organization) -> None:
        self.organizations[org.guid] = org

    def add_space(self, space: Space) -> None:
        self.spaces[space.guid] = space
        self.space_guids.append(space.guid)

    def add_app(self, app: App, processes: list[Process]) -> None:
        """Insert an app and its processes as they are, writing no event."""
        self.apps[app.guid] = app
        self.app_processes[app.guid] = [process.guid for process in processes]
        for process in processes:
            self.processes[process.guid] = process
        (self.started_apps if app.state == "STARTED" else self.stopped_apps).add(app.guid)

    def add_service_instance(self, instance: ServiceInstance) -> None:
        """Insert a service instance, writing no event."""
        self.service_instances[instance.guid] = instance
        if instance.type == "managed":
            self.managed_instances.add(instance.guid)
        else:
            self.user_provided_instances.add(instance.guid)

    def processes_of(self, app_guid: str) -> list[Process]:
        return [self.processes[guid] for guid in self.app_processes[app_guid]]

    # -- app changes -----------------------------------------------------------------------

    def start_app(self, app_guid: str, at: str, rng: random.Random) -> None:
        """STOPPED -> STARTED: one STARTED event (previous STOPPED) per process."""
        app = replace(self.apps[app_guid], state="STARTED", updated_at=at)
        self.apps[app_guid] = app
        self.stopped_apps.discard(app_guid)
        self.started_apps.add(app_guid)
        self._record_app(app_guid, at)
        for process in self.processes_of(app_guid):
            self._app_event(new_guid(rng), at, "STARTED", "STOPPED", app, process,
                            process.instances, process.memory_in_mb)

    def stop_app(self, app_guid: str, at: str, rng: random.Random) -> None:
        """STARTED -> STOPPED: one STOPPED event per process, carrying its non-zero values."""
        app = replace(self.apps[app_guid], state="STOPPED", updated_at=at)
        self.apps[app_guid] = app
        self.started_apps.discard(app_guid)
        self.stopped_apps.add(app_guid)
        self._record_app(app_guid, at)
        for process in self.processes_of(app_guid):
            self._app_event(new_guid(rng), at, "STOPPED", "STARTED", app, process,
                            process.instances, process.memory_in_mb)

    def scale_process(
        self, process_guid: str, instances: int, memory_in_mb: int, at: str, rng: random.Random,
        stamp: str | None = None,
    ) -> None:
        """Change a process's size; a started app writes STARTED -> STARTED with both sizes.

        ``stamp`` is the time the event says, when the controller's clock is not ``at``."""
        old = self.processes[process_guid]
        new = replace(old, instances=instances, memory_in_mb=memory_in_mb, updated_at=at,
                      version=new_guid(rng))
        self.processes[process_guid] = new
        app = self.apps[old.app_guid]
        self._record_app(app.guid, at)
        if app.state == "STARTED":
            self._app_event(new_guid(rng), stamp or at, "STARTED", "STARTED", app, new,
                            old.instances, old.memory_in_mb)

    def create_app(self, app: App, processes: list[Process], at: str, rng: random.Random) -> None:
        """Push a new app; if it is created started, its processes write STARTED events."""
        self.add_app(app, processes)
        self._record_app(app.guid, at)
        if app.state == "STARTED":
            for process in processes:
                self._app_event(new_guid(rng), at, "STARTED", "STOPPED", app, process,
                                process.instances, process.memory_in_mb)

    def delete_app(self, app_guid: str, at: str, rng: random.Random) -> None:
        """Delete an app; a started one is stopped first (STOPPED events), as CC's hook does."""
        if self.apps[app_guid].state == "STARTED":
            self.stop_app(app_guid, at, rng)
        self._record_app(app_guid, at, gone=True)
        del self.apps[app_guid]
        self.stopped_apps.discard(app_guid)
        for process_guid in self.app_processes.pop(app_guid):
            del self.processes[process_guid]

    # -- service instance changes ----------------------------------------------------------

    def create_service_instance(
        self, instance: ServiceInstance, at: str, rng: random.Random
    ) -> None:
        self.add_service_instance(instance)
        self._record_instance(instance, at, present=True)
        self._service_event(new_guid(rng), at, "CREATED", instance)

    def replan_service_instance(
        self, instance_guid: str, plan_guid: str, at: str, rng: random.Random
    ) -> None:
        """Move a managed instance to another plan: one UPDATED event."""
        instance = replace(self.service_instances[instance_guid], plan_guid=plan_guid,
                           updated_at=at, last_operation="update")
        self.service_instances[instance_guid] = instance
        self._record_instance(instance, at, present=True)
        self._service_event(new_guid(rng), at, "UPDATED", instance)

    def delete_service_instance(self, instance_guid: str, at: str, rng: random.Random) -> None:
        instance = self.service_instances.pop(instance_guid)
        self.managed_instances.discard(instance_guid)
        self.user_provided_instances.discard(instance_guid)
        self._record_instance(instance, at, present=False)
        self._service_event(new_guid(rng), at, "DELETED", instance)

    # -- reseeding -------------------------------------------------------------------------

    def reseed_app_events(self, at: str) -> None:
        """Truncate app events, then one STARTED (previous == current) per started process.

        Each seeded event reuses its process's guid, as the Cloud Controller does.
        """
        self.app_events.clear()
        for process in self.processes.values():
            app = self.apps[process.app_guid]
            if app.state == "STARTED":
                self._app_event(process.guid, at, "STARTED", "STARTED", app, process,
                                process.instances, process.memory_in_mb)

    def reseed_service_events(self, at: str) -> None:
        """Truncate service events, then one CREATED per instance (reusing its guid)."""
        self.service_events.clear()
        for instance in self.service_instances.values():
            self._service_event(instance.guid, at, "CREATED", instance)

    # -- event writers ---------------------------------------------------------------------

    def _app_event(
        self,
        guid: str,
        at: str,
        state: AppState,
        previous_state: AppState,
        app: App,
        process: Process,
        previous_instances: int,
        previous_memory: int,
    ) -> None:
        space = self.spaces[app.space_guid]
        buildpack = (
            self.catalog.buildpacks[app.buildpack_guid] if app.buildpack_guid else None
        )
        log = self.app_events
        log.append(AppUsageEvent(
            id=log.next_id(),
            guid=guid,
            created_at=at,
            state=state,
            previous_state=previous_state,
            app_guid=app.guid,
            app_name=app.name,
            process_guid=process.guid,
            process_type=process.type,
            space_guid=space.guid,
            space_name=space.name,
            organization_guid=space.organization_guid,
            buildpack_guid=buildpack.guid if buildpack else None,
            buildpack_name=buildpack.name if buildpack else None,
            instance_count=process.instances,
            previous_instance_count=previous_instances,
            memory_in_mb_per_instance=process.memory_in_mb,
            previous_memory_in_mb_per_instance=previous_memory,
        ))

    def _service_event(
        self, guid: str, at: str, state: ServiceEventState, instance: ServiceInstance
    ) -> None:
        space = self.spaces[instance.space_guid]
        plan = offering = broker = None
        if instance.plan_guid is not None:
            plan = self.catalog.plans[instance.plan_guid]
            offering = self.catalog.offerings[plan.offering_guid]
            broker = self.catalog.brokers[offering.broker_guid]
        log = self.service_events
        log.append(ServiceUsageEvent(
            id=log.next_id(),
            guid=guid,
            created_at=at,
            state=state,
            space_guid=space.guid,
            space_name=space.name,
            organization_guid=space.organization_guid,
            service_instance_guid=instance.guid,
            service_instance_name=instance.name,
            service_instance_type=USAGE_EVENT_INSTANCE_TYPES[instance.type],
            service_plan_guid=plan.guid if plan else None,
            service_plan_name=plan.name if plan else None,
            service_offering_guid=offering.guid if offering else None,
            service_offering_name=offering.name if offering else None,
            service_broker_guid=broker.guid if broker else None,
            service_broker_name=broker.name if broker else None,
        ))
