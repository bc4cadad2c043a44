"""The hourly priced postings asset and its check."""

from decimal import Decimal
from typing import Any

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.automation import AFTER_UPSTREAM
from billing_dagster.partitions import hourly_partitions, utc_window
from billing_dagster.pricing.postings import PricedWindow, price_window
from billing_dagster.resources import BillingDatabase
from billing_dagster.sql import query
from billing_dagster.usage.assets import hourly_measurements
from billing_dagster.usage.hours import hour_reports


@dg.asset(
    group_name="pricing",
    kinds={"postgres"},
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[hourly_measurements, dg.AssetKey("billing_catalog")],
    check_specs=[dg.AssetCheckSpec(
        "every_measurement_priced", asset="priced_postings",
        description="Every measurement has a price and a customer; lists what is held.")],
)
def priced_postings(context: dg.AssetExecutionContext, db: BillingDatabase) -> dg.MaterializeResult:
    """Usage of one UTC hour priced, per org, customer, resource kind and price: quantity in
    unit-seconds and the exact amount (quantity x microcredits_per_unit / unit, not rounded;
    the monthly posting rounds once). Each measurement takes the price valid at the start of
    its hour. Usage with no price, or of an org with no customer, is kept with the price or
    customer empty, flagged by the check, and charged when the catalog fills the gap."""
    start, end = utc_window(context.partition_time_window)
    with db.connect() as conn:
        priced = price_window(conn, start, end)
        hours = hour_reports(conn, start, end, measurements=False)
    for hour in hours:  # each partition its own hour's figures; _metadata is the run's
        context.add_asset_metadata(hour.posting_metadata(), partition_key=hour.partition_key)
    context.log.info(f"priced {start.isoformat()}..{end.isoformat()}: {priced.rows} rows; "
                     f"unpriced kinds {_some(priced.unpriced_kinds)}; orgs without customer "
                     f"{_some(priced.orgs_without_customer)}")
    return dg.MaterializeResult(
        metadata=_metadata(priced),
        check_results=[dg.AssetCheckResult(
            check_name="every_measurement_priced", passed=not priced.held,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"held_usage": dg.MetadataValue.md(_held_table(priced)),
                      "held_rows": len(priced.held),
                      "unpriced_kinds": dg.MetadataValue.json(_some(priced.unpriced_kinds)),
                      "orgs_without_customer": dg.MetadataValue.json(
                          _some(priced.orgs_without_customer))})],
    )


def _metadata(priced: PricedWindow) -> dict[str, Any]:
    """What the whole run priced, beside each partition's own hour (prefixed ``run_``)."""
    return {
        "run_window_utc": f"{priced.start.isoformat()} .. {priced.end.isoformat()}",
        "run_rows": priced.rows,
        "run_microcredits_total_exact": str(sum(priced.by_customer.values())),
        "run_unpriced_kinds": len(priced.unpriced_kinds),
        "run_orgs_without_customer": len(priced.orgs_without_customer),
    }


# Metadata is kept in Dagster's event log for every materialization and drawn by the UI, so
# its lists are bounded: a catalog that misses many orgs' customers (a new foundation, the
# benches' 20k-app one: 19,475 held rows in a month) would otherwise write them all each hour.
SHOWN = 50


def _some(names: list[str]) -> list[str]:
    """The first SHOWN names, and how many more there are."""
    if len(names) <= SHOWN:
        return names
    return [*names[:SHOWN], f"... and {len(names) - SHOWN} more"]


def _more(rows: int, resource_hours: int) -> str:
    return (f"\n\n{rows} more rows ({resource_hours} resource-hours) are not shown: "
            "`SELECT * FROM billing.held_usage` lists every row held, of every hour.")


def _held_table(priced: PricedWindow) -> str:
    if not priced.held:
        return "nothing held: every measurement is priced and has a customer"
    lines = ["| reason | meter | kind | org | hours | resource-hours | quantity |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {h.reason} | {h.meter} | {h.kind} | {h.org or '?'} | {h.hours} "
              f"| {h.resource_hours} | {h.quantity} |"
              for h in priced.held[:SHOWN]]  # the largest first (held_usage)
    rest = priced.held[SHOWN:]
    return "\n".join(lines) + (_more(len(rest), sum(h.resource_hours for h in rest))
                               if rest else "")


@dg.asset(
    group_name="pricing",
    kinds={"postgres"},
    deps=[priced_postings],
    # refreshed after each pricing run (the automation sensor runs it)
    automation_condition=AFTER_UPSTREAM,
    check_specs=[dg.AssetCheckSpec(
        "nothing_held", asset="held_usage",
        description="No usage, of any hour, waits for a kind's name or price or for an org's "
                    "customer.")],
)
def held_usage(db: BillingDatabase) -> dg.MaterializeResult:
    """All usage that is kept but cannot be charged yet, of every hour priced so far (not only
    the last run's): per reason (a kind with no name or no price, an org with no customer),
    meter, kind and org, with the first and last hour, hours, resource-hours, quantity and,
    for usage with a price but no customer, what it would cost. It stays here until the
    catalog fills the gap and the hours are priced again (repricing_sensor does that)."""
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        held = cur.execute(query("all_held_usage")).fetchall()
    waiting = sum((h["microcredits_exact"] or Decimal(0) for h in held), Decimal(0))
    return dg.MaterializeResult(
        metadata={
            "held_rows": len(held),
            "unknown_kinds": dg.MetadataValue.json(_some(sorted(
                {f"{h['meter']}:{h['kind']} ({h['reason']})" for h in held
                 if h["reason"] != "no customer"}))),
            "orgs_without_customer": dg.MetadataValue.json(_some(sorted(
                {h["org"] for h in held if h["reason"] == "no customer"}))),
            "microcredits_waiting_for_a_customer_exact": str(waiting),
            "held_usage": dg.MetadataValue.md(_all_held_table(held)),
        },
        check_results=[dg.AssetCheckResult(
            check_name="nothing_held", passed=not held, severity=dg.AssetCheckSeverity.WARN,
            metadata={"held_rows": len(held)})],
    )


def _all_held_table(held: list[dict[str, Any]]) -> str:
    if not held:
        return "nothing held: all usage priced so far has a price and a customer"
    lines = ["| reason | meter | kind | org | first hour (UTC) | last hour (UTC) | hours "
             "| resource-hours | quantity | microcredits (exact) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {h['reason']} | {h['meter']} | {h['kind']} | {h['org']} "
              f"| {h['first_hour']:%Y-%m-%d %H:00} | {h['last_hour']:%Y-%m-%d %H:00} "
              f"| {h['hours']} | {h['resource_hours']} | {h['quantity']} "
              f"| {h['microcredits_exact'] if h['microcredits_exact'] is not None else '-'} |"
              for h in held[:SHOWN]]  # the largest first (all_held_usage)
    rest = held[SHOWN:]
    return "\n".join(lines) + (_more(len(rest), sum(h["resource_hours"] for h in rest))
                               if rest else "")
