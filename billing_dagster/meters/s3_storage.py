"""Meter ``s3_storage``: bytes stored in each S3 bucket, as AWS samples them once a day.

S3 publishes ``AWS/S3 BucketSizeBytes`` to CloudWatch once a day per bucket and storage type,
stamped 00:00 UTC, a day or so late. The day's sample (summed over storage types) holds for
every hour of that day, in byte-seconds: carried by design, complete once the day's samples are
published. A reading re-reads the last few days (``lookback_days``) so late samples land, and
also asks about buckets seen lately that are no longer listed: a deleted bucket's last samples
still count, and a day with no sample for a bucket counts 0 from that day on. A listed bucket
with no sample yet is remembered with its tags (``AwsListed``): S3 samples a bucket at 00:00 and
publishes the sample hours later, so a bucket made on one day and deleted early the next has
its one sample published after the last listing, and is charged by the tags read while it was
listed (never as untagged). cloud.gov charges
1 credit per 400 GB stored per month.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from billing_dagster.aws.client import AwsApiError, AwsClients, error_code, tags_of
from billing_dagster.meters.aws import (
    ONE_DAY,
    AwsListed,
    AwsReading,
    AwsSample,
    MetricQuery,
    cf_details,
    day_floor,
    failed,
    instance_guid,
    metric_points,
)

STORAGE_TYPES = ("StandardStorage", "StandardIAStorage", "OneZoneIAStorage",
                 "IntelligentTieringFAStorage", "IntelligentTieringIAStorage",
                 "GlacierInstantRetrievalStorage")
DAY_SECONDS = 86_400


class S3StorageMeter:
    name = "s3_storage"
    basis = "daily"

    def __init__(self, lookback_days: int = 3,
                 storage_types: tuple[str, ...] = STORAGE_TYPES) -> None:
        self.lookback_days = lookback_days
        self.storage_types = storage_types

    def read(self, aws: AwsClients, now: datetime,
             known: Mapping[str, str | None]) -> AwsReading:
        start = day_floor(now) - timedelta(days=self.lookback_days)
        listed: dict[str, dict[str, str]] = {}
        try:
            for page in aws.pages("s3", "list_buckets", "Buckets"):  # past 10,000, in pages
                for bucket in page:
                    listed[bucket["Name"]] = _bucket_tags(aws, bucket["Name"])
        except AwsApiError as exc:
            return failed(self.name, now, [], exc, "buckets not all listed")
        guids = {name: instance_guid(tags) for name, tags in listed.items()}
        for name, guid in known.items():
            guids.setdefault(name, guid)  # no longer listed: attributed as when last seen
        try:
            for page in aws.pages("cloudwatch", "list_metrics", "Metrics", Namespace="AWS/S3",
                                  MetricName="BucketSizeBytes"):
                for metric in page:
                    dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
                    if dimensions.get("BucketName"):
                        guids.setdefault(dimensions["BucketName"], None)
        except AwsApiError as exc:
            return failed(self.name, now, [], exc, "buckets with sizes not listed")
        queries = [MetricQuery(f"{bucket}\t{storage}", "AWS/S3", "BucketSizeBytes",
                               (("BucketName", bucket), ("StorageType", storage)))
                   for bucket in guids for storage in self.storage_types]
        try:
            points = metric_points(aws, queries, start=start, end=now, period=DAY_SECONDS,
                                   stat="Maximum")
        except AwsApiError as exc:
            return failed(self.name, now, [], exc, "bucket sizes not read from CloudWatch")
        per_day: dict[tuple[str, datetime], int] = {}
        for key, by_day in points.items():
            bucket = key.split("\t", 1)[0]
            for day, size in by_day.items():
                per_day[bucket, day] = per_day.get((bucket, day), 0) + size
        details = {bucket: {"listed": bucket in listed, **cf_details(listed.get(bucket, {}))}
                   for bucket in guids}
        samples = [AwsSample(natural_id=bucket, name=bucket, instance_guid=guids[bucket],
                             at=day, value=size, details=details[bucket])
                   for (bucket, day), size in sorted(per_day.items())]
        sampled = {bucket for bucket, _ in per_day}
        unsampled = [AwsListed(natural_id=bucket, name=bucket, instance_guid=guids[bucket],
                               details=details[bucket])
                     for bucket in sorted(listed) if bucket not in sampled]
        newest = max((day for _, day in per_day), default=None)
        settled = (start, newest + ONE_DAY) if newest is not None else None
        return AwsReading(self.name, now, samples, complete=True, settled=settled,
                          listed=unsampled)


def _bucket_tags(aws: AwsClients, bucket: str) -> dict[str, str]:
    try:
        return tags_of(aws.call("s3", "get_bucket_tagging", Bucket=bucket).get("TagSet"))
    except AwsApiError as exc:
        if error_code(exc) == "NoSuchTagSet":  # a bucket without tags: kept, flagged
            return {}
        raise
