"""A synthetic Cloud Foundry foundation: inventory, virtual clock and usage events, with no HTTP.

``Foundation(seed, apps, service_instances, start)`` generates orgs, spaces, apps with their
processes and service instances on a cloud.gov-like catalog, and writes the events a freshly
purged-and-reseeded Cloud Controller would hold at ``start``. ``advance_to(t)`` moves virtual time
forward, applying the hourly changes of ``evolution`` and pruning events older than the
retention. Same seed, size, start and target times give the same guids, state and events,
however the advance is split into calls.

Not thread-safe: the HTTP server serializes access with its own lock.
"""

import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from billing_dagster.simulator.catalog import build_catalog
from billing_dagster.simulator.event_log import UnknownEventGuid
from billing_dagster.simulator.evolution import Evolver
from billing_dagster.simulator.gc_pause import paused_gc
from billing_dagster.simulator.generation import (
    DEFAULT_QUOTA_GUID,
    ResourceFactory,
    iso_seconds,
    populate,
)
from billing_dagster.simulator.oracle import TrueUsage
from billing_dagster.simulator.records import (
    App,
    AppUsageEvent,
    Buildpack,
    Organization,
    Process,
    ServiceBroker,
    ServiceInstance,
    ServiceOffering,
    ServicePlan,
    ServiceUsageEvent,
    Space,
)
from billing_dagster.simulator.state import FoundationState, new_guid

__all__ = ["Foundation", "UnknownEventGuid"]

_DAY = 86_400
_CATALOG_AGE = timedelta(days=730)


