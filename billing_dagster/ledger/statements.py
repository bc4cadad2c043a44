"""Monthly statements: each customer's business month with its tier, its usage by org, space and
resource kind, and each agreement's credits (opening, added, drawn, expired, closing), then the
month's overage and credits used. Amounts are integer microcredits, or exact Decimals (pandas
object columns), never floats; written as CSV and rendered as Markdown."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from billing_dagster.sql import query

MICROCREDITS_PER_CREDIT = Decimal(1_000_000)
# Statement lines show exact amounts to a millionth of a microcredit (credits to 12 places);
# the ledger holds the amounts rounded once per price line.
MICROCREDIT_PLACES = Decimal("0.000001")
CREDIT_PLACES = Decimal("0.000000000001")
ONE_MICROCREDIT_IN_CREDITS = Decimal("0.000001")
COLUMNS = ["customer_id", "month", "org", "space", "meter", "kind", "unit_seconds",
           "microcredits", "credits"]
AMOUNTS = ["opening", "added", "drawn", "expired", "closing"]
AGREEMENT_COLUMNS = ["customer_id", "month", "line", "agreement", "first_day", "last_day",
                     *(f"{amount}_{unit}" for amount in AMOUNTS
                       for unit in ("microcredits", "credits"))]


# Where the UI serves statement files (billing_dagster/web/statements.py), behind its login.
DOWNLOADS = "/statements/"


def statement_link(month: str, customer: str, agreements: bool = False) -> str:
    """The path of a statement file, relative to the UI's origin."""
    return f"{DOWNLOADS}{month}/{customer}{'-agreements' if agreements else ''}.csv"


def in_credits(microcredits: int) -> Decimal:
    """Whole microcredits in credits, exactly (six places)."""
    return (Decimal(microcredits) / MICROCREDITS_PER_CREDIT).quantize(ONE_MICROCREDIT_IN_CREDITS)


def credits(microcredits: int) -> str:
    """Whole microcredits as credits for people: exact, six places, thousands separated."""
    return f"{in_credits(microcredits):,}"


@dataclass(frozen=True)
class AgreementMonth:
    """One agreement's lot over a business month, in microcredits."""

    iaa_id: str
    first_day: date  # its period of performance as modified, New York dates, both inclusive
    last_day: date
    opening: int  # the lot's balance from transactions effective before the month
    added: int  # its start and modifications effective in the month (< 0: credits removed)
    drawn: int  # usage posts and adjustments effective in the month (< 0: given back)
    expired: int  # what was left when its period ended, if it ended within the month

    @property
    def closing(self) -> int:
        return self.opening + self.added - self.drawn - self.expired


@dataclass(frozen=True)
class Statement:
    customer_id: str
    customer_name: str
    business_month: date
    tier: str | None  # the tier in effect on the month's first day
    tier_credits_per_month: int | None  # its monthly allotment, whole credits
    rows: pd.DataFrame  # COLUMNS; microcredits and credits are exact Decimals
    posted_microcredits: int  # what the ledger holds for the month (rounded per price line)
    agreements: tuple[AgreementMonth, ...]
    overage_microcredits: int  # usage of the month that no agreement covered
    used_microcredits: int  # credits used by the month's usage (from the lots and overage)

    @property
    def month_label(self) -> str:
        return f"{self.business_month:%Y-%m}"

    @property
    def exact_microcredits(self) -> Decimal:
        return sum(self.rows["microcredits"], Decimal(0))

    def to_markdown(self) -> str:
        return "\n\n".join([self._header_markdown(), self._usage_markdown(),
                            self._agreements_markdown()])

    def write_csv(self, directory: Path) -> list[Path]:
        """``<directory>/<YYYY-MM>/<customer>.csv`` (usage) and ``<customer>-agreements.csv``
        (one line per agreement, then the overage and total lines)."""
        folder = directory / self.month_label
        folder.mkdir(parents=True, exist_ok=True)
        usage = folder / f"{self.customer_id}.csv"
        usage.write_text(self.usage_csv())
        agreements = folder / f"{self.customer_id}-agreements.csv"
        agreements.write_text(self.agreements_csv())
        return [usage, agreements]

    def usage_csv(self) -> str:
        """The usage lines as CSV, the customer and month in every row."""
        return self.rows.assign(  # fixed-point text, never exponent notation (0E-12)
            microcredits=self.rows["microcredits"].map(lambda d: format(d, "f")),
            credits=self.rows["credits"].map(lambda d: format(d, "f")),
        ).to_csv(index=False)

    def agreements_csv(self) -> str:
        """The agreement lines, then the overage and total lines, as CSV."""
        return self.agreements_frame().to_csv(index=False)

    def agreements_frame(self) -> pd.DataFrame:
        """AGREEMENT_COLUMNS as text: a line per agreement, then ``overage`` (usage no agreement
        covered) and ``total`` (the month's credits used: the agreements' draws plus overage),
        whose amounts are in the drawn columns."""
        blank = {**dict.fromkeys(AGREEMENT_COLUMNS, ""), "customer_id": self.customer_id,
                 "month": self.month_label}
        lines = [{**blank, "line": "agreement", "agreement": a.iaa_id,
                  "first_day": a.first_day.isoformat(), "last_day": a.last_day.isoformat(),
                  **_amount_cells(zip(AMOUNTS, (a.opening, a.added, a.drawn, a.expired,
                                                a.closing), strict=True))}
                 for a in self.agreements]
        lines += [{**blank, "line": "overage",
                   **_amount_cells([("drawn", self.overage_microcredits)])},
                  {**blank, "line": "total", **_amount_cells([("drawn", self.used_microcredits)])}]
        return pd.DataFrame(lines, columns=AGREEMENT_COLUMNS, dtype=object)

    def _header_markdown(self) -> str:
        allotment = ("none" if self.tier_credits_per_month is None
                     else f"{self.tier_credits_per_month:,}")
        return "\n".join([
            f"### {self.customer_name} ({self.customer_id}), {self.month_label}",
            "",
            "| customer | name | month | tier | allotment (credits a month) | used (credits) "
            "| used (microcredits) |",
            "|---|---|---|---|---:|---:|---:|",
            f"| {self.customer_id} | {self.customer_name} | {self.month_label} "
            f"| {self.tier or 'none'} | {allotment} | {in_credits(self.posted_microcredits):,} "
            f"| {self.posted_microcredits:,} |",
            "",
            "Used is what the ledger holds for the month, rounded once per price line; the "
            f"exact sum of the usage lines is {self.exact_microcredits:,.6f} microcredits."])

    def _usage_markdown(self) -> str:
        if self.rows.empty:
            return "No usage this month."
        shown = self.rows.drop(columns=["customer_id", "month"]).assign(
            unit_seconds=self.rows["unit_seconds"].map(lambda n: f"{n:,}"),
            microcredits=self.rows["microcredits"].map(lambda d: f"{d:,.2f}"),
            credits=self.rows["credits"].map(lambda d: f"{d:,.6f}"))
        # numbers are preformatted strings: tabulate must not parse them back into floats
        return shown.to_markdown(index=False, disable_numparse=True)

    def _agreements_markdown(self) -> str:
        lines = ["| agreement | period | opening | added | drawn | expired | closing |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {a.iaa_id} | {a.first_day} to {a.last_day} | "
                  + " | ".join(f"{in_credits(n):,}" for n in (a.opening, a.added, a.drawn,
                                                           a.expired, a.closing)) + " |"
                  for a in self.agreements]
        return "\n".join([
            *(lines if self.agreements else ["No agreement this month."]),
            "",
            f"Overage (usage no agreement covered): {in_credits(self.overage_microcredits):,} "
            f"credits. Credits used: {in_credits(self.used_microcredits):,} (drawn from the "
            "agreements plus overage)."])


