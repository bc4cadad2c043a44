"""Meter ``opensearch_storage``: GiB of EBS storage of each OpenSearch domain, a sampled gauge.

A domain's storage is its EBS volume size times its data nodes (ClusterConfig.InstanceCount);
that is what cloud.gov charges for (1 credit per 100 GB reserved per month). Tags come from
ListTags per domain (DescribeDomains does not carry them). Like RDS storage, each reading's
value holds until the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from billing_dagster.aws.client import AwsApiError, AwsClients, tags_of
from billing_dagster.meters.aws import AwsReading, AwsSample, cf_details, failed, instance_guid

DESCRIBE_BATCH = 5  # domains per DescribeDomains request (AWS's limit)


class OpenSearchStorageMeter:
    name = "opensearch_storage"
    basis = "sampled"

    def read(self, aws: AwsClients, now: datetime, known: Mapping[str, str | None]) -> AwsReading:
        samples: list[AwsSample] = []
        try:
            names = [d["DomainName"] for d in
                     aws.call("opensearch", "list_domain_names").get("DomainNames", [])]
            for i in range(0, len(names), DESCRIBE_BATCH):
                described = aws.call("opensearch", "describe_domains",
                                     DomainNames=names[i:i + DESCRIBE_BATCH])
                for domain in described.get("DomainStatusList", []):
                    if domain.get("Deleted"):
                        continue
                    ebs = domain.get("EBSOptions") or {}
                    nodes = int((domain.get("ClusterConfig") or {}).get("InstanceCount") or 1)
                    size = int(ebs.get("VolumeSize") or 0) if ebs.get("EBSEnabled") else 0
                    tags = tags_of(aws.call("opensearch", "list_tags",
                                            ARN=domain["ARN"]).get("TagList"))
                    samples.append(AwsSample(
                        natural_id=domain["ARN"], name=domain.get("DomainName"),
                        instance_guid=instance_guid(tags), at=now, value=size * nodes,
                        details={"volume_gib": size, "data_nodes": nodes,
                                 "volume_type": ebs.get("VolumeType"), **cf_details(tags)}))
        except AwsApiError as exc:
            return failed(self.name, now, samples, exc, "domains not all read")
        return AwsReading(self.name, now, samples, complete=True)
