"""The `make run` demo, end to end on a simulated foundation with 40 days of history.

1. The catalog (prices, customers, agreements) is validated and loaded, as a Dagster run.
2. History: the simulated foundation lives 40 days; its usage events are landed as time goes
   by (daily, directly: a Dagster run each would only add bookkeeping), on top of one base
   snapshot at the start, and the hours before the last week are measured and priced in one
   set-based pass.
3. The way production does it, as Dagster runs: a landing run (snapshot and new events), then
   the last 7 days measured and priced as ONE backfill run of 168 hourly partitions
   (``--backfill-hours`` picks another number).
4. The previous business month is posted to the ledger and its statements written; balances
   are refreshed; unknown resource kinds are recorded for review.
All Dagster runs land in Dagster's storage, so `make dev` shows them afterwards.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.aws.embedded import EmbeddedAws
from billing_dagster.catalog.assets import billing_catalog
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect
from billing_dagster.launch import Prepared, remember_foundation
from billing_dagster.ledger.assets import (
    balances_table,
    customer_balances,
    ledger_entries,
    monthly_statements,
    statements_directory,
)
from billing_dagster.ledger.runway import (
    CustomerRunway,
    customer_runway,
    runway_report,
    runway_text,
)
from billing_dagster.meters import AWS_METERS, STREAMS
from billing_dagster.partitions import (
    RANGE_END,
    RANGE_START,
    hourly_keys_between,
    monthly_partitions,
)
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.pricing.postings import price_window
from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.aws import AwsFoundation
from billing_dagster.sql import query
from billing_dagster.usage.assets import (
    aws_readings,
    foundation_snapshot,
    hourly_measurements,
    usage_events,
)
from billing_dagster.usage.aws import read_and_land
from billing_dagster.usage.events import land_events
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.recorded import record_measured_hours

log = logging.getLogger("billing_dagster")
SEED = 7
CLIENT = ("billing", "billing-secret")
HISTORY = timedelta(days=40)  # at least; see run_demo
BACKFILL = timedelta(days=7)
HOUR = timedelta(hours=1)
# Dagster's console logger prints every event at DEBUG; the demo logs its own progress.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(prepared: Prepared, *, apps: int, service_instances: int,
             backfill: timedelta = BACKFILL) -> int:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # last complete hour's end
    backfill_start = end - backfill
    month_key = monthly_partitions.get_last_partition_key()
    assert month_key is not None
    month_start = monthly_partitions.time_window_for_partition_key(month_key).start
    # 40 days, or more when that is needed to cover the whole month that gets posted
    start = min(end - HISTORY, month_start.astimezone(UTC))
    parameters = {"seed": SEED, "apps": apps, "service_instances": service_instances,
                  "start": start - timedelta(hours=1)}
    foundation = Foundation(**parameters)
    remember_foundation(parameters)  # `make dev` goes on serving this foundation
    instance = dg.DagsterInstance.get()
    with Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim, \
            EmbeddedAws() as aws:
        AwsFoundation(foundation, aws.clients())  # follows the foundation as time advances
        resources = {
            "db": BillingDatabase(url=prepared.database_url),
            "cf": CloudFoundryApi(api_url=sim.url, client_id=CLIENT[0], client_secret=CLIENT[1]),
            "aws": aws.resource(),
            "clock": Clock(simulator_url=sim.url),
        }

        def run(assets: list[Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
            tags = {"billing/launched_by": "make run", **kwargs.pop("tags", {})}
            result = dg.materialize(assets, resources=resources, instance=instance,
                                    run_config=QUIET, tags=tags, **kwargs)
            if not result.success:
                raise SystemExit(f"run {result.run_id} failed; see the log above")
            return result

        log.info("loading the catalog")
        run([billing_catalog])
        # AWS is read hourly from the hour before the backfill (its sizes are held between
        # readings, so the backfill's first hour needs a reading before it)
        _history(prepared.database_url, sim, start, backfill_start,
                 aws_from=(aws, backfill_start - HOUR + timedelta(minutes=1)))
        with connect(prepared.database_url) as conn:
            record_measured_hours(instance, conn, start, backfill_start, "make-run-history",
                                  "make run's history, measured outside Dagster")
        _aws_hourly(prepared.database_url, sim, aws, backfill_start + HOUR, end)
        log.info("landing run: a snapshot, the newest usage events and the AWS readings")
        sim.advance_to(end + timedelta(minutes=1))
        run([foundation_snapshot, usage_events, aws_readings])
        keys = hourly_keys_between(backfill_start, end)
        log.info("backfilling %d hours (%s .. %s) in one run", len(keys), keys[0], keys[-1])
        run([hourly_measurements, priced_postings],
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]})
        log.info("posting business month %s", month_key)
        run([ledger_entries, monthly_statements], partition_key=month_key)
        run([customer_balances, customer_runway])
    with connect(prepared.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        runway = runway_report(conn)
        balances = cur.execute(query("customer_balances")).fetchall()
        new_unknown = cur.execute(query("record_unknown_kinds")).fetchall()
        reviewed = cur.execute(query("unknown_kinds_for_review")).fetchall()
        posted = cur.execute(query("posted_month_by_customer"),
                             {"business_month": month_start.date()}).fetchall()
        flagged = cur.execute(query("window_coverage"),
                              {"window_start": backfill_start, "window_end": end}).fetchall()
        metered = cur.execute(query("metered_services_by_customer"),
                              {"window_start": backfill_start, "window_end": end}).fetchall()
    print(_summary(month_key, keys, flagged, balances, posted, reviewed, len(new_unknown),
                   runway, metered))
    return 0


def _history(database_url: str, sim: Simulator, start: datetime, end: datetime,
             aws_from: tuple[EmbeddedAws, datetime] | None = None) -> None:
    """Land the usage events day by day from ``start``, then measure and price [start, end)."""
    log.info("history: %s to %s of virtual time, usage events landed daily",
             f"{start:%Y-%m-%d %H:%M}", f"{end:%Y-%m-%d %H:%M}")
    quiet = logging.getLogger("billing_dagster.usage")  # a line per page read otherwise
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with CloudFoundryClient(sim.url, *CLIENT) as client, connect(database_url) as conn:
            at, events = start - timedelta(minutes=55), 0
            reading_from = aws_from[1] if aws_from else None
            while True:
                sim.advance_to(at)
                events += sum(land_events(conn, client, stream, sim.foundation.now).events_new
                              for stream in STREAMS)
                if aws_from and reading_from and at >= reading_from:
                    read_and_land(conn, aws_from[0].clients(), AWS_METERS, sim.foundation.now)
                if at >= end:
                    break
                hourly = reading_from is not None and at >= reading_from
                step = at + (HOUR if hourly else timedelta(days=1))
                if reading_from is not None and at < reading_from < step:
                    step = reading_from
                at = min(step, end + timedelta(minutes=5))
            derived = derive_window(conn, start, end)
            priced = price_window(conn, start, end)
    finally:
        quiet.setLevel(level)
    log.info("history: %d usage events landed; %d hours measured (%d rows, %d flagged) and "
             "priced (%d rows)", events, derived.hours, derived.rows, len(derived.flagged),
             priced.rows)


def _aws_hourly(database_url: str, sim: Simulator, aws: EmbeddedAws, start: datetime,
                end: datetime) -> None:
    """Read AWS once in every hour of [start, end), as the hourly landing does."""
    log.info("AWS: %d hourly readings of the metered services", (end - start) // HOUR)
    clients = aws.clients()
    with connect(database_url) as conn:
        at = max(start + timedelta(minutes=1), sim.foundation.now)
        while at < end:
            sim.advance_to(at)
            read_and_land(conn, clients, AWS_METERS, sim.foundation.now)
            at += HOUR


# How the summary shows each AWS meter's quantity: its unit converted to a readable one.
METERED_UNITS: dict[str, tuple[str, int]] = {
    "GiB-second": ("GiB-hours", 3600), "byte-second": ("GiB-days", 86_400 << 30),
    "send": ("sends", 1), "byte": ("MiB", 1 << 20)}


def _metered_lines(metered: list[dict[str, Any]]) -> list[str]:
    lines = []
    for m in metered:
        label, per = METERED_UNITS[m["unit"]]
        charged = ("held: no price or no customer" if m["microcredits"] is None
                   else f"{Decimal(m['microcredits']) / 1_000_000:>12,.6f} credits")
        lines.append(f"  {m['customer_id'] or '(no customer: held)':<24} {m['meter']:<21} "
                     f"{Decimal(m['quantity']) / per:>16,.1f} {label:<9} {charged}")
    return lines or ["  none"]


def _summary(month_key: str, keys: list[str], flagged: list[dict[str, Any]],
             balances: list[dict[str, Any]], posted: list[dict[str, Any]],
             reviewed: list[dict[str, Any]], new: int, runway: list[CustomerRunway],
             metered: list[dict[str, Any]]) -> str:
    lines = ["", f"Backfilled {len(keys)} hours in one run ({keys[0]} .. {keys[-1]}, New York "
                 f"keys); hours flagged: {len(flagged)}",
             f"Posted business month {month_key}:"]
    lines += [f"  {p['customer_id']:<24} {p['posted_microcredits']:>18,} microcredits "
              f"({Decimal(p['posted_microcredits']) / 1_000_000:,.6f} credits)" for p in posted]
    lines += ["", f"Metered services read from AWS, {keys[0]} .. {keys[-1]} (priced exactly):"]
    lines += _metered_lines(metered)
    lines += ["", "Balances (credits):", balances_table(balances), "",
              "Agreements, burn rate and runway (as of the newest priced hour):",
              runway_text(runway), "",
              f"Unknown resource kinds ({new} newly reported, all listed in "
              "billing.unknown_kind_review):"]
    lines += [f"  {r['meter']}:{r['name'] or r['natural_id']} ({r['reason']}): "
              f"{r['hours']} hours from {r['first_hour']:%Y-%m-%d %H:00} UTC, "
              f"{r['quantity']:,} unit-seconds held" for r in reviewed] or ["  none"]
    lines += ["", f"Statements (CSV): {statements_directory()}",
              "Open the Dagster UI on this data with: make dev"]
    return "\n".join(lines)
