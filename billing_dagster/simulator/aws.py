"""The simulated foundation's AWS side: the resources the brokers made for its service
instances, kept in moto's server as virtual time passes, and what they truly used.

Each managed instance of ``aws-rds``, ``aws-elasticsearch``, ``s3`` and ``aws-ses`` has an AWS
resource tagged with its ``Instance GUID`` (and org and space): a DB instance, a domain, a
bucket, a configuration set. What each does over time is a pure function of its guid and its
lifetime in the foundation's true history (``Foundation.instance_lifetimes``):

- storage sizes change at scripted instants (a DB grows, a domain grows or shrinks, a bucket
  changes every six hours, is emptied now and then); a resource is created when its instance
  is, and deleted with it, except the buckets the broker keeps (one in five) after the
  instance is deleted;
- S3's daily samples (size at 00:00 UTC, if the bucket exists then) are published to
  CloudWatch ``PUBLISH_DELAY`` after the day starts, as AWS publishes them late;
- SES sends and attachment bytes per hour are published as datapoints inside the hour.

Two buckets belong to no instance: one untagged, one tagged with a guid CF never had.

``sync(now)`` brings moto to the state at ``now`` (called after each advance of the
foundation); ``true_usage`` is the oracle: it computes from the same scripted timelines,
never from moto or the project's database, what each resource-hour should bill.
"""

from __future__ import annotations

import hashlib
import logging
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from billing_dagster.aws.client import AwsClients
from billing_dagster.simulator.foundation import Foundation
from billing_dagster.simulator.oracle import HOUR, TrueUsage

log = logging.getLogger(__name__)

DAY = 86_400
GIB = 1 << 30
ACCOUNT = "123456789012"  # moto's default account
REGION = "us-gov-west-1"
PUBLISH_DELAY = 6 * HOUR  # S3's daily sample of day D appears in CloudWatch at D 06:00
KEEP_BUCKET_ONE_IN = 5  # buckets the broker keeps after their instance is deleted
UNTAGGED_BUCKET, STRANGER_BUCKET = "cg-orphan-untagged", "cg-orphan-stranger"
STRANGER_GUID = "0badc0de-5eed-4bad-8bad-00000000dead"
OFFERING_METERS = {"aws-rds": ("rds_storage",), "aws-elasticsearch": ("opensearch_storage",),
                   "s3": ("s3_storage",), "aws-ses": ("ses_sends", "ses_attachment_bytes")}
SES_DIMENSION = "ses:configuration-set"


