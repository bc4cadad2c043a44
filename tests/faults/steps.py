"""The operator-visible steps of billing, as the assets run them, each from plain arguments.

A step is what one Dagster step does: a landing (the snapshot and the new usage events of both
streams), a reading of every AWS meter (the ``aws_readings`` asset), the derivation of an hour
range's measurements, their pricing, or the posting of a business month. The campaign runs them
in this process (the fault-free run, the recoveries) and in a worker process it can kill
(``tests.faults.worker``); both go through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from billing_dagster.aws.client import AwsClients, AwsSettings
from billing_dagster.aws.embedded import EMBEDDED_KEY, EMBEDDED_SECRET
from billing_dagster.cf.client import CloudFoundryClient, RetryPolicy
from billing_dagster.database import connect
from billing_dagster.ledger.posting import post_month
from billing_dagster.meters import AWS_METERS, METERS, STREAMS
from billing_dagster.partitions import monthly_partitions, utc_window
from billing_dagster.pricing.postings import price_window
from billing_dagster.usage.aws import read_and_land
from billing_dagster.usage.events import land_events
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

CLIENT = ("billing", "billing-secret")
# Quick retries: the campaign's faults are short, and a test must not sleep for minutes.
RETRY = RetryPolicy(max_attempts=4, backoff_seconds=0.05, max_wait_seconds=1.0)


@dataclass(frozen=True)
class Step:
    """One step: ``kind`` is land, aws, derive, price or post; the other fields its
    arguments."""

    kind: str
    now: datetime | None = None  # land, aws: the instant CF or AWS is read at
    start: datetime | None = None  # derive, price: the hour range
    end: datetime | None = None
    month: date | None = None  # post: the business month
    per_page: int = 7
    timeout_seconds: float = 2.0

    def label(self) -> str:
        if self.kind == "land":
            assert self.now is not None
            return f"landing at {self.now:%H:%M}"
        if self.kind == "aws":
            assert self.now is not None
            return f"AWS reading at {self.now:%H:%M}"
        if self.kind in ("derive", "price"):
            assert self.start is not None and self.end is not None
            return f"{self.kind} {self.start:%H:00}-{self.end:%H:00}"
        return f"posting {self.month:%Y-%m}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "per_page": self.per_page,
                "timeout_seconds": self.timeout_seconds,
                **{k: getattr(self, k).isoformat() for k in ("now", "start", "end", "month")
                   if getattr(self, k) is not None}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        moments = {k: datetime.fromisoformat(d[k]) for k in ("now", "start", "end") if k in d}
        month = date.fromisoformat(d["month"]) if "month" in d else None
        return cls(d["kind"], month=month, per_page=d["per_page"],
                   timeout_seconds=d["timeout_seconds"], **moments)


def aws_clients(aws_url: str) -> AwsClients:
    """boto3 clients of the embedded AWS (or a proxy in front of it) at ``aws_url``, retrying
    as production does (the standard mode, six attempts)."""
    return AwsClients(AwsSettings(endpoint_url=aws_url, access_key_id=EMBEDDED_KEY,
                                  secret_access_key=EMBEDDED_SECRET))


def run_step(step: Step, database_url: str, cf_url: str, aws_url: str) -> None:
    """Do the step as its Dagster run would: every write in the project's own transactions."""
    with connect(database_url) as conn:
        if step.kind == "land":
            assert step.now is not None
            with CloudFoundryClient(cf_url, *CLIENT, per_page=step.per_page, retry=RETRY,
                                    timeout_seconds=step.timeout_seconds) as client:
                land_snapshot(conn, take_snapshot(client, METERS, step.now))
                for stream in STREAMS:
                    land_events(conn, client, stream, step.now)
        elif step.kind == "aws":
            assert step.now is not None
            read_and_land(conn, aws_clients(aws_url), AWS_METERS, step.now)
        elif step.kind == "derive":
            assert step.start is not None and step.end is not None
            derive_window(conn, step.start, step.end)
        elif step.kind == "price":
            assert step.start is not None and step.end is not None
            price_window(conn, step.start, step.end)
        elif step.kind == "post":
            assert step.month is not None
            post_month(conn, step.month, *utc_window(
                monthly_partitions.time_window_for_partition_key(f"{step.month:%Y-%m}")))
        else:
            raise ValueError(f"unknown step kind {step.kind!r}")
