"""Meter ``rds_storage``: GiB of storage allocated to each RDS instance, a sampled gauge.

DescribeDBInstances lists every instance with its tags; ``AllocatedStorage`` (GiB) is what the
customer reserved and what cloud.gov charges for (1 credit per 100 GB per month). AWS keeps no
history of it that moto or a read-only role can read back, so each reading's value holds until
the next reading (hourly): a resize is billed from the first reading that sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from billing_dagster.aws.client import AwsApiError, AwsClients, tags_of
from billing_dagster.meters.aws import AwsReading, AwsSample, cf_details, failed, instance_guid


class RdsStorageMeter:
    name = "rds_storage"
    basis = "sampled"

    def read(self, aws: AwsClients, now: datetime, known: Mapping[str, str | None]) -> AwsReading:
        samples: list[AwsSample] = []
        try:
            for page in aws.pages("rds", "describe_db_instances", "DBInstances"):
                for db in page:
                    tags = tags_of(db.get("TagList"))
                    samples.append(AwsSample(
                        natural_id=db["DBInstanceArn"], name=db.get("DBInstanceIdentifier"),
                        instance_guid=instance_guid(tags), at=now,
                        value=int(db["AllocatedStorage"]),
                        details={"engine": db.get("Engine"), "class": db.get("DBInstanceClass"),
                                 "storage_type": db.get("StorageType"), **cf_details(tags)}))
        except AwsApiError as exc:
            return failed(self.name, now, samples, exc, "DB instances not all listed")
        return AwsReading(self.name, now, samples, complete=True)
