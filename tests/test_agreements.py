"""Credits per agreement, computed by hand: the issue's overlapping agreements, a renewal, a
modification, an agreement that ends mid-month, late usage, and a month whose charges went down."""

from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_dagster.ledger.agreements import (
    OVERAGE,
    Lot,
    draw_down,
    give_back,
    hourly_integers,
)

NEW_YORK = ZoneInfo("America/New_York")
CREDIT = 1_000_000


def ny(day: date, hour: int = 0) -> datetime:
    return datetime.combine(day, time(hour), NEW_YORK).astimezone(UTC)


def agreement(agreement_id: str, first_day: date, last_day: date, credits: int) -> Lot:
    return Lot(agreement_id, ny(first_day), ny(last_day + timedelta(days=1)), credits * CREDIT)


def months(year: int, first: int, last: int) -> list[date]:
    return [date(year + (m - 1) // 12, (m - 1) % 12 + 1, 1) for m in range(first, last + 1)]


def live_through(lots: list[Lot], usage: dict[date, int]) -> tuple[dict[date, dict], dict, list]:
    """Post month after month (one charge on the 15th at noon), expiring each agreement whose
    period ended within the month: the draws of every month, the expiries, the lots after."""
    drawn: dict[date, dict] = {}
    expired: dict[str, int] = {}
    for month, credits in sorted(usage.items()):
        result = draw_down(lots, [(ny(month.replace(day=15), 12), credits * CREDIT)])
        drawn[month] = {k: v // CREDIT for k, v in result.drawn.items()}
        following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
        lots = []
        for lot in result.lots:
            if lot.ends_at <= ny(following):
                expired.setdefault(lot.agreement_id, lot.remaining // CREDIT)
                lot = Lot(lot.agreement_id, lot.starts_at, lot.ends_at, 0)
            lots.append(lot)
    return drawn, expired, lots


def test_overlapping_agreements_the_one_ending_first_is_drawn_and_only_its_rest_expires():
    a = agreement("A", date(2026, 1, 1), date(2026, 6, 30), 1000)
    b = agreement("B", date(2026, 3, 1), date(2027, 2, 28), 1000)
    drawn, expired, lots = live_through([a, b], dict.fromkeys(months(2026, 1, 12), 100))
    assert all(drawn[m] == {"A": 100} for m in months(2026, 1, 6))  # B waits: A ends first
    assert all(drawn[m] == {"B": 100} for m in months(2026, 7, 12))
    assert expired == {"A": 400}  # one pool expired 1,400 here and left B with nothing
    assert {lot.agreement_id: lot.remaining // CREDIT for lot in lots} == {"A": 0, "B": 400}


def test_a_renewal_takes_over_at_the_first_hour_of_its_period():
    a = agreement("A", date(2026, 1, 1), date(2026, 6, 30), 1000)
    b = agreement("B", date(2026, 7, 1), date(2027, 6, 30), 1000)
    last_hour_of_a = ny(date(2026, 6, 30), 23)
    result = draw_down([a, b], [(last_hour_of_a, 5 * CREDIT),
                                (last_hour_of_a + timedelta(hours=1), 7 * CREDIT)])
    assert result.drawn == {"A": 5 * CREDIT, "B": 7 * CREDIT}


def test_credits_added_mid_period_count_from_the_month_they_are_posted():
    a = agreement("A", date(2026, 1, 1), date(2026, 12, 31), 100)
    january = draw_down([a], [(ny(date(2026, 1, 15), 12), 60 * CREDIT)])
    february = draw_down(january.lots, [(ny(date(2026, 2, 15), 12), 60 * CREDIT)])
    assert february.drawn == {"A": 40 * CREDIT, OVERAGE: 20 * CREDIT}
    (left,) = february.lots
    modified = Lot("A", left.starts_at, left.ends_at, left.remaining + 200 * CREDIT)  # +200
    march = draw_down([modified], [(ny(date(2026, 3, 15), 12), 60 * CREDIT)])
    assert march.drawn == {"A": 60 * CREDIT} and march.lots[0].remaining == 140 * CREDIT


def test_usage_after_an_agreement_ends_mid_month_is_overage():
    a = agreement("A", date(2026, 1, 1), date(2026, 1, 15), 1000)
    daily = [(ny(date(2026, 1, day), 12), 10 * CREDIT) for day in range(1, 32)]
    result = draw_down([a], daily)
    assert result.drawn == {"A": 150 * CREDIT, OVERAGE: 160 * CREDIT}
    assert result.lots[0].remaining == 850 * CREDIT  # what its expiry then takes


def test_late_usage_draws_from_the_agreements_active_then_never_from_a_later_one():
    a = agreement("A", date(2026, 1, 1), date(2026, 6, 30), 1000)
    b = agreement("B", date(2026, 3, 1), date(2027, 2, 28), 1000)
    _, _, lots = live_through([a, b], dict.fromkeys(months(2026, 1, 7), 100))  # A expired
    late_march = draw_down(lots, [(ny(date(2026, 3, 20), 9), 30 * CREDIT)])
    assert late_march.drawn == {"B": 30 * CREDIT}  # B was active in March
    late_february = draw_down(lots, [(ny(date(2026, 2, 20), 9), 30 * CREDIT)])
    assert late_february.drawn == {OVERAGE: 30 * CREDIT}  # only A was, and A has ended


def test_an_hour_whose_charge_went_down_gives_back_overage_first_then_the_last_lot_drawn():
    a = agreement("A", date(2026, 1, 1), date(2026, 12, 31), 100)
    b = agreement("B", date(2026, 1, 1), date(2026, 6, 30), 50)
    hour = ny(date(2026, 1, 15), 12)
    month = draw_down([a, b], [(hour, 170 * CREDIT)])
    assert month.drawn == {"B": 50 * CREDIT, "A": 100 * CREDIT, OVERAGE: 20 * CREDIT}
    back = give_back(month.drawn, month.lots, 45 * CREDIT, hour)
    assert back.drawn == {OVERAGE: -20 * CREDIT, "A": -25 * CREDIT}  # A was drawn after B
    assert {lot.agreement_id: lot.remaining for lot in back.lots} == {"B": 0, "A": 25 * CREDIT}
    with pytest.raises(ValueError, match="the month drew"):
        give_back(month.drawn, month.lots, 171 * CREDIT, hour)


def test_a_lot_must_end_after_it_starts():
    with pytest.raises(ValueError, match="is not after starts_at"):
        agreement("A", date(2026, 2, 1), date(2026, 1, 1), 5)


def test_a_month_total_is_spread_over_its_hours_to_the_microcredit():
    hours = [ny(date(2026, 1, 1), h) for h in range(3)]
    assert hourly_integers(list(zip(hours, [Fraction(1, 3)] * 3, strict=True)), 1) == [
        (hours[0], 0), (hours[1], 1), (hours[2], 0)]


@given(st.lists(st.fractions(min_value=0, max_value=10**9, max_denominator=10**6),
                min_size=1, max_size=60), st.integers(min_value=-5, max_value=5))
def test_the_spread_adds_up_to_the_total_and_each_hour_is_within_one_microcredit(amounts,
                                                                              offset):
    # cumulative rounding: each running sum is within 1/2, so each hour within 1
    whole = sum(amounts, Fraction(0))
    total = max(0, round(whole) + offset) if whole else 0
    hours = [ny(date(2026, 1, 1)) + timedelta(hours=i) for i in range(len(amounts))]
    parts = hourly_integers(list(zip(hours, amounts, strict=True)), total)
    assert sum(p for _, p in parts) == total
    running = Fraction(0)
    for (_, part), amount in zip(parts, amounts, strict=True):
        share = amount * total / whole if whole else Fraction(0)
        assert abs(part - share) <= 1
        running += share
    assert running == total


def test_an_hour_halfway_between_can_be_one_microcredit_off_and_no_more():
    hours = [ny(date(2026, 1, 1), h) for h in range(3)]
    exact = list(zip(hours, [Fraction(1, 2), Fraction(1), Fraction(1, 2)], strict=True))
    assert [p for _, p in hourly_integers(exact, 2)] == [0, 2, 0]
