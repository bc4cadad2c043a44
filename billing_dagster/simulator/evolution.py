"""How a foundation changes over virtual time.

Each whole UTC hour has a schedule of changes drawn from ``Random(f"{seed}:hour:{hour}")``:
about 2 % of the foundation's app count in app changes and 1 % of its service instance count in
service changes, each at a random whole second of the hour. Which app or instance a change hits
is decided only when the change is applied, from the state at that moment and from one
apply-time generator consumed in application order. Changes are applied in a total order
(time, then a tie-break that does not depend on when they were scheduled), so the result is the
same however the advance to a given time is split into calls.
"""

import heapq
import random
from collections.abc import Callable
from dataclasses import replace
from itertools import accumulate
from typing import NamedTuple

from billing_dagster.simulator.catalog import MEMORY_SIZES
from billing_dagster.simulator.generation import ResourceFactory, iso_seconds
from billing_dagster.simulator.state import FoundationState

HOUR = 3600
APP_CHANGE_RATE = 0.02
SERVICE_CHANGE_RATE = 0.01
NEW_APP_STARTED_SHARE = 0.7
INSTANCE_SIZES = (1, 2, 3, 4)

APP_CHANGE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("app_start", 18),
    ("app_stop", 18),
    ("app_scale", 22),
    ("app_crash", 13),
    ("app_create", 9),
    ("app_delete", 9),
    ("app_deploy", 8),
    ("app_ephemeral", 3),
)
SERVICE_CHANGE_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("service_create", 32),
    ("service_replan", 30),
    ("service_delete", 32),
    ("service_ephemeral", 6),
)
DEPLOY_SWITCH_SECONDS = (20, 600)
"""A blue-green deploy deletes the old app this long after the new one started."""
EPHEMERAL_APP_SECONDS = (0, 5)
EPHEMERAL_SERVICE_SECONDS = (0, 90)
"""How long a short-lived app or instance lives (0: created and deleted in the same second)."""


class Change(NamedTuple):
    """One pending change, ordered as a tuple: by time, scheduled before follow-up, then origin.

    The first four fields are unique per change, so ``kind`` and ``target`` are never compared.
    A NamedTuple rather than an ordered dataclass because the heap compares millions of times.
    """

    at: int
    """Epoch second at which it happens."""
    follow_up: bool
    origin_at: int
    origin_index: int
    """Position in its hour's schedule (of the change it follows, for a follow-up)."""
    kind: str
    target: str | None = None


def _kind_picker(weights: tuple[tuple[str, int], ...]) -> Callable[[float], str]:
    kinds = [kind for kind, _ in weights]
    cumulative = list(accumulate(weight for _, weight in weights))
    total = cumulative[-1]

    def pick(roll: float) -> str:
        point = roll * total
        for kind, bound in zip(kinds, cumulative, strict=True):
            if point < bound:
                return kind
        return kinds[-1]

    return pick


_pick_app_change = _kind_picker(APP_CHANGE_WEIGHTS)
_pick_service_change = _kind_picker(SERVICE_CHANGE_WEIGHTS)


def change_counts(apps: int, service_instances: int) -> tuple[int, int]:
    """Changes per hour: (app changes, service changes) for a foundation of this size."""
    return (
        max(1, round(APP_CHANGE_RATE * apps)),
        max(1, round(SERVICE_CHANGE_RATE * service_instances)),
    )


def hour_schedule(seed: int, hour: int, app_changes: int, service_changes: int) -> list[Change]:
    """The changes of the hour starting at epoch ``hour * 3600``, in application order."""
    rng = random.Random(f"{seed}:hour:{hour}")
    base = hour * HOUR
    changes = []
    for index in range(app_changes + service_changes):
        at = base + rng.randrange(HOUR)
        roll = rng.random()
        kind = _pick_app_change(roll) if index < app_changes else _pick_service_change(roll)
        changes.append(Change(at, False, at, index, kind))
    changes.sort()
    return changes


