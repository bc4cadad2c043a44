"""The hourly priced postings asset and its check."""

from typing import Any

import dagster as dg

from billing_dagster.partitions import hourly_partitions, utc_window
from billing_dagster.pricing.postings import PricedWindow, price_window
from billing_dagster.resources import BillingDatabase
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
        hours = hour_reports(conn, start, end)
    for hour in hours:  # each partition its own hour's figures; _metadata is the run's
        context.add_asset_metadata(hour.posting_metadata(), partition_key=hour.partition_key)
    context.log.info(f"priced {start.isoformat()}..{end.isoformat()}: {priced.rows} rows; "
                     f"unpriced kinds {priced.unpriced_kinds}; orgs without customer "
                     f"{priced.orgs_without_customer}")
    return dg.MaterializeResult(
        metadata=_metadata(priced),
        check_results=[dg.AssetCheckResult(
            check_name="every_measurement_priced", passed=not priced.held,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"held_usage": dg.MetadataValue.md(_held_table(priced)),
                      "unpriced_kinds": dg.MetadataValue.json(priced.unpriced_kinds),
                      "orgs_without_customer": dg.MetadataValue.json(
                          priced.orgs_without_customer)})],
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


def _held_table(priced: PricedWindow) -> str:
    if not priced.held:
        return "nothing held: every measurement is priced and has a customer"
    lines = ["| reason | meter | kind | org | hours | resource-hours | quantity |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {h.reason} | {h.meter} | {h.kind} | {h.org or '?'} | {h.hours} "
              f"| {h.resource_hours} | {h.quantity} |" for h in priced.held]
    return "\n".join(lines)
