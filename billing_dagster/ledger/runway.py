"""Burn rate and runway: how much each customer has left, how fast it burns, when it runs out.

Everything is measured as of the end of the newest hour with priced usage (``as_of``), never
the wall clock, so a report is reproducible from the database alone. Per customer:

- used this business month so far (New York month of the newest hour), as the month's posting
  would charge it (each price line rounded once, half-even), and the month projected: that plus
  the 7-day daily burn prorated over the hours left in the month;
- daily burn over the last 7 and 30 days: the exact charge of the 168 / 720 hours before
  ``as_of``, divided by 7 / 30, rounded half-even once;
- per agreement: its credits (credited to its lot by iaa_pop_start and iaa_modification, plus
  those the next posting will credit), drawn (the ledger's draws plus the usage not posted yet,
  drawn with the posting's rule: ``agreements.draw_down``), remaining and % used;
- when its credits run out: the 7-day daily burn projected hour by hour through the lots (the
  active agreement ending first first; what a lot holds when it ends expires) up to the end of
  the last agreement or three years; the first hour no lot covers.

Usage not posted yet is every priced hour after the customer's last month with a usage_post;
later changes to a posted month (adjustments still to come) are not estimated. Money is integer
microcredits; intermediate amounts are exact (Decimal, Fraction), never floats.
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
from psycopg.rows import dict_row

from billing_dagster.alerts import alert_webhook_url, post_alert
from billing_dagster.automation import AFTER_UPSTREAM
from billing_dagster.ledger.agreements import OVERAGE, Lot, draw_down, hourly_integers
from billing_dagster.ledger.assets import ledger_entries
from billing_dagster.ledger.posting import customer_lots
from billing_dagster.ledger.statements import credits
from billing_dagster.partitions import (
    BUSINESS_TIMEZONE,
    business_month,
    monthly_partitions,
    utc_window,
)
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.resources import BillingDatabase
from billing_dagster.sql import query

HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
HORIZON = timedelta(days=3 * 365)  # how far ahead the run-out is looked for
BURN_DAYS = (7, 30)
PLOT_DAYS = 30
THRESHOLDS = (75, 90, 100)  # % of an agreement's credits used that raise an alert
SPARKS = "▁▂▃▄▅▆▇█"
NEW_YORK = ZoneInfo(BUSINESS_TIMEZONE)
_CHUNK_HOURS = 24 * 31  # the projection draws a month at a time and stops at the first overage


@dataclass(frozen=True)
class AgreementRunway:
    """One agreement of a customer as of the report: its credits and how far they are used."""

    iaa_id: str
    starts_at: datetime  # UTC, first instant of the period (as modified)
    ends_at: datetime  # UTC, the instant after its last day
    credits_microcredits: int  # credited to its lot, posted or still to be posted
    drawn_microcredits: int  # drawn by posted usage plus (estimated) by usage not posted yet
    remaining_microcredits: int  # left in its lot (expires when the agreement ends)
    runs_short: bool  # the customer's credits are projected to run out while it is active

    @property
    def percent_used(self) -> Decimal | None:
        if self.credits_microcredits <= 0:
            return None
        share = Decimal(self.drawn_microcredits * 100) / Decimal(self.credits_microcredits)
        return share.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)

    @property
    def thresholds_reached(self) -> tuple[int, ...]:
        """The alert thresholds (% of its credits) its draws have reached."""
        if self.credits_microcredits <= 0:
            return ()
        return tuple(t for t in THRESHOLDS
                     if self.drawn_microcredits * 100 >= self.credits_microcredits * t)


@dataclass(frozen=True)
class CustomerRunway:
    """One customer's credits left, burn rate and runway, as of the end of the newest hour
    with priced usage."""

    customer_id: str
    name: str
    as_of: datetime  # UTC
    business_month: date  # the New York month of the newest hour
    used_this_month_microcredits: int
    projected_month_microcredits: int
    daily_burn_7d_microcredits: int
    daily_burn_30d_microcredits: int
    daily_usage_microcredits: tuple[int, ...]  # the last 30 days (24 hours each), oldest first
    runs_out_at: datetime | None  # the first projected hour no agreement covers
    last_agreement_ends_at: datetime | None
    agreements: tuple[AgreementRunway, ...] = ()
    overage_by_month: tuple[tuple[date, int], ...] = ()  # posted, plus estimated if not posted
    tier: str | None = None  # the tier of the business month (in effect on its first day)
    allotment_microcredits: int | None = None  # that tier's credits per month

    @property
    def runway_until(self) -> datetime:
        """The end of the runway: the run-out hour; else the end of the last agreement (at most
        three years ahead); ``as_of`` when there is no agreement left."""
        if self.runs_out_at is not None:
            return self.runs_out_at
        if self.last_agreement_ends_at is None:
            return self.as_of
        return max(self.as_of, min(self.last_agreement_ends_at, self.as_of + HORIZON))

    @property
    def runway_days(self) -> int:
        """Whole days from ``as_of`` to the end of the runway."""
        return (self.runway_until - self.as_of) // DAY


@dataclass(frozen=True)
class RunwayAlert:
    """An alert about one customer: per agreement (75%, 90%, 100%, runway) or for the
    customer as a whole (``iaa_id`` None: overage in a month)."""

    customer_id: str
    iaa_id: str | None
    alert: str
    message: str
    details: Mapping[str, str | int] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "iaa_id": self.iaa_id, "alert": self.alert,
                "message": self.message, "details": dict(self.details)}


# -- pure functions ------------------------------------------------------------------------


def round_half_even(value: Fraction) -> int:
    return round(value)  # Fraction.__round__ rounds half to even


def daily_burn(total: Decimal | int, days: int) -> int:
    """An exact charge over ``days`` days as microcredits per day, rounded half-even once."""
    return round_half_even(Fraction(total) / days)


def prorated(per_day: int, hours: int) -> int:
    """``per_day`` microcredits spread over ``hours`` hours, rounded half-even once."""
    return round_half_even(Fraction(per_day * hours, 24))


def projected_hours(start: datetime, per_day: int, first: int,
                    count: int) -> list[tuple[datetime, int]]:
    """Hours ``first`` .. ``first + count`` after ``start``, each charging its share of
    ``per_day`` in whole microcredits (cumulative rounding: any run of hours adds up to
    ``prorated`` of its length)."""
    return [(start + k * HOUR, prorated(per_day, k + 1) - prorated(per_day, k))
            for k in range(first, first + count)]


def project_run_out(lots: Iterable[Lot], start: datetime, per_day: int,
                    until: datetime) -> datetime | None:
    """The first hour in [start, until) that the lots cannot cover when every hour charges
    ``per_day`` / 24, drawn as postings draw (the active lot ending first first; a lot that
    ends with credits left keeps them from later hours); None if they cover every hour."""
    if per_day <= 0:
        return None
    left = list(lots)
    hours = max(0, (until - start) // HOUR)
    for first in range(0, hours, _CHUNK_HOURS):
        drawn = draw_down(left, projected_hours(start, per_day, first,
                                                min(_CHUNK_HOURS, hours - first)))
        short = [hour for hour, source, _ in drawn.by_hour if source is OVERAGE]
        if short:
            return short[0]
        left = list(drawn.lots)
    return None


def with_pending(lots: Iterable[Lot], agreements: Sequence[Mapping[str, Any]],
                 modifications: Mapping[str, Sequence[tuple[datetime, int]]]) -> list[Lot]:
    """The ledger's lots plus the credits the next postings will put in them: an agreement
    whose start is not posted yet brings its bought credits, a modification not posted yet
    adds (from its effective date) or removes credits."""
    by_id = {lot.agreement_id: lot for lot in lots}
    for a in agreements:
        lot = by_id.get(a["iaa_id"]) or Lot(a["iaa_id"], a["starts_at"], a["ends_at"], 0)
        added = modifications.get(a["iaa_id"], ())
        remaining = lot.remaining + a["pending_start"] + sum(c for _, c in added)
        arrivals = lot.arrivals + tuple((at, c) for at, c in added if c > 0)
        by_id[a["iaa_id"]] = replace(lot, remaining=max(0, remaining), arrivals=arrivals)
    return list(by_id.values())


def sparkline(values: Sequence[int]) -> str:
    """One bar per value, from ▁ (zero) to █ (the largest), in integer arithmetic."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[max(v, 0) * (len(SPARKS) - 1) // top] for v in values)


