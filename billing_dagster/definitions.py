"""The Dagster code location: every asset, check, job, schedule and resource, in one place."""

from __future__ import annotations

import dagster as dg

from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.usage.assets import foundation_snapshot, hourly_measurements

snapshot_job = dg.define_asset_job(
    "snapshot_job", selection=[foundation_snapshot],
    description="Read the foundation's current state and land it.")
measurements_job = dg.define_asset_job(
    "measurements_job", selection=[hourly_measurements],
    description="Derive hourly measurements from landed observations.")

snapshot_schedule = dg.ScheduleDefinition(
    name="snapshot_schedule", job=snapshot_job, cron_schedule="1 * * * *",
    execution_timezone="UTC", description="A snapshot at minute 1 of every hour.")
measurements_schedule = dg.build_schedule_from_partitioned_job(
    measurements_job, name="measurements_schedule", minute_of_hour=1,
    description="At minute 1, derive the hour that just ended.")


def resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "db": BillingDatabase(),
        "cf": CloudFoundryApi(api_url=dg.EnvVar("CF_API_URL"),
                              client_id=dg.EnvVar("CF_CLIENT_ID"),
                              client_secret=dg.EnvVar("CF_CLIENT_SECRET")),
        "clock": Clock(),
    }


defs = dg.Definitions(
    assets=[foundation_snapshot, hourly_measurements],
    jobs=[snapshot_job, measurements_job],
    schedules=[snapshot_schedule, measurements_schedule],
    resources=resources(),
)
