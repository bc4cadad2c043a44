"""Jobs and schedules: what runs when."""

import dagster as dg

from billing_dagster.ledger.assets import ledger_entries, monthly_statements
from billing_dagster.partitions import hourly_partitions
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.usage.assets import foundation_snapshot, hourly_measurements, usage_events

landing_job = dg.define_asset_job(
    "landing_job", selection=[foundation_snapshot, usage_events],
    description="Land what Cloud Foundry says now: a snapshot and the new usage events.")
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

landing_schedule = dg.ScheduleDefinition(
    name="landing_schedule", job=landing_job, cron_schedule="1 * * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="At minute 1 of every hour (UTC): a snapshot and the new usage events. "
                "metering_after_landing_sensor then measures and prices the hour that ended.")
ledger_schedule = dg.build_schedule_from_partitioned_job(
    ledger_job, name="ledger_schedule", day_of_month=1, hour_of_day=6, minute_of_hour=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the 1st at 06:01 New York time, post the month that just ended.")


@dg.run_status_sensor(
    name="metering_after_landing_sensor", run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[landing_job], request_job=metering_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a landing run succeeds, measures and prices the last complete hour, so "
                "the hour is derived from everything landed up to its end.")
def metering_after_landing_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | None:
    key = hourly_partitions.get_last_partition_key()
    if key is None:
        return None
    return dg.RunRequest(run_key=f"metering-{key}", partition_key=key,
                         tags={"billing/after_landing_run": context.dagster_run.run_id})
