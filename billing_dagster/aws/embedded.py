"""The embedded AWS: moto's server on loopback, a real HTTP endpoint speaking the AWS APIs the
meters call, for the demo, dev and tests (production reads AWS itself).

It starts empty; the CF simulator seeds it with the foundation's tagged resources
(simulator/aws.py). Its clock is the wall clock: samples carry their own timestamps, and
RDS/OpenSearch sizes are whatever was last set.

moto answers GetMetricData by scanning every datapoint it holds once per query and period, so a
month of a large simulated foundation (hundreds of buckets and SES configuration sets, a point
per hour each) made each hourly reading take minutes, and ListMetrics compares every datapoint
with every metric found so far. ``_index_cloudwatch`` gives moto's CloudWatch backend, in this
process, an index by metric (namespace, name, dimensions) and time: the same answers (moto's own
statistics over the same datapoints, its own pagination), without the scans.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import httpx
from moto.cloudwatch.models import CloudWatchBackend, Statistics
from moto.server import ThreadedMotoServer

from billing_dagster.aws.client import DEFAULT_REGION, AwsClients, AwsSettings
from billing_dagster.resources import AwsApi

log = logging.getLogger(__name__)
# moto's RDS keeps at most 1,000 automated snapshots unless told otherwise; a foundation of
# thousands of databases needs more
_RDS_SNAPSHOT_LIMIT = "1000000"
EMBEDDED_KEY, EMBEDDED_SECRET = "embedded", "embedded-secret"


class EmbeddedAws:
    """A moto server on 127.0.0.1 and an ephemeral port, and the settings that read it."""

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self.url = ""

    def start(self) -> EmbeddedAws:
        os.environ.setdefault("MOTO_RDS_SNAPSHOT_LIMIT", _RDS_SNAPSHOT_LIMIT)
        _index_cloudwatch()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        log.info("embedded AWS (moto) at %s", self.url)
        return self

    def settings(self, **overrides: object) -> AwsSettings:
        values: dict[str, object] = {"region": DEFAULT_REGION, "endpoint_url": self.url,
                                     "access_key_id": EMBEDDED_KEY,
                                     "secret_access_key": EMBEDDED_SECRET,
                                     **overrides}
        return AwsSettings(**values)  # type: ignore[arg-type]

    def clients(self, **overrides: object) -> AwsClients:
        return AwsClients(self.settings(**overrides))

    def resource(self) -> AwsApi:
        """The Dagster resource that reads this server."""
        return AwsApi(region=DEFAULT_REGION, endpoint_url=self.url, access_key_id=EMBEDDED_KEY,
                      secret_access_key=EMBEDDED_SECRET)

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and run workers) at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_REGION": DEFAULT_REGION,
                "AWS_ACCESS_KEY_ID": EMBEDDED_KEY, "AWS_SECRET_ACCESS_KEY": EMBEDDED_SECRET}

    def reset(self) -> None:
        """Forget every resource and datapoint (between tests)."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> EmbeddedAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- an index for moto's GetMetricData ---------------------------------------------------------

_MetricKey = tuple[str, str, frozenset[tuple[str | None, str | None]]]
_scanning_get_metric_data = CloudWatchBackend.get_metric_data
_scanning_list_metrics = CloudWatchBackend.list_metrics


class _MetricIndex:
    """Datapoints by metric, each metric's kept in timestamp order; fed from the backend's
    append-only lists of datapoints as they grow."""

    def __init__(self) -> None:
        self.seen = (0, 0)
        self.points: dict[_MetricKey, list[tuple[datetime, int, Any]]] = defaultdict(list)
        self._sequence = 0

    def update(self, backend: CloudWatchBackend) -> None:
        custom, published = len(backend.metric_data), len(backend.aws_metric_data)
        if (custom, published) == self.seen:
            return
        if custom < self.seen[0] or published < self.seen[1]:  # the backend was reset
            self.points.clear()
            self.seen = (0, 0)
        new = [*backend.metric_data[self.seen[0]:], *backend.aws_metric_data[self.seen[1]:]]
        for datum in new:
            key = (datum.namespace, datum.name,
                   frozenset((d.name, d.value) for d in datum.dimensions))
            self._sequence += 1
            bisect.insort(self.points[key], (datum.timestamp, self._sequence, datum))
        self.seen = (custom, published)


def _indexed_get_metric_data(self: CloudWatchBackend, queries: list[dict[str, Any]],
                             start_time: datetime, end_time: datetime,
                             scan_by: str = "TimestampAscending") -> list[dict[str, Any]]:
    if start_time.replace(microsecond=0) >= end_time.replace(microsecond=0) or \
            any("MetricStat" not in q for q in queries):
        # errors and metric math: moto's own way
        return _scanning_get_metric_data(self, queries, start_time, end_time, scan_by)
    start, end = start_time.replace(microsecond=0), end_time.replace(microsecond=0)
    index = _index_of(self)
    results = []
    for query in queries:
        stat_spec = query["MetricStat"]
        metric, stat, unit = stat_spec["Metric"], stat_spec["Stat"], stat_spec.get("Unit")
        key = (metric["Namespace"], metric["MetricName"],
               frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
        points = index.points.get(key, [])
        first = bisect.bisect_left(points, (start,))
        period = timedelta(seconds=int(stat_spec["Period"]))
        by_period: dict[int, list[Any]] = defaultdict(list)
        for timestamp, _, datum in points[first:]:
            if timestamp >= end:
                break
            if unit and datum.unit != unit:
                continue
            by_period[(timestamp - start) // period].append(datum)
        values, timestamps = [], []
        for n in sorted(by_period):
            stats = Statistics([stat], start + n * period)
            stats.metric_data = by_period[n]
            values.append(stats.get_statistics_for_type(stat))
            timestamps.append(stats.timestamp)
        if scan_by == "TimestampDescending":
            values.reverse()
            timestamps.reverse()
        if query.get("ReturnData", True):
            results.append({"id": query["Id"],
                            "label": query.get("Label") or f"{metric['MetricName']} {stat}",
                            "values": values, "timestamps": timestamps,
                            "status_code": "Complete"})
    return results


def _index_of(backend: CloudWatchBackend) -> _MetricIndex:
    index: _MetricIndex = backend.__dict__.setdefault("_billing_metric_index", _MetricIndex())
    index.update(backend)
    return index


def _indexed_list_metrics(self: CloudWatchBackend, next_token: str | None, namespace: str,
                          metric_name: str, dimensions: list[dict[str, str]]
                          ) -> tuple[str | None, list[Any]]:
    if next_token:  # a later page of a listing already made
        return _scanning_list_metrics(self, next_token, namespace, metric_name, dimensions)
    wanted = [(d["Name"], d.get("Value")) for d in dimensions or []]
    found = []
    for (ns, name, dims), points in _index_of(self).points.items():
        if (namespace and ns != namespace) or (metric_name and name != metric_name):
            continue
        if all(any(n == w_name and (w_value is None or v == w_value) for n, v in dims)
               for w_name, w_value in wanted):
            found.append(points[0][2])
    return self._get_paginated(found)


def _index_cloudwatch() -> None:
    CloudWatchBackend.get_metric_data = _indexed_get_metric_data  # type: ignore[method-assign]
    CloudWatchBackend.list_metrics = _indexed_list_metrics  # type: ignore[method-assign]
