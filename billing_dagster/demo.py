"""The `make run` demo: meter the last hours of a simulated foundation, end to end, through
Dagster (the runs land in Dagster's storage, so `make dev` shows them afterwards)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import dagster as dg

from billing_dagster.database import connect
from billing_dagster.partitions import hourly_keys_between
from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.sql import query
from billing_dagster.usage.assets import foundation_snapshot, hourly_measurements
from billing_dagster.usage.measurements import DerivedWindow, summarize_window

if TYPE_CHECKING:
    from billing_dagster.launch import Prepared

SEED = 7
# Dagster's console logger prints every event at DEBUG; the demo shows its own progress instead.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
log = logging.getLogger("billing_dagster")


def run_demo(prepared: Prepared, *, hours: int, apps: int, service_instances: int) -> int:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    # The foundation starts at midnight UTC of the day before, so re-running the demo the same
    # day replays the same simulated history instead of landing a different one on top of it.
    origin = start.replace(hour=0) - timedelta(days=1)
    foundation = Foundation(seed=SEED, apps=apps, service_instances=service_instances,
                            start=origin)
    instance = dg.DagsterInstance.get()
    with Simulator(foundation, client_id="billing", client_secret="billing-secret") as sim:
        resources = {
            "db": BillingDatabase(url=prepared.database_url),
            "cf": CloudFoundryApi(api_url=sim.url, client_id="billing",
                                  client_secret="billing-secret"),
            "clock": Clock(simulator_url=sim.url),
        }
        # a snapshot at minute 1 of every hour, starting the hour before the first one derived
        for hour in range(-1, hours):
            sim.advance_to(start + timedelta(hours=hour, minutes=1))
            log.info("snapshot at %s (virtual time)", foundation.now.isoformat())
            _check(dg.materialize([foundation_snapshot], resources=resources, instance=instance,
                                  run_config=QUIET, tags={"billing/launched_by": "make run"}))
        keys = hourly_keys_between(start, end)
        log.info("deriving %d hours %s .. %s in one run", len(keys), keys[0], keys[-1])
        _check(dg.materialize(
            [hourly_measurements], resources=resources, instance=instance, run_config=QUIET,
            tags={"dagster/asset_partition_range_start": keys[0],
                  "dagster/asset_partition_range_end": keys[-1],
                  "billing/launched_by": "make run"}))
    with connect(prepared.database_url) as conn:
        window = summarize_window(conn, start, end)
        unknown = conn.execute(query("unknown_kinds")).fetchall()
    print(_summary(window, keys, unknown))
    return 0


def _check(result: dg.ExecuteInProcessResult) -> None:
    if not result.success:
        raise SystemExit(f"run {result.run_id} failed; see the log above")


def _summary(window: DerivedWindow, keys: list[str], unknown: list[tuple]) -> str:
    lines = [
        "",
        f"Metered {window.hours} hours, {window.start:%Y-%m-%d %H:%M} to "
        f"{window.end:%Y-%m-%d %H:%M} UTC (partitions {keys[0]} .. {keys[-1]}, New York time)",
        f"{'meter':<12}{'resources':>10}{'unit-seconds':>18}  in other units",
    ]
    for t in window.totals:
        hours = Decimal(t.unit_seconds) / 3600
        other = (f"{hours / 1024:,.1f} GiB-hours of memory" if t.meter == "cfapps"
                 else f"{hours:,.1f} instance-hours")
        lines.append(f"{t.meter:<12}{t.resources:>10}{t.unit_seconds:>18,}  {other}")
    lines.append(f"measurement rows: {window.rows}")
    lines.append(f"gaps: {len(window.gaps)} hour(s); carried: {len(window.carried)} hour(s)")
    lines.append(f"unknown resource kinds: {len(unknown)}"
                 + "".join(f"\n  {meter}:{natural_id}" for meter, natural_id, _ in unknown))
    lines.append("Open the Dagster UI on this data with: make dev")
    return "\n".join(lines)
