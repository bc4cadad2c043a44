"""What the catalog holds, as read from its files and validated: plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

MICROCREDITS_PER_CREDIT = 1_000_000


class CatalogError(ValueError):
    """A catalog that cannot be used. The message lists every problem found, one per line,
    each naming the file, the entry and the fix."""

    def __init__(self, problems: list[str], heading: str = "catalog rejected") -> None:
        self.problems = list(problems)
        self.heading = heading
        count = len(self.problems)
        super().__init__(f"{heading}: {count} problem{'s' if count != 1 else ''} "
                         "(entries are counted from 1)\n" + "\n".join(self.problems))

    def __reduce__(self) -> tuple[type[CatalogError], tuple[list[str], str]]:
        return type(self), (self.problems, self.heading)


@dataclass(frozen=True)
class Tier:
    """A tier of credits a customer buys, per month."""

    name: str
    credits_per_month: int


@dataclass(frozen=True)
class TierPeriod:
    """A customer's tier from a business date on (the first day of a month; None: from the
    start) until the next period's."""

    tier: str
    valid_from: date | None = None


@dataclass(frozen=True)
class OrgOwnership:
    """A CF org, by guid, owned by the customer over [valid_from, valid_to) (UTC instants on
    whole hours; None: open). ``alias`` is the org's name as the catalog gives it, for people:
    Cloud Foundry may rename the org, the guid stays."""

    guid: str
    alias: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    @property
    def label(self) -> str:
        return self.alias or self.guid


@dataclass(frozen=True)
class Customer:
    """A customer (an agency or part of one), its tiers over time and the CF orgs it owns."""

    id: str
    name: str
    tiers: tuple[TierPeriod, ...]
    orgs: tuple[OrgOwnership, ...]

    @property
    def tier(self) -> str:
        """The tier of the newest period."""
        return self.tiers[-1].tier


@dataclass(frozen=True)
class ResourceKindEntry:
    """Something a price attaches to: app memory (meter cfapps, natural id ``app-memory``) or a
    service plan (meter cfservices, natural id the plan guid, name ``<offering>/<plan>``)."""

    meter: str
    natural_id: str
    name: str
    description: str | None = None


@dataclass(frozen=True)
class PriceEntry:
    """``microcredits_per_unit`` per ``unit`` of the meter's unit-seconds, valid in
    [valid_from, valid_to) (valid_to None: open-ended). Both instants are UTC."""

    kind: str  # the resource kind's name
    microcredits_per_unit: int
    unit: int
    valid_from: datetime
    valid_to: datetime | None = None
    note: str | None = None


@dataclass(frozen=True)
class Modification:
    """A change to an agreement from a business date on: whole credits added (> 0) or removed
    (< 0), and/or a new last day of the period (inclusive)."""

    id: str
    effective: date
    credits: int = 0
    pop_end: date | None = None


@dataclass(frozen=True)
class Iaa:
    """An interagency agreement: credits bought for a period of performance, whose first and
    last days (inclusive, New York business dates) are pop_start and pop_end, and the
    modifications made to it since, in the order they take effect."""

    id: str
    customer: str
    credits: int
    pop_start: date
    pop_end: date
    modifications: tuple[Modification, ...] = ()

    @property
    def credits_microcredits(self) -> int:
        return self.credits * MICROCREDITS_PER_CREDIT

    @property
    def period_end_exclusive(self) -> date:
        """The day after pop_end: the upper bound of the stored daterange [start, end)."""
        return self.pop_end + timedelta(days=1)


@dataclass(frozen=True)
class Catalog:
    """A validated catalog. ``checksum`` is SHA-256 over the files' names and bytes."""

    tiers: tuple[Tier, ...]
    customers: tuple[Customer, ...]
    resource_kinds: tuple[ResourceKindEntry, ...]
    prices: tuple[PriceEntry, ...]
    iaas: tuple[Iaa, ...]
    source: str
    checksum: str

    @property
    def ownerships(self) -> list[tuple[str, OrgOwnership]]:
        """(customer id, ownership) for every org period the customers list."""
        return [(customer.id, org) for customer in self.customers for org in customer.orgs]
