"""Credits per agreement: which agreement's lot each hour's charge draws from, and overage.

An agreement (IAA) puts its credits in a lot of its own. The charge of an hour draws from the
lots of that customer's agreements active at that hour, the one ending first first (then the
one that started first, then by id), each only as far as it has credits left that had arrived
by that hour (a modification's credits arrive on its effective date); what no active lot can
cover is overage. An agreement's expiry takes its own lot's remainder, nothing else.

Money stays integer: a month's charge is posted as its price lines rounded once
(``post_month_usage``); ``hourly_integers`` spreads that integer total over the month's hours in
proportion to their exact amounts (cumulative rounding, so the parts add up to the total and
each is at most one microcredit from its exact share), and the draw-down works on those integers.

These are pure functions over plain values; the posting feeds them from, and writes their
result to, the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

OVERAGE = None  # the "agreement" of a draw no agreement covered


@dataclass(frozen=True)
class Lot:
    """One agreement's credits for its customer, as they stand before a posting."""

    agreement_id: str
    starts_at: datetime  # UTC, the first instant of the period of performance
    ends_at: datetime  # UTC, the instant after its last day (midnight in New York)
    remaining: int  # microcredits left in the lot
    # credits the lot holds that arrived later than its start (a modification adding credits),
    # as (instant, microcredits): an hour before that instant cannot draw them
    arrivals: tuple[tuple[datetime, int], ...] = ()

    def __post_init__(self) -> None:
        if self.ends_at <= self.starts_at:
            raise ValueError(f"agreement {self.agreement_id}: ends_at {self.ends_at} is not "
                             f"after starts_at {self.starts_at}")
        if self.remaining < 0:
            raise ValueError(f"agreement {self.agreement_id}: remaining {self.remaining} < 0")

    def active_at(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at

    def available_at(self, moment: datetime) -> int:
        """What an hour starting at ``moment`` can draw: the lot's credits less those that
        arrive after it."""
        if not self.active_at(moment):
            return 0
        later = sum(amount for at, amount in self.arrivals if at > moment and amount > 0)
        return max(0, self.remaining - later)

    @property
    def priority(self) -> tuple[datetime, datetime, str]:
        """Drawn first: the lot that ends first, then the one that started first."""
        return self.ends_at, self.starts_at, self.agreement_id


@dataclass(frozen=True)
class DrawDown:
    """What charges drew, per hour and agreement (``OVERAGE`` for what none covered; negative
    for what was given back), and the lots as they stand afterwards."""

    lots: tuple[Lot, ...]
    by_hour: tuple[tuple[datetime, str | None, int], ...]  # (hour, agreement, amount)

    @property
    def drawn(self) -> dict[str | None, int]:
        """The draws summed per agreement."""
        total: dict[str | None, int] = {}
        for _, source, amount in self.by_hour:
            total[source] = total.get(source, 0) + amount
        return total


def hourly_integers(exact: Sequence[tuple[datetime, Fraction | Decimal | int]],
                    total: int) -> list[tuple[datetime, int]]:
    """Split ``total`` (the month's posted microcredits) over the hours of ``exact`` (each
    hour's exact charge, in time order) in proportion to them: the integer parts sum to
    ``total`` and each is at most one microcredit from its exact share (every running sum is
    within half of one)."""
    amounts = [Fraction(a) for _, a in exact]
    if any(a < 0 for a in amounts):
        raise ValueError("an hour's charge is negative: spread a reduction with give_back")
    whole = sum(amounts, Fraction(0))
    if whole == 0:
        if total:
            raise ValueError(f"cannot spread {total} microcredits over hours that cost nothing")
        return [(hour, 0) for hour, _ in exact]
    out = []
    running = Fraction(0)
    before = 0
    for (hour, _), amount in zip(exact, amounts, strict=True):
        running += amount
        upto = _round_half_even(running * total / whole)
        out.append((hour, upto - before))
        before = upto
    return out


def draw_down(lots: Iterable[Lot], hourly: Iterable[tuple[datetime, int]]) -> DrawDown:
    """Draw each hour's charge (in time order) from the lots active at that hour, the one
    ending first first; what the active lots cannot cover is overage."""
    left = {lot.agreement_id: lot for lot in lots}
    ordered = sorted(left.values(), key=lambda lot: lot.priority)
    by_hour: list[tuple[datetime, str | None, int]] = []
    for hour, charge in sorted(hourly, key=lambda h: h[0]):
        if charge < 0:
            raise ValueError(f"the charge of {hour.isoformat()} is negative: use give_back")
        for lot in ordered:
            if charge == 0:
                break
            current = left[lot.agreement_id]
            available = current.available_at(hour)
            if available == 0:
                continue
            take = min(charge, available)
            left[lot.agreement_id] = replace(current, remaining=current.remaining - take)
            by_hour.append((hour, lot.agreement_id, take))
            charge -= take
        if charge:
            by_hour.append((hour, OVERAGE, charge))
    return DrawDown(_by_priority(left), tuple(by_hour))


def give_back(drawn: Mapping[str | None, int], lots: Iterable[Lot], amount: int,
              hour: datetime) -> DrawDown:
    """The charge of ``hour`` went down by ``amount`` after it was posted: undo that much of
    what it drew (``drawn``, per agreement), overage first, then the lots in the reverse of
    their drawing order (the lot drawn last gives back first), each at most what it gave. The
    result holds the negative amounts; a lot whose agreement has ended gets them back too, and
    the posting expires them again with it."""
    if amount < 0:
        raise ValueError("give_back takes the amount the charges went down by, >= 0")
    if amount > sum(drawn.values()):
        raise ValueError(f"cannot give back {amount} microcredits: the month drew "
                         f"{sum(drawn.values())}")
    left = {lot.agreement_id: lot for lot in lots}
    back: list[tuple[datetime, str | None, int]] = []
    order: list[str | None] = [OVERAGE] + [lot.agreement_id for lot in sorted(
        left.values(), key=lambda lot: lot.priority, reverse=True)]
    for source in order:
        if amount == 0:
            break
        part = min(amount, drawn.get(source, 0))
        if part == 0:
            continue
        back.append((hour, source, -part))
        amount -= part
        if source is not None:  # not OVERAGE: a lot gets its credits back
            lot = left[source]
            left[source] = replace(lot, remaining=lot.remaining + part)
    return DrawDown(_by_priority(left), tuple(back))


def _by_priority(lots: dict[str, Lot]) -> tuple[Lot, ...]:
    return tuple(sorted(lots.values(), key=lambda lot: lot.priority))


def _round_half_even(value: Fraction) -> int:
    return round(value)  # Fraction.__round__ rounds half to even