def runway_alerts(report: Iterable[CustomerRunway]) -> list[RunwayAlert]:
    """Every alert the report calls for (recording them raises each only once)."""
    alerts: list[RunwayAlert] = []
    for c in report:
        for a in c.agreements:
            alerts += _agreement_alerts(c, a)
        alerts += [RunwayAlert(
            c.customer_id, None, f"overage:{month:%Y-%m}",
            f"{c.customer_id}: {credits(amount)} credits of overage in {month:%Y-%m} "
            "(usage no agreement covered)",
            {"business_month": f"{month:%Y-%m}", "overage_microcredits": amount,
             "as_of": c.as_of.isoformat()}) for month, amount in c.overage_by_month]
    return alerts


def _agreement_alerts(c: CustomerRunway, a: AgreementRunway) -> list[RunwayAlert]:
    used = {"credits_microcredits": a.credits_microcredits,
            "drawn_microcredits": a.drawn_microcredits,
            "remaining_microcredits": a.remaining_microcredits,
            "percent_used": str(a.percent_used), "as_of": c.as_of.isoformat()}
    alerts = [RunwayAlert(c.customer_id, a.iaa_id, f"{t}%",
                          f"{c.customer_id} {a.iaa_id}: {t}% of its credits used ({a.percent_used}"
                          f"%: {credits(a.drawn_microcredits)} of "
                          f"{credits(a.credits_microcredits)})", used)
              for t in a.thresholds_reached]
    if a.runs_short and c.runs_out_at is not None:
        alerts.append(RunwayAlert(
            c.customer_id, a.iaa_id, "runway",
            f"{c.customer_id} {a.iaa_id}: credits projected to run out {_ny(c.runs_out_at)} "
            f"New York ({c.runway_days} days), before the agreement ends {_last_day(a)}",
            {"runs_out_at": c.runs_out_at.isoformat(), "ends_at": a.ends_at.isoformat(),
             "runway_days": c.runway_days, "agreement_days_left": (a.ends_at - c.as_of) // DAY,
             "daily_burn_7d_microcredits": c.daily_burn_7d_microcredits,
             "as_of": c.as_of.isoformat()}))
    return alerts


