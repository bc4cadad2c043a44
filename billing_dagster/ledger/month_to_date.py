"""The business month under way: what each customer has been charged so far, and how much of
the month is measured, before the month is posted to the ledger."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.automation import AFTER_UPSTREAM
from billing_dagster.ledger.statements import MICROCREDITS_PER_CREDIT, statement_link
from billing_dagster.partitions import BUSINESS_TIMEZONE, monthly_partitions, utc_window
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.resources import BillingDatabase, Clock
from billing_dagster.sql import query


def _share(part: int, whole: int) -> str:
    return f"{Decimal(100 * part) / whole:.1f}%" if whole else "n/a"


@dg.asset(
    group_name="ledger",
    kinds={"postgres"},
    deps=[priced_postings],
    # refreshed after each pricing run (the automation sensor runs it)
    automation_condition=AFTER_UPSTREAM,
)
def month_to_date(db: BillingDatabase, clock: Clock) -> dg.MaterializeResult:
    """The business month under way (New York), up to the hour now begins: the hours elapsed,
    measured and complete (with their shares: a stalled metering shows here first), and per
    customer the charge so far in exact microcredits and in credits (rounded only when the
    month is posted), its newest priced hour, and its usage so far to download as CSV (the
    statement files of the month, built when asked for)."""
    now = clock.now().astimezone(UTC)
    now_hour = now.replace(minute=0, second=0, microsecond=0)
    month = f"{now.astimezone(ZoneInfo(BUSINESS_TIMEZONE)):%Y-%m}"
    month_start, _ = utc_window(monthly_partitions.time_window_for_partition_key(month))
    params = {"month_start": month_start, "now_hour": now_hour}
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        hours = cur.execute(query("month_to_date_hours"), params).fetchone() or {
            "elapsed": 0, "measured": 0, "complete": 0}
        customers = cur.execute(query("month_to_date_customers"), params).fetchall()
    total = sum((c["microcredits_exact"] for c in customers), Decimal(0))
    return dg.MaterializeResult(metadata={
        "business_month": month,
        "as_of_utc": now_hour.isoformat(),
        "hours_elapsed": hours["elapsed"],
        "hours_measured": hours["measured"],
        "hours_complete": hours["complete"],
        "measured_share": _share(hours["measured"], hours["elapsed"]),
        "complete_share": _share(hours["complete"], hours["elapsed"]),
        "customers": len(customers),
        "charge_so_far_microcredits_exact": f"{total:.6f}",
        "charge_so_far_credits": f"{total / MICROCREDITS_PER_CREDIT:,.6f}",
        "by_customer": dg.MetadataValue.md(_customer_table(month, customers)),
    })


def _customer_table(month: str, customers: list[dict[str, Any]]) -> str:
    if not customers:
        return f"no priced usage in {month} yet"
    lines = ["| customer | name | charge so far (credits) | exact microcredits "
             "| newest priced hour (UTC) | usage so far |", "|---|---|---:|---:|---|---|"]
    lines += [f"| {c['customer_id']} | {c['customer_name']} "
              f"| {c['microcredits_exact'] / MICROCREDITS_PER_CREDIT:,.6f} "
              f"| {c['microcredits_exact']:,.6f} | {c['newest_hour']:%Y-%m-%d %H:00} "
              f"| [{month}-{c['customer_id']}.csv]({statement_link(month, c['customer_id'])}) |"
              for c in customers]
    return "\n".join(lines)
