"""Ledger assets: the monthly posting, customers' balances and monthly statements."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.automation import AFTER_UPSTREAM
from billing_dagster.ledger.posting import PostedMonth, post_month
from billing_dagster.ledger.statements import (
    Statement,
    build_statements,
    credits,
    in_credits,
    statement_link,
)
from billing_dagster.partitions import business_month, monthly_partitions, utc_window
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.resources import BillingDatabase
from billing_dagster.sql import query


@dg.asset(
    group_name="ledger",
    kinds={"postgres"},
    partitions_def=monthly_partitions,
    deps=[dg.AssetDep(priced_postings), dg.AssetKey("billing_catalog")],
    check_specs=[dg.AssetCheckSpec(
        "ledger_balanced", asset="ledger_entries", blocking=True,
        description="The whole ledger's debits equal its credits and every transaction "
                    "balances.")],
)
def ledger_entries(context: dg.AssetExecutionContext, db: BillingDatabase) -> dg.MaterializeResult:
    """The month's postings in the double-entry ledger (business month in New York time,
    declared on the month's hourly priced postings). Per customer: one usage_post transaction
    whose amount is rounded once, half-even, per price line (credit credits_used; debit the
    lots of the agreements active in each hour, the one ending first first, and overage for
    what no agreement covered); when charges change after posting, an adjustment of only the
    difference, hour by hour. Agreements that begin by the month's end load their credits into
    their own lot (iaa_pop_start); those that end within it expire what is left of their lot
    (iaa_pop_end). Re-running an unchanged month posts nothing; posted rows never change."""
    month_start, month_end = utc_window(context.partition_time_window)
    month = business_month(context.partition_time_window)
    with db.connect() as conn:
        posted = post_month(conn, month, month_start, month_end)
        check = _ledger_check(conn)
        coverage = conn.execute(query("month_coverage"), {"month_start": month_start,
                                                          "month_end": month_end}).fetchall()
    hours = (month_end - month_start) // timedelta(hours=1)
    context.log.info(f"{month:%Y-%m}: posted {len(posted.posted)} transactions")
    for meter, derived, flagged in coverage:
        if derived < hours or flagged:
            context.log.warning(f"{month:%Y-%m} {meter}: {derived} of {hours} hours measured, "
                                f"{flagged} flagged; the posting charges what was measured")
    return dg.MaterializeResult(
        metadata={**_posting_metadata(posted), "hours_in_month": hours,
                  "hours_measured": dg.MetadataValue.json(
                      {meter: {"derived": derived, "flagged": flagged}
                       for meter, derived, flagged in coverage})},
        check_results=[check])


def _ledger_check(conn: Any) -> dg.AssetCheckResult:
    with conn.cursor(row_factory=dict_row) as cur:
        unbalanced = cur.execute(query("ledger_imbalances")).fetchall()
        totals = cur.execute(query("ledger_totals")).fetchone()
    return dg.AssetCheckResult(
        check_name="ledger_balanced",
        passed=not unbalanced and totals["debits"] == totals["credits"],
        metadata={"debits_microcredits": totals["debits"],
                  "credits_microcredits": totals["credits"],
                  "transactions": totals["transactions"],
                  "unbalanced_transactions": dg.MetadataValue.json(
                      [r["idempotency_key"] for r in unbalanced])})


def _posting_metadata(posted: PostedMonth) -> dict[str, Any]:
    rows = ["| customer | transaction | key | microcredits |", "|---|---|---|---|"]
    rows += [f"| {p.customer_id} | {p.transaction_type} | {p.idempotency_key} "
             f"| {p.amount_microcredits:,} |" for p in posted.posted]
    return {
        "business_month": f"{posted.business_month:%Y-%m}",
        "transactions_posted": len(posted.posted),
        "customers": len({p.customer_id for p in posted.posted}),
        "usage_microcredits_posted": sum(
            p.amount_microcredits for p in posted.posted
            if p.transaction_type in ("usage_post", "adjustment")),
        "adjustments": len(posted.of_type("adjustment")),
        "posted": dg.MetadataValue.md("\n".join(rows) if posted.posted
                                      else "nothing new to post"),
    }


@dg.asset(
    group_name="ledger",
    kinds={"postgres"},
    deps=[ledger_entries],
    # refreshed whenever a month is posted (the automation sensor runs it)
    automation_condition=AFTER_UPSTREAM,
    check_specs=[dg.AssetCheckSpec(
        "customers_within_credits", asset="customer_balances",
        description="No customer has used more credits than its agreements provide: no "
                    "overage.")],
)
def customer_balances(db: BillingDatabase) -> dg.MaterializeResult:
    """Every customer's balance per account, in microcredits and credits: credit_pool (paid
    for, not used yet, over all its agreements' lots), credits_used, credits_expired,
    receivable, and overage (usage no active agreement covered). Read from the ledger."""
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        balances = cur.execute(query("customer_balances")).fetchall()
    over = [b["customer_id"] for b in balances if b["overage"] > 0 or b["credit_pool"] < 0]
    return dg.MaterializeResult(
        metadata={"customers": len(balances),
                  "balances": dg.MetadataValue.md(balances_table(balances))},
        check_results=[dg.AssetCheckResult(
            check_name="customers_within_credits", passed=not over,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"over_credits": dg.MetadataValue.json(over)})],
    )


def balances_table(balances: list[dict[str, Any]]) -> str:
    lines = ["| customer | tier today | credits left | credits used | credits expired | receivable "
             "| overage |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {b['customer_id']} | {b['tier'] or 'none'} | {credits(b['credit_pool'])} "
              f"| {credits(b['credits_used'])} | {credits(b['credits_expired'])} "
              f"| {credits(b['receivable'])} | {credits(b['overage'])} |" for b in balances]
    return "\n".join(lines)


def statements_directory(configured: str = "") -> Path:
    return Path(configured or os.environ.get("BILLING_STATEMENTS_DIR")
                or Path.cwd() / ".billing" / "statements")


class StatementsConfig(dg.Config):
    output_dir: str = ""
    """Where the CSV files go (default: BILLING_STATEMENTS_DIR, else .billing/statements)."""


@dg.asset(group_name="ledger", kinds={"pandas", "csv"}, partitions_def=monthly_partitions,
          deps=[ledger_entries])
def monthly_statements(context: dg.AssetExecutionContext, db: BillingDatabase,
                       config: StatementsConfig) -> dg.MaterializeResult:
    """One statement per customer and business month (New York): the customer's tier of the
    month and its monthly allotment next to the month's use; usage by org, space and resource
    kind, in unit-seconds, exact microcredits and credits; and one line per agreement active in
    the month (or whose credits moved in it): its period, opening credits, credits added (its
    start, modifications), drawn by usage, expired, and closing credits, then the month's
    overage and credits used. Written as two CSV files per customer,
    <month>/<customer>.csv (usage) and <month>/<customer>-agreements.csv, and as Markdown."""
    month_start, month_end = utc_window(context.partition_time_window)
    month = business_month(context.partition_time_window)
    directory = statements_directory(config.output_dir)
    with db.connect() as conn:
        statements = build_statements(conn, month, month_start, month_end)
    paths = [str(path) for s in statements for path in s.write_csv(directory)]
    return dg.MaterializeResult(metadata={
        "business_month": f"{month:%Y-%m}",
        "customers": len(statements),
        "customers_with_overage": dg.MetadataValue.json(
            [s.customer_id for s in statements if s.overage_microcredits > 0]),
        "used_microcredits": sum(s.used_microcredits for s in statements),
        "overage_microcredits": sum(s.overage_microcredits for s in statements),
        "files": dg.MetadataValue.json(paths),
        "downloads": dg.MetadataValue.md(_download_table(statements)),
        "statements": dg.MetadataValue.md(
            "\n\n".join(s.to_markdown() for s in statements) or "no statement this month"),
        **{f"statement/{s.customer_id}": dg.MetadataValue.md(
            f"{_download_links(s)}\n\n{s.to_markdown()}") for s in statements},
    })


def _download_links(statement: Statement) -> str:
    month, customer = statement.month_label, statement.customer_id
    return (f"[{month}-{customer}.csv]({statement_link(month, customer)}) · "
            f"[{month}-{customer}-agreements.csv]({statement_link(month, customer, True)})")


def _download_table(statements: list[Statement]) -> str:
    """Each customer's statement files, as links the UI's login lets a reader download."""
    if not statements:
        return "no statement this month"
    lines = ["| customer | name | used (credits) | files |", "|---|---|---:|---|"]
    lines += [f"| {s.customer_id} | {s.customer_name} | {in_credits(s.used_microcredits):,} "
              f"| {_download_links(s)} |" for s in statements]
    return "\n".join(lines)