def build_statements(conn: psycopg.Connection, business_month: date, month_start: datetime,
                     month_end: datetime) -> list[Statement]:
    """One statement per customer with usage, postings, ledger activity or an active agreement
    in the month. ``month_start``/``month_end`` are the UTC instants of the New York month."""
    params = {"business_month": business_month, "month_start": month_start,
              "month_end": month_end}
    month_label = f"{business_month:%Y-%m}"
    with conn.cursor(row_factory=dict_row) as cur:
        customers = cur.execute(query("statement_customers"), params).fetchall()
        usage = _by_customer(cur.execute(query("statement_rows"), params))
        agreements = _by_customer(cur.execute(query("statement_agreements"), params))
    return [Statement(
        customer_id=c["customer_id"], customer_name=c["customer_name"],
        business_month=business_month, tier=c["tier"],
        tier_credits_per_month=c["credits_per_month"],
        rows=_frame(usage[c["customer_id"]], month_label),
        posted_microcredits=c["posted_microcredits"],
        agreements=tuple(_agreement(r, month_label) for r in agreements[c["customer_id"]]),
        overage_microcredits=c["overage_microcredits"],
        used_microcredits=c["used_microcredits"]) for c in customers]


def _by_customer(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["customer_id"]].append(row)
    return grouped


def _agreement(row: dict[str, Any], month_label: str) -> AgreementMonth:
    line = AgreementMonth(
        iaa_id=row["iaa_id"], first_day=row["first_day"], last_day=row["last_day"],
        opening=row["opening_microcredits"], added=row["added_microcredits"],
        drawn=row["drawn_microcredits"], expired=row["expired_microcredits"])
    if line.closing != row["balance_at_end_microcredits"]:
        raise ValueError(
            f"statement {month_label} of {row['customer_id']}, agreement {line.iaa_id}: opening "
            f"{line.opening} + added {line.added} - drawn {line.drawn} - expired {line.expired} "
            f"= {line.closing} microcredits, but its lot holds "
            f"{row['balance_at_end_microcredits']} from the transactions effective before the "
            "month's end: a transaction of a type the statement does not know moved the lot; "
            "add that type to statement_agreements (sql/queries/statements.sql)")
    return line


def _amount_cells(amounts: Iterable[tuple[str, int]]) -> dict[str, str]:
    cells: dict[str, str] = {}
    for name, microcredits in amounts:
        cells[f"{name}_microcredits"] = str(microcredits)
        cells[f"{name}_credits"] = format(in_credits(microcredits), "f")
    return cells


def _frame(rows: list[dict[str, Any]], month_label: str) -> pd.DataFrame:
    """The usage lines (one per org, space and kind, whatever prices applied during the month),
    exact microcredits to a millionth and credits to 12 places, half-even."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    frame = pd.DataFrame(rows).assign(month=month_label)
    frame["unit_seconds"] = frame["unit_seconds"].astype("Int64")
    frame["microcredits"] = frame["microcredits_exact"].map(
        lambda d: d.quantize(MICROCREDIT_PLACES, rounding=ROUND_HALF_EVEN))
    frame["credits"] = frame["microcredits"].map(
        lambda d: (d / MICROCREDITS_PER_CREDIT).quantize(CREDIT_PLACES, rounding=ROUND_HALF_EVEN))
    return pd.DataFrame(frame[COLUMNS])
