"""The `make run` demo, end to end on a simulated foundation.

1. The catalog (prices, customers, agreements) is validated and loaded, as a Dagster run.
2. History: the simulated foundation is read every 3 hours from the start of the previous
   business month until now (snapshots landed directly, which is quicker than a Dagster run
   each), and those hours are measured and priced in one set-based pass.
3. The last complete hour is metered the way production does it: a snapshot run at minute 1
   and a metering run (measurements and priced postings) for that hour's partition.
4. The previous business month is posted to the ledger and its statements written; balances
   are refreshed; unknown resource kinds are recorded for review.
All Dagster runs land in Dagster's storage, so `make dev` shows them afterwards.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.catalog.assets import billing_catalog
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect
from billing_dagster.ledger.assets import (
    balances_table,
    customer_balances,
    ledger_entries,
    monthly_statements,
)
from billing_dagster.meters import METERS
from billing_dagster.partitions import hourly_keys_between, monthly_partitions
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.pricing.postings import price_window
from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.sql import query
from billing_dagster.usage.assets import foundation_snapshot, hourly_measurements
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

if TYPE_CHECKING:
    from billing_dagster.launch import Prepared

log = logging.getLogger("billing_dagster")
SEED = 7
CLIENT = ("billing", "billing-secret")
HISTORY_STEP = timedelta(hours=3)  # within the 3-hour carry bound, so no hour is "carried"
# Dagster's console logger prints every event at DEBUG; the demo logs its own progress.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(prepared: Prepared, *, apps: int, service_instances: int) -> int:
    now = datetime.now(UTC)
    last_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    month_key = monthly_partitions.get_last_partition_key()
    assert month_key is not None
    month_start = monthly_partitions.time_window_for_partition_key(month_key).start
    history_start = month_start.astimezone(UTC) - timedelta(days=1)
    foundation = Foundation(seed=SEED, apps=apps, service_instances=service_instances,
                            start=history_start - timedelta(hours=1))
    instance = dg.DagsterInstance.get()
    with Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim:
        resources = {
            "db": BillingDatabase(url=prepared.database_url),
            "cf": CloudFoundryApi(api_url=sim.url, client_id=CLIENT[0], client_secret=CLIENT[1]),
            "clock": Clock(simulator_url=sim.url),
        }

        def run(assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
            result = dg.materialize(assets, resources=resources, instance=instance,
                                    run_config=QUIET, tags={"billing/launched_by": "make run"}
                                    | kwargs.pop("tags", {}), **kwargs)
            if not result.success:
                raise SystemExit(f"run {result.run_id} failed; see the log above")
            return result

        log.info("loading the catalog")
        run([billing_catalog])
        _history(prepared.database_url, sim, history_start, last_hour)
        log.info("metering the last complete hour, %s UTC, through Dagster", f"{last_hour:%H:%M}")
        sim.advance_to(last_hour + timedelta(minutes=1))
        run([foundation_snapshot])
        (hour_key,) = hourly_keys_between(last_hour, last_hour + timedelta(hours=1))
        run([hourly_measurements, priced_postings], partition_key=hour_key)
        log.info("posting business month %s", month_key)
        run([ledger_entries, monthly_statements], partition_key=month_key)
        run([customer_balances])
    with connect(prepared.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        balances = cur.execute(query("customer_balances")).fetchall()
        unknown = cur.execute(query("record_unknown_kinds")).fetchall()
        reviewed = cur.execute(query("unknown_kinds_for_review")).fetchall()
        posted = cur.execute(query("posted_month_by_customer"),
                             {"business_month": month_start.date()}).fetchall()
        conn.commit()
    print(_summary(month_key, last_hour, balances, posted, reviewed, len(unknown)))
    return 0


def _history(database_url: str, sim: Simulator, start: datetime, end: datetime) -> None:
    """Read the foundation every HISTORY_STEP from `start`, then measure and price [start, end)."""
    log.info("history: a snapshot every %s from %s to %s (virtual time)", HISTORY_STEP,
             f"{start:%Y-%m-%d %H:%M}", f"{end:%Y-%m-%d %H:%M}")
    quiet = logging.getLogger("billing_dagster.usage.snapshot")  # one line per meter per read
    level, count = quiet.level, 0
    quiet.setLevel(logging.WARNING)
    try:
        with CloudFoundryClient(sim.url, *CLIENT) as client, connect(database_url) as conn:
            at = start - timedelta(minutes=59)
            while at < end:
                sim.advance_to(at)
                land_snapshot(conn, take_snapshot(client, METERS, sim.foundation.now))
                at, count = at + HISTORY_STEP, count + 1
            derived = derive_window(conn, start, end)
            priced = price_window(conn, start, end)
    finally:
        quiet.setLevel(level)
    log.info("history: %d snapshots, %d hours measured (%d rows) and priced (%d rows)", count,
             derived.hours, derived.rows, priced.rows)


def _summary(month_key: str, last_hour: datetime, balances: list[dict[str, Any]],
             posted: list[dict[str, Any]], reviewed: list[dict[str, Any]], new: int) -> str:
    lines = ["", f"Metered through {last_hour + timedelta(hours=1):%Y-%m-%d %H:%M} UTC; "
                 f"posted business month {month_key}:"]
    lines += [f"  {p['customer_id']:<24} {p['posted_microcredits']:>18,} microcredits "
              f"({Decimal(p['posted_microcredits']) / 1_000_000:,.6f} credits)" for p in posted]
    lines += ["", "Balances (credits):", balances_table(balances), "",
              f"Unknown resource kinds ({new} newly reported, all listed in "
              "billing.unknown_kind_review):"]
    lines += [f"  {r['meter']}:{r['name'] or r['natural_id']} ({r['reason']}): "
              f"{r['hours']} hours from {r['first_hour']:%Y-%m-%d %H:00} UTC, "
              f"{r['quantity']:,} unit-seconds held" for r in reviewed] or ["  none"]
    lines += ["", "Statements: .billing/statements/ (CSV). Open the Dagster UI on this data "
                  "with: make dev"]
    return "\n".join(lines)