# -- reading the ledger --------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """What the report reads, grouped by customer (microcredits; exact amounts as Decimal)."""

    as_of: datetime
    month: date
    month_end: datetime
    daily: dict[str, dict[int, Decimal]]  # customer -> day (0: the last 24 hours) -> amount
    unposted: dict[str, list[tuple[date, datetime, Decimal]]]  # customer -> (month, hour, amt)
    month_totals: dict[str, dict[date, int]]
    agreements: dict[str, list[dict[str, Any]]]
    modifications: dict[str, list[tuple[datetime, int]]]  # agreement -> (arrives_at, credits)
    posted_overage: dict[str, dict[date, int]]


def runway_report(conn: psycopg.Connection) -> list[CustomerRunway]:
    """Every customer's runway as of the end of the newest hour with priced usage (empty when
    nothing is priced yet), read from one snapshot of the database."""
    fresh = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if fresh:
            cur.execute(query("runway_snapshot"))
        row = cur.execute(query("runway_as_of")).fetchone()
        if row is None or row["as_of"] is None:
            return []
        facts = _read_facts(cur, row["as_of"])
        customers = cur.execute(query("runway_customers"), {"month": facts.month}).fetchall()
        return [replace(_customer_runway(c["customer_id"], c["name"],
                                         customer_lots(cur, c["customer_id"])[0], facts),
                        tier=c["tier"], allotment_microcredits=c["allotment_microcredits"])
                for c in customers]


def _read_facts(cur: psycopg.Cursor[dict[str, Any]], as_of: datetime) -> _Facts:
    newest = (as_of - HOUR).astimezone(NEW_YORK)
    window = monthly_partitions.time_window_for_partition_key(f"{newest:%Y-%m}")
    month_start, month_end = utc_window(window)
    at = {"as_of": as_of, "month_start": month_start, "days": PLOT_DAYS}
    daily: dict[str, dict[int, Decimal]] = defaultdict(dict)
    for r in cur.execute(query("runway_daily_usage"), at):
        daily[r["customer_id"]][r["day"]] = r["amount"]
    unposted: dict[str, list[tuple[date, datetime, Decimal]]] = defaultdict(list)
    for r in cur.execute(query("runway_unposted_hours"), at):
        unposted[r["customer_id"]].append((r["business_month"], r["hour_start"], r["amount"]))
    totals: dict[str, dict[date, int]] = defaultdict(dict)
    for r in cur.execute(query("runway_month_totals"), at):
        totals[r["customer_id"]][r["business_month"]] = r["amount"]
    agreements: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in cur.execute(query("runway_agreements")):
        agreements[r["customer_id"]].append(r)
    modifications: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for r in cur.execute(query("runway_pending_modifications")):
        modifications[r["iaa_id"]].append((r["arrives_at"], r["credits"]))
    overage: dict[str, dict[date, int]] = defaultdict(dict)
    for r in cur.execute(query("runway_posted_overage")):
        overage[r["customer_id"]][r["business_month"]] = r["amount"]
    return _Facts(as_of, business_month(window), month_end, daily, unposted, totals,
                  agreements, modifications, overage)


