"""Measuring hours again when data that changes them lands after they were measured.

An hour is measured at minute 1 of the next hour, from what was landed by then. Some of what
determines it can land later: usage events CF committed late, the rest of an hour's events after
a landing outage, an S3 day's sample that AWS publishes hours after the day began (or corrects
later), a CloudWatch sum that grows after its hour settled. ``remeasure_sensor`` finds those
hours (sql/queries/remeasure.sql) and runs ``metering_job`` over them again, one run per
contiguous range; ``reposting_sensor`` then posts the difference of any month already posted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.jobs import REMEASURED, metering_job
from billing_dagster.partitions import RANGE_END, RANGE_START, contiguous, hourly_keys_between
from billing_dagster.resources import BillingDatabase, Clock
from billing_dagster.sql import query

# Readings landed this recently are examined again at every tick, whatever the cursor says: a
# landing that commits after a later one (two at once) has a smaller id than the cursor.
RECHECK = timedelta(hours=2)


@dg.sensor(name="remeasure_sensor", minimum_interval_seconds=120, job=metering_job,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Measures and prices again every hour that data landed after its "
                       "measurement changes (late usage events, an S3 day's sample published "
                       "later, a CloudWatch sum that grew), flagged hours included, one run "
                       "per contiguous range.")
def remeasure_sensor(context: dg.SensorEvaluationContext, db: BillingDatabase,
                     clock: Clock) -> dg.SensorResult | dg.SkipReason:
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        newest = cur.execute(query("newest_reading")).fetchone()
        newest_id = newest["id"] if newest else 0
        after_id = int(context.cursor) if context.cursor else newest_id
        stale = cur.execute(query("hours_to_remeasure"), {
            "after_id": after_id, "recheck_since": clock.now() - RECHECK}).fetchall()
    if not stale:
        return dg.SensorResult(cursor=str(newest_id), skip_reason=dg.SkipReason(
            f"no hour changed by readings after {after_id} (or landed in the last "
            f"{RECHECK})"))
    requests = remeasure_requests([(r["hour_start"], r["reading_id"]) for r in stale])
    context.log.info(f"{len(stale)} measured hours changed by data landed since: measuring "
                     f"them again in {len(requests)} runs")
    return dg.SensorResult(run_requests=requests, cursor=str(newest_id))


def remeasure_requests(stale: list[tuple[datetime, int]]) -> list[dg.RunRequest]:
    """One metering run per contiguous range of stale hours (UTC hour start, the newest
    reading that made it stale); the run key names the range and the newest of those readings,
    so a range is measured again once per reading that changed it, never twice for one."""
    newest = dict(stale)
    requests = []
    for start, end in contiguous(sorted(newest)):
        keys = hourly_keys_between(start, end)
        reading_id = max(r for hour, r in newest.items() if start <= hour < end)
        tags = {REMEASURED: str(reading_id)}
        if len(keys) == 1:
            requests.append(dg.RunRequest(run_key=f"remeasure-{keys[0]}-{reading_id}",
                                          partition_key=keys[0], tags=tags))
        else:
            requests.append(dg.RunRequest(
                run_key=f"remeasure-{keys[0]}...{keys[-1]}-{reading_id}",
                tags={**tags, RANGE_START: keys[0], RANGE_END: keys[-1]}))
    return requests
