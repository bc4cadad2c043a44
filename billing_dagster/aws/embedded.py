"""The embedded AWS: moto's server on loopback, a real HTTP endpoint speaking the AWS APIs the
meters call, for the demo, dev and tests (production reads AWS itself).

It starts empty; the CF simulator seeds it with the foundation's tagged resources
(simulator/aws.py). Its clock is the wall clock: samples carry their own timestamps, and
RDS/OpenSearch sizes are whatever was last set.
"""

from __future__ import annotations

import logging
import os

import httpx
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
