"""A loopback Cloud Foundry API v3 + UAA over a deterministic synthetic foundation.

For tests, the demo and benchmarks; production never uses it. ``Foundation`` is the pure model
(inventory, virtual clock, usage events); ``Simulator`` serves it over HTTP.
"""

from billing_dagster.simulator.foundation import Foundation, UnknownEventGuid
from billing_dagster.simulator.server import Simulator

__all__ = ["Foundation", "Simulator", "UnknownEventGuid"]