class Evolver:
    """Schedules hours lazily and applies their changes to a FoundationState in order."""

    def __init__(
        self,
        seed: int,
        apps: int,
        service_instances: int,
        start_epoch: int,
        state: FoundationState,
        factory: ResourceFactory,
    ) -> None:
        self._seed = seed
        self._counts = change_counts(apps, service_instances)
        self._start = start_epoch
        self._state = state
        self._factory = factory
        self._rng = random.Random(f"{seed}:apply")
        self._pending: list[Change] = []
        self._next_hour = start_epoch // HOUR
        self.applied = 0
        self._handlers: dict[str, Callable[[Change, str], None]] = {
            "app_start": self._app_start,
            "app_stop": self._app_stop,
            "app_scale": self._app_scale,
            "app_crash": self._app_crash,
            "app_restart": self._app_restart,
            "app_create": self._app_create,
            "app_delete": self._app_delete,
            "app_deploy": self._app_deploy,
            "app_ephemeral": self._app_ephemeral,
            "app_delete_target": self._app_delete_target,
            "service_ephemeral": self._service_ephemeral,
            "service_delete_target": self._service_delete_target,
            "service_create": self._service_create,
            "service_replan": self._service_replan,
            "service_delete": self._service_delete,
        }

    def run_until(self, until: int, after_hour: Callable[[int], None]) -> None:
        """Apply every change at or before epoch second ``until``.

        ``after_hour(t)`` is called each time a whole hour has been applied, with the last
        second of that hour, so the caller can prune retained events as time goes by.
        """
        while self._next_hour * HOUR <= until:
            hour = self._next_hour
            for change in hour_schedule(self._seed, hour, *self._counts):
                if change.at > self._start:
                    heapq.heappush(self._pending, change)
            self._next_hour += 1
            end_of_hour = min(until, hour * HOUR + HOUR - 1)
            self._apply_until(end_of_hour)
            after_hour(end_of_hour)
        self._apply_until(until)

    def _apply_until(self, until: int) -> None:
        pending = self._pending
        while pending and pending[0].at <= until:
            change = heapq.heappop(pending)
            self.applied += 1
            self._handlers[change.kind](change, iso_seconds(change.at))

    # -- app changes -----------------------------------------------------------------------

    def _app_start(self, change: Change, at: str) -> None:
        state = self._state
        if not state.stopped_apps:
            return self._app_create(change, at)
        state.start_app(state.stopped_apps.choice(self._rng), at, self._rng)

    def _app_stop(self, change: Change, at: str) -> None:
        state = self._state
        if not state.started_apps:
            return self._app_start(change, at)
        state.stop_app(state.started_apps.choice(self._rng), at, self._rng)

    def _app_scale(self, change: Change, at: str) -> None:
        state, rng = self._state, self._rng
        if not state.started_apps:
            return self._app_start(change, at)
        process = rng.choice(state.processes_of(state.started_apps.choice(rng)))
        instances, memory = process.instances, process.memory_in_mb
        mode = rng.random()
        if mode < 0.8:
            instances = rng.choice([n for n in INSTANCE_SIZES if n != instances])
        if mode >= 0.5:
            memory = rng.choice([m for m in MEMORY_SIZES if m != memory])
        state.scale_process(process.guid, instances, memory, at, rng)

    def _app_crash(self, change: Change, at: str) -> None:
        """Stop a started app now and start it again a few seconds later (a follow-up)."""
        state, rng = self._state, self._rng
        if not state.started_apps:
            return self._app_start(change, at)
        app_guid = state.started_apps.choice(rng)
        state.stop_app(app_guid, at, rng)
        restart_at = change.at + rng.randint(2, 30)
        heapq.heappush(self._pending, Change(
            restart_at, True, change.origin_at, change.origin_index, "app_restart", app_guid
        ))

    def _app_restart(self, change: Change, at: str) -> None:
        # A no-op if the app was deleted or started again in between.
        if change.target is not None and change.target in self._state.stopped_apps:
            self._state.start_app(change.target, at, self._rng)

    def _app_create(self, change: Change, at: str) -> None:
        state, rng = self._state, self._rng
        space_guid = state.space_guids[rng.randrange(len(state.space_guids))]
        app, processes = self._factory.app(
            rng, space_guid, at, started=rng.random() < NEW_APP_STARTED_SHARE
        )
        state.create_app(app, processes, at, rng)

    def _app_delete(self, change: Change, at: str) -> None:
        state, rng = self._state, self._rng
        started, stopped = state.started_apps, state.stopped_apps
        total = len(started) + len(stopped)
        if total == 0:
            return self._app_create(change, at)
        index = rng.randrange(total)
        guid = started[index] if index < len(started) else stopped[index - len(started)]
        state.delete_app(guid, at, rng)

    def _app_deploy(self, change: Change, at: str) -> None:
        """A blue-green deploy: a new app (new guids) with the same processes starts next to
        a started app, and the old app is deleted a little later (a follow-up)."""
        state, rng = self._state, self._rng
        if not state.started_apps:
            return self._app_create(change, at)
        old = state.apps[state.started_apps.choice(rng)]
        app, processes = self._factory.app(rng, old.space_guid, at, started=True)
        sizes = {p.type: (p.instances, p.memory_in_mb) for p in state.processes_of(old.guid)}
        processes = [replace(p, instances=sizes[p.type][0], memory_in_mb=sizes[p.type][1])
                     if p.type in sizes else p for p in processes]
        state.create_app(replace(app, name=old.name), processes, at, rng)
        self._follow_up(change, rng.randint(*DEPLOY_SWITCH_SECONDS), "app_delete_target",
                        old.guid)

    def _app_ephemeral(self, change: Change, at: str) -> None:
        """An app pushed started and deleted within seconds (0: in the same second)."""
        state, rng = self._state, self._rng
        space_guid = state.space_guids[rng.randrange(len(state.space_guids))]
        app, processes = self._factory.app(rng, space_guid, at, started=True)
        state.create_app(app, processes, at, rng)
        self._follow_up(change, rng.randint(*EPHEMERAL_APP_SECONDS), "app_delete_target",
                        app.guid)

    def _app_delete_target(self, change: Change, at: str) -> None:
        if change.target is not None and change.target in self._state.apps:
            self._state.delete_app(change.target, at, self._rng)

    def _follow_up(self, change: Change, after_seconds: int, kind: str, target: str) -> None:
        heapq.heappush(self._pending, Change(
            change.at + after_seconds, True, change.origin_at, change.origin_index, kind, target))

    # -- service changes -------------------------------------------------------------------

    def _service_ephemeral(self, change: Change, at: str) -> None:
        """A managed instance created and deleted within a minute or so (or the same second)."""
        state, rng = self._state, self._rng
        space_guid = state.space_guids[rng.randrange(len(state.space_guids))]
        instance = self._factory.service_instance(rng, space_guid, at)
        state.create_service_instance(instance, at, rng)
        self._follow_up(change, rng.randint(*EPHEMERAL_SERVICE_SECONDS),
                        "service_delete_target", instance.guid)

    def _service_delete_target(self, change: Change, at: str) -> None:
        if change.target is not None and change.target in self._state.service_instances:
            self._state.delete_service_instance(change.target, at, self._rng)

    def _service_create(self, change: Change, at: str) -> None:
        state, rng = self._state, self._rng
        space_guid = state.space_guids[rng.randrange(len(state.space_guids))]
        state.create_service_instance(self._factory.service_instance(rng, space_guid, at), at, rng)

    def _service_replan(self, change: Change, at: str) -> None:
        """Move a managed instance to another plan of the same offering (if it has one)."""
        state, rng = self._state, self._rng
        if not state.managed_instances:
            return self._service_create(change, at)
        instance = state.service_instances[state.managed_instances.choice(rng)]
        assert instance.plan_guid is not None
        catalog = state.catalog
        offering_guid = catalog.plans[instance.plan_guid].offering_guid
        others = [p for p in catalog.plans_by_offering[offering_guid] if p != instance.plan_guid]
        if others:
            state.replan_service_instance(instance.guid, rng.choice(others), at, rng)

    def _service_delete(self, change: Change, at: str) -> None:
        state, rng = self._state, self._rng
        managed, user_provided = state.managed_instances, state.user_provided_instances
        total = len(managed) + len(user_provided)
        if total == 0:
            return self._service_create(change, at)
        index = rng.randrange(total)
        guid = managed[index] if index < len(managed) else user_provided[index - len(managed)]
        state.delete_service_instance(guid, at, rng)
