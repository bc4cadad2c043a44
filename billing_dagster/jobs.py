"""Jobs and schedules: what runs when."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from billing_dagster.ledger.assets import ledger_entries, monthly_statements
from billing_dagster.partitions import (
    RANGE_END,
    RANGE_START,
    hourly_keys_between,
)
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.usage.assets import (
    aws_readings,
    foundation_snapshot,
    hourly_measurements,
    usage_events,
)

# The tag of a metering run that measures hours again after data changed them landed late
# (remeasure_sensor): the newest reading that changed them.
REMEASURED = "billing/remeasured_after_reading"

landing_job = dg.define_asset_job(
    "landing_job", selection=[foundation_snapshot, usage_events, aws_readings],
    # run monitoring (dagster.yaml) fails a landing that outlives this: a dead one must not
    # hold a queue slot for ever. billing/queue: dagster.scale-out.yaml runs one landing at a
    # time (a second at once reads the same CF events and AWS metrics again and lands nothing
    # new: safe, but a task and API calls wasted).
    tags={"dagster/max_runtime": 1800, "billing/queue": "landing"},
    description="Land what Cloud Foundry says now (a snapshot and the new usage events), then "
                "what AWS says of the metered services.")
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
    description="At minute 1 of every hour (UTC): a snapshot, the new usage events and the "
                "AWS readings. "
                "metering_after_landing_sensor then measures and prices the hour that ended.")
ledger_schedule = dg.build_schedule_from_partitioned_job(
    ledger_job, name="ledger_schedule", day_of_month=1, hour_of_day=6, minute_of_hour=1,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="On the 1st at 06:01 New York time, post the month that just ended.")


# After a failed landing the hours it left are metered by the next landing that succeeds, up to
# a week of them in one run; an outage longer than that needs a backfill of the older hours.
CATCH_UP_HOURS = 7 * 24


def hours_to_meter(previous_landing: datetime | None, now: datetime) -> tuple[str, str]:
    """The first and last hourly partition to meter after a landing that succeeded at ``now``:
    every hour that ended since the previous successful landing (``previous_landing``; None
    when this is the first), at most ``CATCH_UP_HOURS`` of them, the last complete one last."""
    this_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = this_hour - timedelta(hours=1)
    if previous_landing is not None:
        since = previous_landing.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        first = min(first, max(since, this_hour - timedelta(hours=CATCH_UP_HOURS)))
    keys = hourly_keys_between(first, this_hour)
    return keys[0], keys[-1]


@dg.run_status_sensor(
    name="metering_after_landing_sensor", run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[landing_job], request_job=metering_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a landing run succeeds, measures and prices the last complete hour, so "
                "the hour is derived from everything landed up to its end; after failed "
                "landings, every hour since the previous successful one, as one run.")
def metering_after_landing_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | None:
    landing = context.dagster_run
    record = context.instance.get_run_record_by_id(landing.run_id)
    now = datetime.fromtimestamp((record and record.start_time) or time.time(), UTC)
    earlier = [r for r in context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=landing_job.name,
                              statuses=[dg.DagsterRunStatus.SUCCESS]), limit=5)
        if r.dagster_run.run_id != landing.run_id and (r.start_time or 0) < now.timestamp()]
    previous = (datetime.fromtimestamp(earlier[0].start_time, UTC)
                if earlier and earlier[0].start_time else None)
    first, last = hours_to_meter(previous, now)
    tags = {"billing/after_landing_run": landing.run_id}
    if first == last:
        return dg.RunRequest(run_key=f"metering-{last}", partition_key=last, tags=tags)
    context.log.info(f"the landings before {landing.run_id} left hours unmetered: metering "
                     f"{first} to {last} as one run")
    return dg.RunRequest(run_key=f"metering-{first}...{last}", tags={
        **tags, RANGE_START: first, RANGE_END: last})