def _customer_runway(customer_id: str, name: str, ledger_lots: list[Lot],
                     facts: _Facts) -> CustomerRunway:
    """One customer's runway from what was read: the usage not posted yet drawn from the lots
    as they stand (with the credits still to be posted), then the 7-day burn projected."""
    agreements = facts.agreements.get(customer_id, [])
    lots = with_pending(ledger_lots, agreements, facts.modifications)
    unposted = facts.unposted.get(customer_id, [])
    totals = facts.month_totals.get(customer_id, {})
    estimate = draw_down(lots, _unposted_hourly(unposted, totals))
    daily = facts.daily.get(customer_id, {})
    burn_7d, burn_30d = (daily_burn(sum((daily.get(d, Decimal(0)) for d in range(days)),
                                        Decimal(0)), days) for days in BURN_DAYS)
    used = totals.get(facts.month, 0)
    last_end = max((lot.ends_at for lot in lots), default=None)
    until = min(last_end, facts.as_of + HORIZON) if last_end else facts.as_of
    runs_out = project_run_out(estimate.lots, facts.as_of, burn_7d, until)
    return CustomerRunway(
        customer_id=customer_id, name=name, as_of=facts.as_of, business_month=facts.month,
        used_this_month_microcredits=used,
        projected_month_microcredits=used + prorated(
            burn_7d, max(0, (facts.month_end - facts.as_of) // HOUR)),
        daily_burn_7d_microcredits=burn_7d, daily_burn_30d_microcredits=burn_30d,
        daily_usage_microcredits=tuple(round_half_even(Fraction(daily.get(d, 0)))
                                       for d in reversed(range(PLOT_DAYS))),
        runs_out_at=runs_out, last_agreement_ends_at=last_end,
        agreements=_agreement_rows(agreements, facts.modifications, estimate.lots,
                                   estimate.drawn, runs_out),
        overage_by_month=_overage(facts.posted_overage.get(customer_id, {}), unposted,
                                  estimate.by_hour))


def _unposted_hourly(unposted: Sequence[tuple[date, datetime, Decimal]],
                     totals: Mapping[date, int]) -> list[tuple[datetime, int]]:
    """Each month not posted yet as its posting would spread it over its hours (its total,
    rounded per price line, in proportion to the hours' exact charges)."""
    by_month: dict[date, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for month, hour, amount in unposted:
        by_month[month].append((hour, amount))
    hourly: list[tuple[datetime, int]] = []
    for month, hours in sorted(by_month.items()):
        hourly += hourly_integers(hours, totals.get(month, 0))
    return hourly


def _agreement_rows(agreements: Sequence[Mapping[str, Any]],
                    modifications: Mapping[str, Sequence[tuple[datetime, int]]],
                    lots: Iterable[Lot], estimated: Mapping[str | None, int],
                    runs_out: datetime | None) -> tuple[AgreementRunway, ...]:
    """Per agreement: credited (the ledger's, plus what the next postings credit), drawn (the
    ledger's draws plus the estimate), and what its lot holds after the estimate."""
    left = {lot.agreement_id: lot for lot in lots}
    return tuple(AgreementRunway(
        iaa_id=a["iaa_id"], starts_at=a["starts_at"], ends_at=a["ends_at"],
        credits_microcredits=a["credited"] + a["pending_start"]
        + sum(c for _, c in modifications.get(a["iaa_id"], ())),
        drawn_microcredits=a["drawn"] + estimated.get(a["iaa_id"], 0),
        remaining_microcredits=left[a["iaa_id"]].remaining,
        runs_short=runs_out is not None and left[a["iaa_id"]].active_at(runs_out))
        for a in agreements)


def _overage(posted: Mapping[date, int], unposted: Sequence[tuple[date, datetime, Decimal]],
             draws: Iterable[tuple[datetime, str | None, int]]) -> tuple[tuple[date, int], ...]:
    month_of = {hour: month for month, hour, _ in unposted}
    by_month: dict[date, int] = defaultdict(int, posted)
    for hour, source, amount in draws:
        if source is OVERAGE:
            by_month[month_of[hour]] += amount
    return tuple((month, amount) for month, amount in sorted(by_month.items()) if amount > 0)


# -- presenting ----------------------------------------------------------------------------


def _ny(moment: datetime) -> str:
    return f"{moment.astimezone(NEW_YORK):%Y-%m-%d %H:%M}"


def _last_day(a: AgreementRunway) -> str:
    return f"{(a.ends_at.astimezone(NEW_YORK) - DAY).date():%Y-%m-%d}"


def _period(a: AgreementRunway) -> str:
    return f"{a.starts_at.astimezone(NEW_YORK):%Y-%m-%d} .. {_last_day(a)}"


def _runs_out(c: CustomerRunway) -> str:
    if c.runs_out_at is not None:
        return _ny(c.runs_out_at)
    if c.last_agreement_ends_at is None:
        return "no agreement"
    last_day = f"{(c.last_agreement_ends_at.astimezone(NEW_YORK) - DAY).date():%Y-%m-%d}"
    if c.last_agreement_ends_at <= c.as_of:
        return f"agreements ended {last_day}"
    if c.last_agreement_ends_at > c.as_of + HORIZON:
        return "not within 3 years"
    return f"lasts to the end ({last_day})"


def _tier(c: CustomerRunway) -> str:
    if c.tier is None or c.allotment_microcredits is None:
        return "no tier"
    return f"{c.tier} ({c.allotment_microcredits // 1_000_000:,}/month)"


def _percent(a: AgreementRunway) -> str:
    return "-" if a.percent_used is None else f"{a.percent_used}%"


def runway_text(report: Sequence[CustomerRunway]) -> str:
    """The report as plain-text tables (amounts in credits), for a terminal."""
    if not report:
        return "Runway: no priced usage yet"
    first = report[0]
    lines = [f"Runway as of {_ny(first.as_of)} New York (business month "
             f"{first.business_month:%Y-%m}), in credits:",
             f"  {'customer':<20} {'tier (allotment)':<20} {'used in month':>16} "
             f"{'projected month':>16} "
             f"{'burn/day 7d':>14} {'burn/day 30d':>14}  {'runs out (New York)':<32} runway"]
    lines += [f"  {c.customer_id:<20} {_tier(c):<20} {credits(c.used_this_month_microcredits):>16} "
              f"{credits(c.projected_month_microcredits):>16} "
              f"{credits(c.daily_burn_7d_microcredits):>14} "
              f"{credits(c.daily_burn_30d_microcredits):>14}  {_runs_out(c):<32} "
              f"{c.runway_days} days" for c in report]
    lines += ["", f"  {'customer':<20} {'agreement':<16} {'period (New York)':<24} "
                  f"{'credits':>16} {'drawn':>16} {'remaining':>16} {'used':>7}"]
    lines += [f"  {c.customer_id:<20} {a.iaa_id:<16} {_period(a):<24} "
              f"{credits(a.credits_microcredits):>16} {credits(a.drawn_microcredits):>16} "
              f"{credits(a.remaining_microcredits):>16} {_percent(a):>7}"
              for c in report for a in c.agreements]
    return "\n".join(lines)


def runway_table(report: Sequence[CustomerRunway]) -> str:
    """Markdown: one row per customer."""
    lines = ["| customer | tier (allotment) | used this month | projected month | burn/day 7d "
             "| burn/day 30d | runs out (New York) | runway days |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {c.customer_id} | {_tier(c)} | {credits(c.used_this_month_microcredits)} "
              f"| {credits(c.projected_month_microcredits)} "
              f"| {credits(c.daily_burn_7d_microcredits)} "
              f"| {credits(c.daily_burn_30d_microcredits)} | {_runs_out(c)} "
              f"| {c.runway_days} |" for c in report]
    return "\n".join(lines)


def agreements_table(report: Sequence[CustomerRunway]) -> str:
    """Markdown: one row per customer and agreement."""
    lines = ["| customer | agreement | period (New York) | credits | drawn | remaining | used "
             "| runs short |", "|---|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| {c.customer_id} | {a.iaa_id} | {_period(a)} "
              f"| {credits(a.credits_microcredits)} | {credits(a.drawn_microcredits)} "
              f"| {credits(a.remaining_microcredits)} | {_percent(a)} "
              f"| {'yes' if a.runs_short else ''} |" for c in report for a in c.agreements]
    return "\n".join(lines)


def burn_plot(report: Sequence[CustomerRunway]) -> str:
    """Markdown: each customer's daily burn over the last 30 days as a sparkline."""
    lines = [f"| customer | daily burn, last {PLOT_DAYS} days (oldest to newest) | min/day "
             "| max/day |", "|---|---|---:|---:|"]
    lines += [f"| {c.customer_id} | `{sparkline(c.daily_usage_microcredits)}` "
              f"| {credits(min(c.daily_usage_microcredits))} "
              f"| {credits(max(c.daily_usage_microcredits))} |" for c in report]
    return "\n".join(lines)


def runway_metadata(report: Sequence[CustomerRunway]) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "as_of": report[0].as_of.isoformat() if report else "no priced usage yet",
        "customers": len(report),
        "runway": dg.MetadataValue.md(runway_table(report)),
        "agreements": dg.MetadataValue.md(agreements_table(report)),
        "daily_burn_last_30_days": dg.MetadataValue.md(burn_plot(report)),
    }
    for c in report:  # numbers the UI's Plots tab charts across materializations
        metadata[f"daily_burn_7d_microcredits/{c.customer_id}"] = c.daily_burn_7d_microcredits
        metadata[f"daily_burn_30d_microcredits/{c.customer_id}"] = c.daily_burn_30d_microcredits
        metadata[f"projected_month_microcredits/{c.customer_id}"] = (
            c.projected_month_microcredits)
        metadata[f"runway_days/{c.customer_id}"] = c.runway_days
    return metadata


# -- alerts --------------------------------------------------------------------------------


def record_alerts(conn: psycopg.Connection,
                  alerts: Sequence[RunwayAlert]) -> list[RunwayAlert]:
    """Record the alerts in billing.runway_alert, each once: the ones raised now (neither
    recorded before nor by a concurrent tick), in the order given."""
    if not alerts:
        return []
    with conn.transaction(), conn.cursor() as cur:
        raised = {tuple(r) for r in cur.execute(query("record_runway_alerts"), {
            "customer_ids": [a.customer_id for a in alerts],
            "iaa_ids": [a.iaa_id for a in alerts],
            "alerts": [a.alert for a in alerts],
            "details": [json.dumps(dict(a.details)) for a in alerts]})}
    return [a for a in alerts if (a.customer_id, a.iaa_id, a.alert) in raised]


# -- Dagster -------------------------------------------------------------------------------


@dg.asset(
    group_name="ledger",
    kinds={"postgres"},
    deps=[priced_postings, ledger_entries],
    # refreshed after each metering run and posting (the automation sensor runs it)
    automation_condition=AFTER_UPSTREAM,
)
def customer_runway(db: BillingDatabase) -> dg.MaterializeResult:
    """One row per customer (and under it, per agreement), as of the end of the newest hour
    with priced usage: credits used this business month and the month projected, daily burn
    over the last 7 and 30 days, and per agreement its credits, drawn (posted, plus the usage
    not posted yet drawn as the posting will), remaining and % used; then when the credits run
    out at the 7-day burn (the first hour no agreement covers) and the days of runway."""
    with db.connect() as conn:
        report = runway_report(conn)
    return dg.MaterializeResult(metadata=runway_metadata(report))


@dg.sensor(name="runway_alerts_sensor", minimum_interval_seconds=300,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Raises each runway alert once: a customer past 75%, 90% or 100% of an "
                       "agreement's credits, credits projected to run out before an agreement "
                       "ends, overage in a month. Records it in billing.runway_alert and posts "
                       "it to BILLING_ALERT_WEBHOOK_URL when set.")
def runway_alerts_sensor(context: dg.SensorEvaluationContext,
                         db: BillingDatabase) -> dg.SensorResult | dg.SkipReason:
    with db.connect() as conn:
        new = record_alerts(conn, runway_alerts(runway_report(conn)))
    if not new:
        return dg.SkipReason("no new runway alerts")
    for alert in new:
        context.log.warning(f"runway alert: {alert.message}")
    webhook = alert_webhook_url()
    if webhook:
        post_alert(webhook, {"text": "billing-dagster: runway alerts",
                             "alerts": [a.payload() for a in new]})
    return dg.SensorResult(
        skip_reason=f"{len(new)} new runway alert(s): " + "; ".join(a.message for a in new),
        asset_events=[dg.AssetObservation(
            asset_key=customer_runway.key,
            metadata={"new_runway_alerts": dg.MetadataValue.json(
                [a.payload() for a in new])})],
    )
