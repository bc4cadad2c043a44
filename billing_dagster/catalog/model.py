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
class Customer:
    """A customer (an agency or part of one), its tier and the CF orgs it owns, by name."""

    id: str
    name: str
    tier: str
    orgs: tuple[str, ...]


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
class Iaa:
    """An interagency agreement: credits bought for a period of performance, whose first and
    last days (inclusive, New York business dates) are pop_start and pop_end."""

    id: str
    customer: str
    credits: int
    pop_start: date
    pop_end: date

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
    def orgs(self) -> dict[str, str]:
        """Org name -> customer id."""
        return {org: customer.id for customer in self.customers for org in customer.orgs}