def _number(*parts: object) -> int:
    """A deterministic 64-bit number from ``parts``."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


@dataclass
class _Resource:
    """One AWS resource and its scripted truth: sizes over time (gauges) while it exists."""

    kind: str  # rds, opensearch, s3, ses
    guid: str | None  # its Instance GUID tag (None: untagged)
    space_guid: str | None
    org_guid: str | None
    created: int
    deleted: int | None
    instance_gone: int | None = None  # when its CF instance was deleted
    times: list[int] = field(default_factory=list)  # size changes (gauges)
    sizes: list[int] = field(default_factory=list)
    nodes: int = 1  # OpenSearch data nodes

    @property
    def name(self) -> str:
        if self.kind == "opensearch":
            return "cg" + (self.guid or "").replace("-", "")[:25]
        return f"cg-{self.guid}"

    def exists_at(self, t: int) -> bool:
        return self.created <= t and (self.deleted is None or t < self.deleted)

    def size_at(self, t: int) -> int:
        """The gauge at second ``t`` (0 when the resource does not exist then)."""
        if not self.exists_at(t):
            return 0
        return self.sizes[bisect_right(self.times, t) - 1]


def _script_sizes(resource: _Resource, until: int) -> None:
    """Scripted sizes from creation to ``until`` (GiB for storage, bytes for buckets)."""
    seed = _number(resource.guid, resource.kind)
    at = resource.created
    if resource.kind == "rds":
        size, step = 20 * (1 + seed % 25), DAY * (2 + seed % 5) + seed % HOUR
    elif resource.kind == "opensearch":
        size, step = 10 * (1 + seed % 10), DAY * (3 + seed % 4) + seed % HOUR
        resource.nodes = 1 + seed % 3
    elif resource.kind == "s3":
        size, step = (1 + seed % 400) * GIB // 4, 6 * HOUR
    else:
        return
    n = 0
    while at < until:
        resource.times.append(at)
        resource.sizes.append(size)
        n += 1
        roll = _number(seed, n)
        at += step
        if resource.kind == "rds":
            size += 10 * (1 + roll % 5)  # RDS storage only grows
        elif resource.kind == "opensearch":
            size = max(10, size + 10 * (roll % 5) - 20)
        elif roll % 40 == 0:
            size = 0  # emptied
        else:
            size = max(0, size + (roll % 2001 - 600) * GIB // 1000)


@dataclass(frozen=True)
class SesHour:
    sends: int
    attachment_bytes: int


def _ses_hour(guid: str, hour: int) -> SesHour:
    roll = _number(guid, "ses", hour)
    sends = 0 if roll % 3 == 0 else roll % 2000
    return SesHour(sends, sends * (_number(roll) % 50_000))


class AwsFoundation:
    """The AWS resources of ``foundation``'s instances, mirrored into moto (``clients``)."""

    def __init__(self, foundation: Foundation, clients: AwsClients) -> None:
        self.foundation = foundation
        self.clients = clients
        self.resources: dict[str, _Resource] = {}  # by name
        self._in_moto: dict[str, tuple[int, int]] = {}  # name -> (size, nodes) as last set
        self._published_days: set[tuple[str, int]] = set()
        self._published_hours: set[tuple[str, int]] = set()
        self._horizon = 0
        start = int(foundation.start.timestamp())
        for name, guid in ((UNTAGGED_BUCKET, None), (STRANGER_BUCKET, STRANGER_GUID)):
            self.resources[name] = _Resource("s3", guid, None, None, start - 7 * DAY, None)
        offerings = {o.guid: o.name for o in foundation.service_offerings.values()}
        self._offering_of_plan = {p.guid: offerings[p.offering_guid]
                                  for p in foundation.service_plans.values()}
        self.follow(foundation.now)
        foundation.after_advance.append(self.follow)

    # -- the truth -------------------------------------------------------------------------

    def _refresh(self, now: int) -> None:
        """Learn instances created since the last call and deletions, and script sizes a
        week ahead of ``now``."""
        horizon = now + 7 * DAY
        kinds = {"aws-rds": "rds", "aws-elasticsearch": "opensearch", "s3": "s3",
                 "aws-ses": "ses"}
        for guid, space, org, changes in self.foundation.instance_lifetimes():
            kind = kinds.get(self._offering_of_plan.get(changes[0][2], ""))
            if kind is None:
                continue
            created = next((t for t, rate, _ in changes if rate > 0), None)
            if created is None:
                continue
            gone = next((t for t, rate, _ in changes if t > created and rate == 0), None)
            keep = kind == "s3" and _number(guid, "keep") % KEEP_BUCKET_ONE_IN == 0
            probe = _Resource(kind, guid, space, org, created, None if keep else gone, gone)
            resource = self.resources.setdefault(probe.name, probe)
            resource.deleted, resource.instance_gone = probe.deleted, gone
        for resource in self.resources.values():
            if not resource.times or resource.times[-1] < horizon:
                resource.times.clear()
                resource.sizes.clear()
                _script_sizes(resource, horizon + 7 * DAY)
        self._horizon = horizon

    def true_usage(self, start: datetime, end: datetime,
                   readings: Mapping[str, Sequence[datetime]],
                   cf_forgot_before: datetime | None = None) -> list[TrueUsage]:
        """What each AWS resource should bill in each UTC hour of [start, end).

        Storage of RDS and OpenSearch is sampled at the instants the project read AWS
        (``readings[meter]``, complete readings only): the true size at each reading holds
        until the next. S3 bills the true size at 00:00 UTC (AWS's daily sample) for each hour
        of that day. SES bills each hour's true sends and attachment bytes.

        Who is charged: the instance's space, unless nobody reading AWS and CF could know it.
        A resource that existed at no reading (deleted before any listed it: its tags were
        never read) is ``untagged``; one whose instance CF had forgotten before the project
        first read it (deleted before ``cf_forgot_before``: first landing minus CF's event
        retention) is ``unknown-instance``, as are the two orphan buckets' by construction.
        """
        t0, t1 = int(start.timestamp()), int(end.timestamp())
        forgot = int(cf_forgot_before.timestamp()) if cf_forgot_before else None
        self._refresh(t1)
        rows: list[TrueUsage] = []
        for name, r in self.resources.items():
            meters = {"rds": ("rds_storage",), "opensearch": ("opensearch_storage",),
                      "s3": ("s3_storage",), "ses": ("ses_sends", "ses_attachment_bytes")}
            instants = {m: [int(i.timestamp()) for i in readings.get(m, ())]
                        for m in meters[r.kind]}
            seen = any(r.exists_at(i) for m in instants for i in instants[m])
            space, org = r.space_guid, r.org_guid
            if r.guid is None or not seen:
                owner = "untagged"
            elif r.guid == STRANGER_GUID or (forgot is not None and r.instance_gone is not None
                                              and r.instance_gone < forgot):
                owner = "unknown-instance"
            else:
                owner = None
            if owner is not None:
                space = org = None
            values: dict[tuple[str, str], dict[int, int]] = {}
            if r.kind in ("rds", "opensearch"):
                meter = meters[r.kind][0]
                kind = "allocated-storage" if r.kind == "rds" else "ebs-storage"
                natural_id = (f"arn:aws-us-gov:rds:{REGION}:{ACCOUNT}:db:{name}"
                              if r.kind == "rds" else
                              f"arn:aws-us-gov:es:{REGION}:{ACCOUNT}:domain/{name}")
                held = [(i, r.size_at(i) * r.nodes) for i in instants[meter]]
                values[meter, owner or kind] = _hold(held, t0, t1)
            elif r.kind == "s3":
                natural_id = name
                per_hour = values["s3_storage", owner or "stored-bytes"] = {}
                for hour in range(t0, t1, HOUR):
                    day = hour - hour % DAY
                    per_hour[hour] = r.size_at(day) * HOUR if r.exists_at(day) else 0
            else:
                natural_id = name
                sends = values["ses_sends", owner or "sends"] = {}
                attachments = values["ses_attachment_bytes", owner or "attachment-bytes"] = {}
                for hour in range(t0, t1, HOUR):
                    if r.exists_at(hour) and r.exists_at(hour + HOUR - 1):
                        ses = _ses_hour(name, hour)
                        sends[hour], attachments[hour] = ses.sends, ses.attachment_bytes
            rows.extend(TrueUsage(hour, meter, natural_id, kind, value, space or "", org or "")
                        for (meter, kind), per_hour in values.items()
                        for hour, value in per_hour.items() if value > 0)
        rows.sort(key=lambda u: (u.hour_start, u.meter, u.resource, u.kind))
        return rows

    # -- moto ------------------------------------------------------------------------------

    def follow(self, now: datetime) -> None:
        """Make moto hold what AWS would at ``now``: resources created, resized and deleted,
        S3's published daily samples and SES's datapoints up to ``now``."""
        t = int(now.timestamp())
        self._refresh(t)
        for name, r in self.resources.items():
            present = r.exists_at(t)
            if r.kind == "s3":
                self._follow_bucket(name, r, t, present)
            elif r.kind == "ses":
                self._follow_configuration_set(name, r, t, present)
            else:
                self._follow_gauge(name, r, t, present)

    def _tags(self, r: _Resource) -> list[dict[str, str]]:
        if r.guid is None:
            return []
        tags = [{"Key": "Instance GUID", "Value": r.guid}]
        if r.space_guid:
            tags += [{"Key": "Space GUID", "Value": r.space_guid},
                     {"Key": "Organization GUID", "Value": r.org_guid or ""}]
        return tags

    def _follow_gauge(self, name: str, r: _Resource, t: int, present: bool) -> None:
        aws, known = self.clients, self._in_moto.get(name)
        size = r.size_at(t)
        if present and known is None:
            if r.kind == "rds":
                aws.call("rds", "create_db_instance", DBInstanceIdentifier=name,
                         DBInstanceClass="db.t3.micro", Engine="postgres", AllocatedStorage=size,
                         MasterUsername="broker", MasterUserPassword="simulated-password",
                         Tags=self._tags(r))
            else:
                aws.call("opensearch", "create_domain", DomainName=name,
                         ClusterConfig={"InstanceType": "m6g.large.search",
                                        "InstanceCount": r.nodes},
                         EBSOptions={"EBSEnabled": True, "VolumeType": "gp3",
                                     "VolumeSize": size}, TagList=self._tags(r))
            self._in_moto[name] = (size, r.nodes)
        elif present and known is not None and known[0] != size:
            if r.kind == "rds":
                aws.call("rds", "modify_db_instance", DBInstanceIdentifier=name,
                         AllocatedStorage=size, ApplyImmediately=True)
            else:
                aws.call("opensearch", "update_domain_config", DomainName=name,
                         EBSOptions={"EBSEnabled": True, "VolumeSize": size})
            self._in_moto[name] = (size, r.nodes)
        elif not present and known is not None:
            if r.kind == "rds":
                aws.call("rds", "delete_db_instance", DBInstanceIdentifier=name,
                         SkipFinalSnapshot=True)
            else:
                aws.call("opensearch", "delete_domain", DomainName=name)
            del self._in_moto[name]

    def _follow_bucket(self, name: str, r: _Resource, t: int, present: bool) -> None:
        aws = self.clients
        if present and name not in self._in_moto:
            aws.call("s3", "create_bucket", Bucket=name,
                     CreateBucketConfiguration={"LocationConstraint": REGION})
            if r.guid is not None:
                aws.call("s3", "put_bucket_tagging", Bucket=name,
                         Tagging={"TagSet": self._tags(r)})
            self._in_moto[name] = (0, 1)
        elif not present and name in self._in_moto:
            aws.call("s3", "delete_bucket", Bucket=name)
            del self._in_moto[name]
        first_day = max(r.created - r.created % DAY, t - 10 * DAY - t % DAY)
        data = []
        for day in range(first_day, t - PUBLISH_DELAY + 1, DAY):
            if (name, day) in self._published_days or not r.exists_at(day):
                continue
            self._published_days.add((name, day))
            data.append({"MetricName": "BucketSizeBytes", "Unit": "Bytes",
                         "Timestamp": datetime.fromtimestamp(day, UTC),
                         "Value": r.size_at(day),
                         "Dimensions": [{"Name": "BucketName", "Value": name},
                                        {"Name": "StorageType", "Value": "StandardStorage"}]})
        if data:
            aws.call("cloudwatch", "put_metric_data", Namespace="AWS/S3", MetricData=data)

    def _follow_configuration_set(self, name: str, r: _Resource, t: int,
                                  present: bool) -> None:
        aws = self.clients
        if present and name not in self._in_moto:
            aws.call("sesv2", "create_configuration_set", ConfigurationSetName=name,
                     Tags=self._tags(r))
            self._in_moto[name] = (0, 1)
        elif not present and name in self._in_moto:
            aws.call("sesv2", "delete_configuration_set", ConfigurationSetName=name)
            del self._in_moto[name]
        first_hour = max(r.created - r.created % HOUR, t - 2 * DAY - t % HOUR)
        sends, attachments = [], []
        for hour in range(first_hour, t - HOUR + 1, HOUR):
            if (name, hour) in self._published_hours:
                continue
            self._published_hours.add((name, hour))
            if not (r.exists_at(hour) and r.exists_at(hour + HOUR - 1)):
                continue
            ses = _ses_hour(name, hour)
            dimensions = [{"Name": SES_DIMENSION, "Value": name}]
            for first, at in ((True, 600), (False, 2400)):  # two datapoints in the hour
                stamp = datetime.fromtimestamp(hour + at, UTC)
                for metric, unit, total, into in (
                        ("Send", "Count", ses.sends, sends),
                        ("AttachmentBytes", "Bytes", ses.attachment_bytes, attachments)):
                    share = total // 4 if first else total - total // 4
                    if share:
                        into.append({"MetricName": metric, "Unit": unit, "Timestamp": stamp,
                                     "Value": share, "Dimensions": dimensions})
        for namespace, data in (("AWS/SES", sends), ("cloud.gov/SES", attachments)):
            for i in range(0, len(data), 500):
                aws.call("cloudwatch", "put_metric_data", Namespace=namespace,
                         MetricData=data[i:i + 500])


def _hold(samples: list[tuple[int, int]], t0: int, t1: int) -> dict[int, int]:
    """Unit-seconds per hour of [t0, t1) of values that hold from each sample's instant to the
    next one (nothing before the first)."""
    samples = sorted(samples)
    values: dict[int, int] = {}
    if not samples:
        return values
    for (at, value), nxt in zip(samples, [*samples[1:], (t1, 0)], strict=True):
        start, end = max(at, t0), min(nxt[0], t1)
        while start < end and value:
            hour = start - start % HOUR
            upto = min(end, hour + HOUR)
            values[hour] = values.get(hour, 0) + value * (upto - start)
            start = upto
    return values