def _epoch_seconds(moment: datetime, name: str) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return int(moment.timestamp() // 1)


class Foundation:
    """The whole simulated foundation at virtual time ``now``."""

    def __init__(
        self,
        seed: int,
        apps: int,
        service_instances: int,
        start: datetime,
        *,
        retention_days: int = 31,
        evolve: bool = True,
    ) -> None:
        if apps < 0 or service_instances < 0:
            raise ValueError("apps and service_instances must be >= 0")
        if retention_days < 1:
            raise ValueError("retention_days must be >= 1")
        self._seed = seed
        self._size = (apps, service_instances)
        self._retention_seconds = retention_days * _DAY
        self._retention_days = retention_days
        start_epoch = _epoch_seconds(start, "start")
        self._start = start_epoch
        self._now = start_epoch
        catalog = build_catalog(iso_seconds(start_epoch - int(_CATALOG_AGE.total_seconds())))
        self._state = FoundationState(catalog)
        factory = self._factory = ResourceFactory(catalog)
        start_iso = iso_seconds(start_epoch)
        with paused_gc():
            populate(self._state, factory, seed, apps, service_instances, start_epoch)
            self._state.reseed_app_events(start_iso)
            self._state.reseed_service_events(start_iso)
            self._state.start_history(start_iso)
        self._evolver = Evolver(seed, apps, service_instances, start_epoch, self._state, factory)
        self._evolve = evolve
        self._script_rng = random.Random(f"{seed}:script")
        self.after_advance: list[Callable[[datetime], None]] = []
        """Called with virtual now after each advance (the AWS side follows the foundation)."""

    # -- identity and clock ----------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def size(self) -> tuple[int, int]:
        """(apps, service_instances) as generated; the counts drift as time passes."""
        return self._size

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self._start, UTC)

    @property
    def now(self) -> datetime:
        """Virtual time (whole seconds, UTC)."""
        return datetime.fromtimestamp(self._now, UTC)

    @property
    def retention_days(self) -> int:
        return self._retention_days

    @property
    def changes_applied(self) -> int:
        """How many scheduled changes (and crash restarts) have been applied so far."""
        return self._evolver.applied

    def advance_to(self, t: datetime) -> None:
        """Move virtual time to ``t`` (floored to the second), applying every change up to it.

        Raises ValueError if ``t`` is before ``now``. Events older than the retention are
        pruned along the way (the newest event of each stream is always kept).
        """
        target = _epoch_seconds(t, "t")
        if target < self._now:
            raise ValueError(
                f"cannot move virtual time back from {iso_seconds(self._now)} "
                f"to {iso_seconds(target)}"
            )
        if self._evolve:
            with paused_gc():
                self._evolver.run_until(target, self._prune)
        self._now = target
        self._state.record_now(target)
        self._prune(target)
        for follow in self.after_advance:
            follow(self.now)

    # -- scripted changes (tests): each advances time to ``at`` first, then applies -------

    def start_app(self, app_guid: str, at: datetime) -> None:
        self._state.start_app(app_guid, self._script_at(at), self._script_rng)

    def stop_app(self, app_guid: str, at: datetime) -> None:
        self._state.stop_app(app_guid, self._script_at(at), self._script_rng)

    def scale_process(self, process_guid: str, at: datetime, *, instances: int | None = None,
                      memory_in_mb: int | None = None, clock_skew_seconds: int = 0) -> None:
        """``clock_skew_seconds`` stamps the event that much off ``at`` (a Cloud Controller
        whose clock is off), while the API order stays the order of the calls."""
        process = self._state.processes[process_guid]
        true_at = self._script_at(at)
        self._state.scale_process(
            process_guid, process.instances if instances is None else instances,
            process.memory_in_mb if memory_in_mb is None else memory_in_mb,
            true_at, self._script_rng,
            stamp=iso_seconds(self._now + clock_skew_seconds) if clock_skew_seconds else None)

    def replan_service_instance(self, instance_guid: str, plan_guid: str, at: datetime) -> None:
        self._state.replan_service_instance(instance_guid, plan_guid, self._script_at(at),
                                            self._script_rng)

    def delete_service_instance(self, instance_guid: str, at: datetime) -> None:
        self._state.delete_service_instance(instance_guid, self._script_at(at),
                                            self._script_rng)

    def create_organization(self, name: str, at: datetime, *, guid: str | None = None) -> str:
        """A new org (CF writes no usage event for it), with ``guid`` when given (a catalog
        written beforehand can then name it); returns its guid."""
        created = self._script_at(at)
        generated = new_guid(self._script_rng)  # drawn either way: later guids stay the same
        guid = guid or generated
        self._state.add_organization(Organization(guid, name, created, DEFAULT_QUOTA_GUID))
        return guid

    def rename_organization(self, org_guid: str, name: str, at: datetime) -> None:
        """``cf rename-org``: the org's name changes; its guid, spaces and usage stay."""
        self._script_at(at)
        org = self._state.organizations[org_guid]
        self._state.organizations[org_guid] = replace(org, name=name)

    def create_space(self, org_guid: str, name: str, at: datetime) -> str:
        """A new space of ``org_guid``; new apps and instances may then land in it."""
        created = self._script_at(at)
        guid = new_guid(self._script_rng)
        self._state.add_space(Space(guid, name, created, org_guid))
        return guid

    def create_app(self, space_guid: str, at: datetime, *, started: bool = True,
                   instances: int = 1, memory_in_mb: int = 256, worker: bool = False) -> str:
        """Push an app (a ``web`` process, and a ``worker`` if asked) of the given size."""
        created = self._script_at(at)
        rng = self._script_rng
        app, processes = self._factory.app(rng, space_guid, created, started=started)
        web = replace(processes[0], instances=instances, memory_in_mb=memory_in_mb)
        processes = [web]
        if worker:
            processes.append(replace(web, guid=new_guid(rng), type="worker"))
        self._state.create_app(app, processes, created, rng)
        return app.guid

    def delete_app(self, app_guid: str, at: datetime) -> None:
        self._state.delete_app(app_guid, self._script_at(at), self._script_rng)

    def create_service_instance(self, space_guid: str, plan_guid: str | None,
                                at: datetime) -> str:
        """A managed instance of ``plan_guid``, or a user-provided one for None."""
        created = self._script_at(at)
        rng = self._script_rng
        guid = new_guid(rng)
        instance = ServiceInstance(
            guid=guid, name=f"scripted-{guid[:8]}",
            type="managed" if plan_guid else "user-provided", space_guid=space_guid,
            plan_guid=plan_guid, created_at=created, updated_at=created,
            last_operation="create")
        self._state.create_service_instance(instance, created, rng)
        return guid

    def _script_at(self, at: datetime) -> str:
        self.advance_to(at)
        return iso_seconds(self._now)

    def _prune(self, at: int) -> None:
        cutoff = iso_seconds(at - self._retention_seconds)
        self._state.app_events.prune_before(cutoff)
        self._state.service_events.prune_before(cutoff)

    # -- the oracle -------------------------------------------------------------------------

    def true_usage(self, start: datetime, end: datetime) -> list[TrueUsage]:
        """What really ran in each UTC hour of [start, end): unit-seconds per resource and
        kind, from the foundation's own history (``oracle``), never from its usage events.
        OutsideHistory if the window is before ``start``, after ``now`` or not whole hours."""
        history = self._state.history
        assert history is not None
        return history.usage(_epoch_seconds(start, "start"), _epoch_seconds(end, "end"))

    def instance_lifetimes(self) -> list[tuple[str, str, str, list[tuple[int, int, str]]]]:
        """Every managed service instance's true history: (guid, space guid, org guid,
        [(epoch second, 1 present / 0 gone, plan guid)]), as the oracle recorded it."""
        history = self._state.history
        assert history is not None
        return history.changes("cfservices")

    # -- inventory (read-only views, in API default order) ---------------------------------

    @property
    def organizations(self) -> Mapping[str, Organization]:
        return MappingProxyType(self._state.organizations)

    @property
    def spaces(self) -> Mapping[str, Space]:
        return MappingProxyType(self._state.spaces)

    @property
    def apps(self) -> Mapping[str, App]:
        return MappingProxyType(self._state.apps)

    @property
    def processes(self) -> Mapping[str, Process]:
        return MappingProxyType(self._state.processes)

    def processes_of(self, app_guid: str) -> list[Process]:
        """The processes of one app (``web`` first)."""
        return self._state.processes_of(app_guid)

    @property
    def service_instances(self) -> Mapping[str, ServiceInstance]:
        """Managed and user-provided instances together."""
        return MappingProxyType(self._state.service_instances)

    @property
    def service_plans(self) -> Mapping[str, ServicePlan]:
        return MappingProxyType(self._state.catalog.plans)

    @property
    def service_offerings(self) -> Mapping[str, ServiceOffering]:
        return MappingProxyType(self._state.catalog.offerings)

    @property
    def service_brokers(self) -> Mapping[str, ServiceBroker]:
        return MappingProxyType(self._state.catalog.brokers)

    @property
    def buildpacks(self) -> Mapping[str, Buildpack]:
        return MappingProxyType(self._state.catalog.buildpacks)

    # -- usage events ----------------------------------------------------------------------

    @property
    def app_events(self) -> list[AppUsageEvent]:
        """Retained app usage events in API (id) order (a copy)."""
        return self._state.app_events.all()

    @property
    def service_events(self) -> list[ServiceUsageEvent]:
        """Retained service usage events in API (id) order (a copy)."""
        return self._state.service_events.all()

    def app_events_after(self, after_guid: str | None) -> list[AppUsageEvent]:
        """App events after the event ``after_guid`` (all for None); UnknownEventGuid if gone."""
        return self._state.app_events.after(after_guid)

    def service_events_after(self, after_guid: str | None) -> list[ServiceUsageEvent]:
        """Service events after ``after_guid`` (all for None); UnknownEventGuid if gone."""
        return self._state.service_events.after(after_guid)

    def app_event(self, guid: str) -> AppUsageEvent | None:
        return self._state.app_events.get(guid)

    def service_event(self, guid: str) -> ServiceUsageEvent | None:
        return self._state.service_events.get(guid)

    def purge_and_reseed_app_events(self) -> None:
        """Drop all app events, then one STARTED event per started process at ``now``."""
        self._state.reseed_app_events(iso_seconds(self._now))

    def purge_and_reseed_service_events(self) -> None:
        """Drop all service events, then one CREATED event per service instance at ``now``."""
        self._state.reseed_service_events(iso_seconds(self._now))
