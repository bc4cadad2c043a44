"""The Dagster code location: every asset, check, job, schedule, sensor and resource.

``defs`` is everything, with partitions from January 2025 (tests and the in-process demo use
it). ``code_location`` is what workspace.yaml loads into the webserver and the daemon: the same
definitions, built when the code location loads (never at import), with the partitions starting
at the deployment's billing start (README, "Partitions").
"""

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg

from billing_dagster.catalog.assets import billing_catalog, catalog_file_sensor
from billing_dagster.jobs import (
    catalog_job,
    landing_job,
    landing_schedule,
    ledger_job,
    ledger_schedule,
    metering_after_landing_sensor,
    metering_job,
    repricing_job,
)
from billing_dagster.ledger.assets import customer_balances, ledger_entries, monthly_statements
from billing_dagster.ledger.month_to_date import month_to_date
from billing_dagster.ledger.runway import customer_runway, runway_alerts_sensor
from billing_dagster.partitions import starting_at
from billing_dagster.pricing.assets import held_usage, priced_postings
from billing_dagster.pricing.sensors import (
    reposting_sensor,
    repricing_sensor,
    unknown_kinds_sensor,
)
from billing_dagster.resources import AwsApi, BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.settings import billing_start, database_settings
from billing_dagster.sql import query
from billing_dagster.usage.assets import (
    aws_readings,
    foundation_snapshot,
    hourly_measurements,
    usage_events,
)
from billing_dagster.usage.sensors import remeasure_sensor

# customer_balances follows the ledger, customer_runway the metering runs and the ledger,
# held_usage and month_to_date the pricing runs, by themselves; Dagster's default automation
# sensor starts stopped, so this one is declared running.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "billing_automation",
    target=dg.AssetSelection.assets(customer_balances, customer_runway, held_usage,
                                    month_to_date),
    default_status=dg.DefaultSensorStatus.RUNNING)


def resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "db": BillingDatabase(),
        "cf": CloudFoundryApi(api_url=dg.EnvVar("CF_API_URL"),
                              client_id=dg.EnvVar("CF_CLIENT_ID"),
                              client_secret=dg.EnvVar("CF_CLIENT_SECRET")),
        "aws": AwsApi(),
        "clock": Clock(),
    }


defs = dg.Definitions(
    assets=[billing_catalog, foundation_snapshot, usage_events, aws_readings, hourly_measurements,
            priced_postings, held_usage,
            ledger_entries, customer_balances, monthly_statements, customer_runway, month_to_date],
    jobs=[landing_job, metering_job, repricing_job, ledger_job, catalog_job],
    schedules=[landing_schedule, ledger_schedule],
    sensors=[catalog_file_sensor, metering_after_landing_sensor, remeasure_sensor,
             unknown_kinds_sensor, repricing_sensor, reposting_sensor, runway_alerts_sensor,
             automation_sensor],
    resources=resources(),
)


@dg.definitions
def code_location() -> dg.Definitions:
    """``defs`` with its partitions starting at the billing start."""
    start = billing_start(os.environ, _first_landing(), datetime.now(UTC))
    logging.getLogger(__name__).info("partitions start at %s", start)
    return starting_at(defs, start)


def _first_landing() -> datetime | None:
    """When the configured database first landed anything; None if nothing is landed yet, no
    database is configured (the embedded one is not started just for this) or it cannot be
    reached (then the partitions start a month before now, and a warning says why)."""
    settings = database_settings(os.environ, Path.cwd())
    if settings.url is None:
        return None
    try:
        with psycopg.connect(settings.url, connect_timeout=5) as conn:
            row = conn.execute(query("first_landing")).fetchone()
    except psycopg.Error as exc:
        logging.getLogger(__name__).warning(
            "could not read the first landing from %s (%s): partitions start a month before "
            "now; set BILLING_START to fix them", settings.describe(), exc)
        return None
    return row[0] if row else None
