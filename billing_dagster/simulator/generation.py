"""Making resources: the initial population of a foundation and the apps and instances born later.

Everything is drawn from the ``random.Random`` passed in, in a fixed order, so one seed always
gives the same foundation. Shapes: about one org per 25 apps, one space per 5 apps, 80 % of apps
started, 20 % with a ``worker`` process next to ``web``, 90 % of service instances managed.
"""

import random
import time
from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate

from billing_dagster.simulator.catalog import (
    AGENCIES,
    APP_ROLES,
    BUILDPACK_NAMES,
    INSTANCE_CHOICES,
    MEMORY_CHOICES,
    SPACE_NAMES,
    WORDS,
    Catalog,
    stable_guid,
)
from billing_dagster.simulator.records import (
    App,
    Organization,
    Process,
    ServiceInstance,
    Space,
)
from billing_dagster.simulator.state import FoundationState, new_guid, pick

STARTED_SHARE = 0.8
WORKER_SHARE = 0.2
DOCKER_SHARE = 0.05
MANAGED_SHARE = 0.9
DEFAULT_QUOTA_GUID = stable_guid("organization_quota", "default")
_DAY = 86_400


@lru_cache(maxsize=4096)
def _iso_date(epoch_day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_day * _DAY))


def iso_seconds(epoch_seconds: int) -> str:
    """Wire timestamp (``YYYY-MM-DDThh:mm:ssZ``) of an epoch second."""
    day, second = divmod(epoch_seconds, _DAY)
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{_iso_date(day)}T{hour:02d}:{minute:02d}:{second:02d}Z"


class ResourceFactory:
    """Draws new apps and service instances; the same draws whether at start or later."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._buildpack_guids = [stable_guid("buildpack", name) for name in BUILDPACK_NAMES]
        self._offering_guids = [guid for guid, _ in catalog.offering_weights]
        self._offering_cumulative = list(accumulate(w for _, w in catalog.offering_weights))
        self._plan_cumulative = {
            offering: list(accumulate(len(plans) - i for i in range(len(plans))))
            for offering, plans in catalog.plans_by_offering.items()
        }

    def app(
        self, rng: random.Random, space_guid: str, created_at: str, started: bool
    ) -> tuple[App, list[Process]]:
        """A new app with its ``web`` process (same guid) and maybe a ``worker`` process."""
        guid = new_guid(rng)
        docker = rng.random() < DOCKER_SHARE
        app = App(
            guid=guid,
            name=f"{pick(rng, WORDS)}-{pick(rng, APP_ROLES)}",
            state="STARTED" if started else "STOPPED",
            space_guid=space_guid,
            created_at=created_at,
            updated_at=created_at,
            buildpack_guid=None if docker else pick(rng, self._buildpack_guids),
            droplet_guid=new_guid(rng),
        )
        processes = [self._process(rng, guid, guid, "web", created_at)]
        if rng.random() < WORKER_SHARE:
            processes.append(self._process(rng, new_guid(rng), guid, "worker", created_at))
        return app, processes

    def _process(
        self, rng: random.Random, guid: str, app_guid: str, kind: str, created_at: str
    ) -> Process:
        return Process(
            guid=guid,
            app_guid=app_guid,
            type=kind,
            instances=pick(rng, INSTANCE_CHOICES),
            memory_in_mb=pick(rng, MEMORY_CHOICES),
            created_at=created_at,
            updated_at=created_at,
            version=new_guid(rng),
        )

    def service_instance(
        self, rng: random.Random, space_guid: str, created_at: str
    ) -> ServiceInstance:
        """A new instance: managed on a weighted offering and plan, or user-provided."""
        guid = new_guid(rng)
        word = pick(rng, WORDS)
        if rng.random() < MANAGED_SHARE:
            offering_guid = self._weighted(rng, self._offering_guids, self._offering_cumulative)
            plan_guid = self._weighted(
                rng, self.catalog.plans_by_offering[offering_guid],
                self._plan_cumulative[offering_guid],
            )
            offering = self.catalog.offerings[offering_guid].name
            return ServiceInstance(
                guid=guid, name=f"{word}-{offering}-{rng.randrange(100)}", type="managed",
                space_guid=space_guid, plan_guid=plan_guid, created_at=created_at,
                updated_at=created_at, last_operation="create",
            )
        return ServiceInstance(
            guid=guid, name=f"{word}-ups-{rng.randrange(100)}", type="user-provided",
            space_guid=space_guid, plan_guid=None, created_at=created_at,
            updated_at=created_at, last_operation="create",
        )

    @staticmethod
    def _weighted(rng: random.Random, items: list[str] | tuple[str, ...],
                  cumulative: list[int]) -> str:
        return items[bisect_right(cumulative, rng.random() * cumulative[-1])]


def populate(
    state: FoundationState,
    factory: ResourceFactory,
    seed: int,
    apps: int,
    service_instances: int,
    start_epoch: int,
) -> None:
    """Fill an empty state with the foundation as it stands at ``start_epoch`` (no events).

    Creation times are spread over the year before the start: orgs first, then spaces, then
    apps and service instances, each kind in increasing order of its (API) id.
    """
    rng = random.Random(seed)
    org_count = max(1, apps // 25)
    space_count = max(1, apps // 5)

    def spread(index: int, count: int, first_day: int, last_day: int) -> str:
        span = (first_day - last_day) * _DAY
        return iso_seconds(start_epoch - first_day * _DAY + span * index // max(1, count))

    org_guids = []
    for i in range(org_count):
        guid = new_guid(rng)
        name = f"{pick(rng, AGENCIES)}-{pick(rng, WORDS)}-{i + 1}"
        state.add_organization(Organization(
            guid=guid, name=name, created_at=spread(i, org_count, 365, 300),
            quota_guid=DEFAULT_QUOTA_GUID,
        ))
        org_guids.append(guid)

    spaces_per_org = dict.fromkeys(org_guids, 0)
    for i in range(space_count):
        org_guid = org_guids[i] if i < org_count else org_guids[rng.randrange(org_count)]
        ordinal = spaces_per_org[org_guid]
        spaces_per_org[org_guid] = ordinal + 1
        name = SPACE_NAMES[ordinal % len(SPACE_NAMES)]
        if ordinal >= len(SPACE_NAMES):
            name = f"{name}-{ordinal // len(SPACE_NAMES) + 1}"
        state.add_space(Space(
            guid=new_guid(rng), name=name, created_at=spread(i, space_count, 300, 200),
            organization_guid=org_guid,
        ))

    space_guids = state.space_guids
    for i in range(apps):
        space_guid = space_guids[i] if i < space_count else space_guids[rng.randrange(space_count)]
        app, processes = factory.app(
            rng, space_guid, spread(i, apps, 200, 1), started=rng.random() < STARTED_SHARE
        )
        state.add_app(app, processes)

    for i in range(service_instances):
        space_guid = space_guids[rng.randrange(space_count)]
        state.add_service_instance(
            factory.service_instance(rng, space_guid, spread(i, service_instances, 200, 1))
        )
