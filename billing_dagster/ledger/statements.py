"""Monthly statements: each customer's month by org, space and resource kind, built with
pandas on Decimal (object) columns, never floats, written as CSV."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from billing_dagster.sql import query

MICROCREDITS_PER_CREDIT = Decimal(1_000_000)
# Statement lines show exact amounts to a millionth of a microcredit (credits to 12 places);
# the ledger holds the amounts rounded once per price line.
MICROCREDIT_PLACES = Decimal("0.000001")
CREDIT_PLACES = Decimal("0.000000000001")
COLUMNS = ["org", "space", "meter", "kind", "unit_seconds", "microcredits", "credits"]


@dataclass(frozen=True)
class Statement:
    customer_id: str
    business_month: date
    rows: pd.DataFrame  # COLUMNS; microcredits and credits are exact Decimals
    posted_microcredits: int  # what the ledger holds for the month (rounded per price line)

    @property
    def exact_microcredits(self) -> Decimal:
        return sum(self.rows["microcredits"], Decimal(0))

    def to_markdown(self) -> str:
        shown = self.rows.assign(
            unit_seconds=self.rows["unit_seconds"].map(lambda n: f"{n:,}"),
            microcredits=self.rows["microcredits"].map(lambda d: f"{d:,.2f}"),
            credits=self.rows["credits"].map(lambda d: f"{d:,.6f}"))
        total = (f"\n\n**{self.customer_id} {self.business_month:%Y-%m}**: posted "
                 f"{self.posted_microcredits:,} microcredits "
                 f"({Decimal(self.posted_microcredits) / MICROCREDITS_PER_CREDIT:,.6f} credits); "
                 f"exact sum of the lines {self.exact_microcredits:,.6f}")
        # numbers are preformatted strings: tabulate must not parse them back into floats
        return shown.to_markdown(index=False, disable_numparse=True) + total

    def write_csv(self, directory: Path) -> Path:
        path = directory / f"{self.business_month:%Y-%m}" / f"{self.customer_id}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        plain = self.rows.assign(  # fixed-point text, never exponent notation (0E-12)
            microcredits=self.rows["microcredits"].map(lambda d: format(d, "f")),
            credits=self.rows["credits"].map(lambda d: format(d, "f")))
        plain.to_csv(path, index=False)
        return path


def build_statements(conn: psycopg.Connection, business_month: date, month_start: datetime,
                     month_end: datetime) -> list[Statement]:
    """One statement per customer with charges or postings in the month."""
    params = {"business_month": business_month, "month_start": month_start,
              "month_end": month_end}
    with conn.cursor(row_factory=dict_row) as cur:
        posted = {r["customer_id"]: r["posted_microcredits"]
                  for r in cur.execute(query("posted_month_by_customer"), params)}
        customers = [r["customer_id"]
                     for r in cur.execute(query("statement_customers"), params)]
        statements = []
        for customer in sorted(set(customers) | set(posted)):
            rows = cur.execute(query("statement_rows"),
                               {**params, "customer_id": customer}).fetchall()
            statements.append(Statement(customer, business_month, _frame(rows),
                                        int(posted.get(customer, 0))))
    return statements


def _frame(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    frame = pd.DataFrame(rows)
    # one line per org, space and kind, whatever prices applied during the month
    grouped = (frame.groupby(["org", "space", "meter", "kind"], dropna=False, sort=True)
               .agg(unit_seconds=("unit_seconds", "sum"),
                    microcredits=("microcredits_exact", lambda s: sum(s, Decimal(0))))
               .reset_index())
    grouped["unit_seconds"] = grouped["unit_seconds"].astype("Int64")
    grouped["microcredits"] = grouped["microcredits"].map(
        lambda d: d.quantize(MICROCREDIT_PLACES, rounding=ROUND_HALF_EVEN))
    grouped["credits"] = grouped["microcredits"].map(
        lambda d: (d / MICROCREDITS_PER_CREDIT).quantize(CREDIT_PLACES, rounding=ROUND_HALF_EVEN))
    return pd.DataFrame(grouped[COLUMNS])
