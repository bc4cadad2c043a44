"""What an AWS meter returns, and the CloudWatch reading that S3 and SES meters share.

An AWS meter reads one kind of usage of the foundation's AWS account: a gauge (GiB allocated,
bytes stored) or a counter (sends, attachment bytes). Each sample names its AWS resource and
the CF service instance the broker tagged it with (``Instance GUID``); the landing attributes it
(sql/queries/aws.sql), so a meter never needs the database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from billing_dagster.aws.client import AwsApiError, AwsClients

log = logging.getLogger(__name__)

INSTANCE_TAG = "Instance GUID"
CF_TAGS = {"Organization GUID": "org_guid", "Space GUID": "space_guid",
           "Service offering name": "offering", "Service plan name": "plan"}
CLOUDWATCH_BATCH = 500  # metric queries per GetMetricData request (AWS's limit)


@dataclass(frozen=True)
class AwsSample:
    """A gauge's value from ``at`` on (GiB, bytes), or a counter's sum for the UTC hour that
    starts at ``at``."""

    natural_id: str  # the DB instance or domain ARN, the bucket or configuration set name
    name: str | None
    instance_guid: str | None  # the Instance GUID tag, None when the resource has none
    at: datetime
    value: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AwsListed:
    """A resource a reading listed, with its tags, but holds no sample of (a bucket made since
    S3's last daily sample). Landed as a resource, so that a sample published after the
    resource is gone is still charged by the tags it had while listed."""

    natural_id: str
    name: str | None
    instance_guid: str | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AwsReading:
    """One meter's reading. ``complete``: every resource was read, so a resource missing from
    it is gone (sampled gauges). ``settled``: the span whose samples are final (daily gauges:
    whole UTC days whose samples AWS has published; counters: the hours read after they
    settled)."""

    meter: str
    taken_at: datetime
    samples: list[AwsSample]
    complete: bool
    settled: tuple[datetime, datetime] | None = None
    error: str | None = None
    listed: list[AwsListed] = field(default_factory=list)  # listed, not sampled

    @property
    def status(self) -> str:
        if self.complete:
            return "complete"
        return "partial" if self.samples else "failed"

    @property
    def resources(self) -> int:
        return len({s.natural_id for s in self.samples} | {r.natural_id for r in self.listed})


class AwsMeter(Protocol):
    name: str
    basis: str  # sampled, daily or counted (billing.meter.basis)

    def read(self, aws: AwsClients, now: datetime,
             known: Mapping[str, str | None]) -> AwsReading:
        """Read the meter at ``now``. ``known``: resources it has seen lately (natural id ->
        Instance GUID), which a CloudWatch reading asks about too (a deleted bucket still has
        samples). A failure returns what was read with complete=False and the error."""
        ...


def cf_details(tags: dict[str, str]) -> dict[str, str]:
    """The CF identifiers the brokers tag resources with, under short names."""
    return {short: tags[tag] for tag, short in CF_TAGS.items() if tags.get(tag)}


def instance_guid(tags: dict[str, str]) -> str | None:
    guid = (tags.get(INSTANCE_TAG) or "").strip().lower()
    return guid or None


@dataclass(frozen=True)
class MetricQuery:
    """One CloudWatch series: namespace, metric, dimensions; ``key`` says whose it is."""

    key: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]


def metric_points(aws: AwsClients, queries: Sequence[MetricQuery], *, start: datetime,
                  end: datetime, period: int, stat: str) -> dict[str, dict[datetime, int]]:
    """Each query's datapoints in [start, end), by period start, as whole numbers (CloudWatch
    returns doubles; counts and bytes are integral, and a fraction is rounded half-even)."""
    found: dict[str, dict[datetime, int]] = {q.key: {} for q in queries}
    for batch_start in range(0, len(queries), CLOUDWATCH_BATCH):
        batch = queries[batch_start:batch_start + CLOUDWATCH_BATCH]
        by_id = {f"q{i}": q for i, q in enumerate(batch)}
        requests = [{
            "Id": query_id,
            "MetricStat": {"Metric": {"Namespace": q.namespace, "MetricName": q.metric,
                                      "Dimensions": [{"Name": n, "Value": v}
                                                     for n, v in q.dimensions]},
                           "Period": period, "Stat": stat},
            "ReturnData": True} for query_id, q in by_id.items()]
        token: str | None = None
        while True:
            params: dict[str, Any] = {"MetricDataQueries": requests, "StartTime": start,
                                      "EndTime": end, "ScanBy": "TimestampAscending"}
            if token:
                params["NextToken"] = token
            page = aws.call("cloudwatch", "get_metric_data", **params)
            for result in page.get("MetricDataResults", []):
                points = found[by_id[result["Id"]].key]
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []),
                                        strict=True):
                    slot = _period_start(stamp.astimezone(UTC), period)
                    if start <= slot < end:
                        points[slot] = points.get(slot, 0) + round(value)
            token = page.get("NextToken")
            if not token:
                break
    return found


def _period_start(moment: datetime, period: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % period, UTC)


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_floor(moment: datetime) -> datetime:
    return hour_floor(moment).replace(hour=0)


def failed(meter: str, taken_at: datetime, samples: list[AwsSample], exc: AwsApiError,
           what: str) -> AwsReading:
    """A reading that stopped at an AWS error: what was read is kept, as partial."""
    error = f"{what}: {exc}"
    log.warning("%s: %s", meter, error)
    return AwsReading(meter, taken_at, samples, complete=False, error=error)


ONE_DAY = timedelta(days=1)
