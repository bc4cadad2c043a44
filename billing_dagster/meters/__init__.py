"""Meters: each reads one kind of usage from Cloud Foundry (a snapshot reader and, optionally,
a usage-event stream). Add a meter as one module here and list it in ``METERS``; the landing,
derivation and pricing code is shared."""

from billing_dagster.meters.base import (
    EventStream,
    Meter,
    MeterSnapshot,
    ObservedKind,
    ObservedResource,
)
from billing_dagster.meters.cfapps import CfAppsMeter
from billing_dagster.meters.cfservices import CfServicesMeter

METERS: tuple[Meter, ...] = (CfAppsMeter(), CfServicesMeter())
STREAMS: tuple[EventStream, ...] = tuple(m.events for m in METERS if m.events is not None)

__all__ = ["METERS", "STREAMS", "CfAppsMeter", "CfServicesMeter", "EventStream", "Meter",
           "MeterSnapshot", "ObservedKind", "ObservedResource"]
