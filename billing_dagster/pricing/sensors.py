"""Sensors of the pricing domain: unknown resource kinds, and re-pricing after catalog loads."""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from psycopg.rows import dict_row

from billing_dagster.alerts import alert_webhook_url, post_alert
from billing_dagster.jobs import REMEASURED, ledger_job, metering_job, repricing_job
from billing_dagster.partitions import (
    PARTITION,
    RANGE_END,
    RANGE_START,
    contiguous,
    hourly_keys_between,
    hourly_partitions,
    monthly_partitions,
)
from billing_dagster.resources import BillingDatabase
from billing_dagster.sql import query


@dg.sensor(name="unknown_kinds_sensor", minimum_interval_seconds=300,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reports each resource kind that usage was priced against without a name "
                       "or a price, once; records it in billing.unknown_kind_review and posts "
                       "it to BILLING_ALERT_WEBHOOK_URL when set.")
def unknown_kinds_sensor(context: dg.SensorEvaluationContext,
                         db: BillingDatabase) -> dg.SensorResult | dg.SkipReason:
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        new = cur.execute(query("record_unknown_kinds")).fetchall()
        conn.commit()
    if not new:
        return dg.SkipReason("no new unknown resource kinds")
    report = [_describe(kind) for kind in new]
    for line in report:
        context.log.warning(f"unknown resource kind: {line}")
    webhook = alert_webhook_url()
    if webhook:
        post_alert(webhook, {"text": "billing-dagster: new unknown resource kinds",
                             "kinds": [{k: str(v) for k, v in kind.items()} for kind in new]})
    return dg.SensorResult(
        skip_reason=f"{len(new)} new unknown resource kind(s): " + "; ".join(report),
        asset_events=[dg.AssetObservation(
            asset_key="priced_postings",
            metadata={"new_unknown_kinds": dg.MetadataValue.json(
                [{k: str(v) for k, v in kind.items()} for kind in new])})],
    )


def _describe(kind: dict[str, Any]) -> str:
    name = kind["name"] or kind["natural_id"]
    return (f"{kind['meter']}:{name} ({kind['reason']}) used {kind['hours']} hours from "
            f"{kind['first_hour']:%Y-%m-%d %H:00} UTC by {', '.join(kind['orgs'] or [])}")


@dg.sensor(name="repricing_sensor", minimum_interval_seconds=60, job=repricing_job,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="After each catalog load, re-prices the hours whose price or customer it "
                       "changed (held usage included), one run per contiguous range.")
def repricing_sensor(context: dg.SensorEvaluationContext,
                     db: BillingDatabase) -> dg.SensorResult | dg.SkipReason:
    with db.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        if context.cursor is None:
            # First tick: loads made before the sensor ran were followed by the pricing runs of
            # their time (make run, or a deployment's first runs); start from the newest.
            latest = cur.execute(query("latest_catalog_load")).fetchone()
            start_at = str(latest["id"]) if latest and latest["id"] is not None else "0"
            return dg.SensorResult(cursor=start_at, skip_reason=dg.SkipReason(
                f"watching catalog loads after load {start_at}"))
        after = int(context.cursor)
        loads = cur.execute(query("catalog_loads_after"), {"after_id": after}).fetchall()
        if not loads:
            return dg.SkipReason("no catalog load since the last re-pricing")
        up_to = loads[-1]["id"]
        hours = [r["hour_start"] for r in cur.execute(
            query("hours_to_reprice"), {"after_id": after, "up_to_id": up_to})]
    requests = [
        dg.RunRequest(run_key=f"catalog-{up_to}-{keys[0]}", tags={
            RANGE_START: keys[0], RANGE_END: keys[-1], "billing/catalog_load": str(up_to)})
        for keys in (hourly_keys_between(start, end) for start, end in contiguous(hours))
    ]
    context.log.info(f"catalog loads {after + 1}..{up_to}: {len(hours)} hours to re-price in "
                     f"{len(requests)} runs")
    return dg.SensorResult(run_requests=requests, cursor=str(up_to))


@dg.run_status_sensor(name="reposting_sensor", run_status=dg.DagsterRunStatus.SUCCESS,
                      monitored_jobs=[repricing_job, metering_job],
                      request_job=ledger_job, default_status=dg.DefaultSensorStatus.RUNNING,
                      description="When a re-pricing run, or a metering run that measured hours "
                                  "again after late data (remeasure_sensor), succeeds, posts the "
                                  "months it touched again (only the difference is posted).")
def reposting_sensor(context: dg.RunStatusSensorContext) -> Iterator[dg.RunRequest]:
    run = context.dagster_run
    if run.job_name == metering_job.name and REMEASURED not in run.tags:
        return  # the hourly metering: its month is posted by the monthly schedule
    window = run_window(run.tags)
    if window is None:
        return
    for month in months_of_range(*window):
        yield dg.RunRequest(run_key=f"{run.run_id}-{month}", partition_key=month,
                            tags={"billing/repriced_by": run.run_id})


def run_window(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """The first and last hourly partition a run covered (a range or one partition)."""
    if RANGE_START in tags:
        return tags[RANGE_START], tags[RANGE_END]
    key = tags.get(PARTITION)
    return (key, key) if key else None


def months_of_range(first_key: str, last_key: str) -> list[str]:
    """Keys of the business months, among those that have ended, that overlap a range of
    hourly partitions."""
    start = hourly_partitions.time_window_for_partition_key(first_key).start
    end = hourly_partitions.time_window_for_partition_key(last_key).end
    months = []
    for key in monthly_partitions.get_partition_keys():
        window = monthly_partitions.time_window_for_partition_key(key)
        if window.end > start and window.start < end:
            months.append(key)
    return months
