"""Jobs and schedules: what runs when."""

import dagster as dg

from billing_dagster.ledger.assets import ledger_entries, monthly_statements
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.usage.assets import foundation_snapshot, hourly_measurements

snapshot_job = dg.define_asset_job(
    "snapshot_job", selection=[foundation_snapshot],
    description="Read the foundation's current state and land it.")
metering_job = dg.define_asset_job(
    "metering_job", selection=[hourly_measurements, priced_postings],
    description="Derive an hour's measurements from landed observations and price them.")
repricing_job = dg.define_asset_job(
    "repricing_job", selection=[priced_postings],
    description="Price hours again after the catalog changed (requested by repricing_sensor).")
ledger_job = dg.define_asset_job(
    "ledger_job", selection=[ledger_entries, monthly_statements],
    description="Post a business month to the ledger and write its statements.")
catalog_job = dg.define_asset_job(
    "catalog_job", selection=["billing_catalog"],
    description="Validate the catalog files and load them.")

snapshot_schedule = dg.ScheduleDefinition(
    name="snapshot_schedule", job=snapshot_job, cron_schedule="1 * * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="A snapshot at minute 1 of every hour (UTC).")
metering_schedule = dg.build_schedule_from_partitioned_job(
    metering_job, name="metering_schedule", minute_of_hour=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At minute 1, measure and price the hour that just ended.")
ledger_schedule = dg.build_schedule_from_partitioned_job(
    ledger_job, name="ledger_schedule", day_of_month=1, hour_of_day=6, minute_of_hour=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the 1st at 06:01 New York time, post the month that just ended.")
