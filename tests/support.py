"""Helpers shared by the tests (fixtures live in conftest.py)."""

import socket
from datetime import UTC, datetime

from billing_dagster.cf.client import CloudFoundryClient, RetryPolicy
from billing_dagster.simulator import Simulator

SIM_START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SIM_CLIENT = ("billing", "billing-secret")


def cf_client(sim: Simulator, **options) -> CloudFoundryClient:
    """A client of the simulator that retries fast (tests measure behaviour, not waiting)."""
    options.setdefault("retry", RetryPolicy(max_attempts=3, backoff_seconds=0.01,
                                            max_wait_seconds=0.05))
    return CloudFoundryClient(sim.url, *SIM_CLIENT, **options)


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
