"""The SES counters: what each configuration set sent per UTC hour, read from CloudWatch.

The SES broker creates a configuration set per service instance, tagged with its Instance
GUID, and SES event publishing sends its metrics to CloudWatch under the dimension
``ses:configuration-set``. Each hour's value is the CloudWatch Sum over that hour: a delta by
construction, so a configuration set recreated (its series starting again from nothing) can
never produce a negative or a double count. An hour is read once it has settled
(``settle_minutes`` after its end: the landing at minute 1 reads the hour that just ended) and
again for ``lookback_hours`` so late datapoints land; the newest reading's sum is the hour's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from billing_dagster.aws.client import AwsApiError, AwsClients, tags_of
from billing_dagster.meters.aws import (
    AwsReading,
    AwsSample,
    MetricQuery,
    failed,
    hour_floor,
    instance_guid,
    metric_points,
)

DIMENSION = "ses:configuration-set"


class SesCounterMeter:
    """An SES counter metric, summed per hour per configuration set."""

    basis = "counted"

    def __init__(self, name: str, namespace: str, metric: str, *, lookback_hours: int = 6,
                 settle_minutes: int = 1) -> None:
        self.name = name
        self.namespace = namespace
        self.metric = metric
        self.lookback_hours = lookback_hours
        self.settle_minutes = settle_minutes

    def read(self, aws: AwsClients, now: datetime,
             known: Mapping[str, str | None]) -> AwsReading:
        end = hour_floor(now - timedelta(minutes=self.settle_minutes))
        start = end - timedelta(hours=self.lookback_hours)
        try:
            listed = configuration_sets(aws)
        except AwsApiError as exc:
            return failed(self.name, now, [], exc, "configuration sets not listed")
        guids = {name: instance_guid(tags) for name, tags in listed.items()}
        for name, guid in known.items():
            guids.setdefault(name, guid)  # deleted since: attributed as when last seen
        try:  # sets CloudWatch has sums of, e.g. one created and deleted between readings
            for page in aws.pages("cloudwatch", "list_metrics", "Metrics",
                                  Namespace=self.namespace, MetricName=self.metric):
                for metric in page:
                    for dimension in metric.get("Dimensions", []):
                        if dimension.get("Name") == DIMENSION and dimension.get("Value"):
                            guids.setdefault(dimension["Value"], None)
        except AwsApiError as exc:
            return failed(self.name, now, [], exc, "configuration sets with sums not listed")
        queries = [MetricQuery(name, self.namespace, self.metric, ((DIMENSION, name),))
                   for name in guids]
        try:
            points = metric_points(aws, queries, start=start, end=end, period=3600, stat="Sum")
        except AwsApiError as exc:
            return failed(self.name, now, [], exc, f"{self.metric} not read from CloudWatch")
        samples = [AwsSample(natural_id=name, name=name, instance_guid=guids[name], at=hour,
                             value=value, details={"listed": name in listed})
                   for name, by_hour in sorted(points.items())
                   for hour, value in sorted(by_hour.items()) if value > 0]
        settled = (start, end) if end > start else None
        return AwsReading(self.name, now, samples, complete=True, settled=settled)


def configuration_sets(aws: AwsClients) -> dict[str, dict[str, str]]:
    """Every configuration set of the account and region, with its tags."""
    identity = aws.call("sts", "get_caller_identity")
    partition, account = identity["Arn"].split(":")[1], identity["Account"]
    region = aws.settings.region
    names: list[str] = []
    token: str | None = None
    while True:
        page = aws.call("sesv2", "list_configuration_sets",
                        **({"NextToken": token} if token else {}))
        names.extend(page.get("ConfigurationSets", []))
        token = page.get("NextToken")
        if not token:
            break
    return {name: tags_of(aws.call(
                "sesv2", "list_tags_for_resource",
                ResourceArn=f"arn:{partition}:ses:{region}:{account}:configuration-set/{name}"
            ).get("Tags")) for name in names}

