"""Meters: each reads one kind of usage from Cloud Foundry. Add a meter as one module here and
list it in ``METERS``; the landing, derivation and pricing code is shared."""

from billing_dagster.meters.base import Meter, MeterSnapshot, ObservedKind, ObservedResource
from billing_dagster.meters.cfapps import CfAppsMeter
from billing_dagster.meters.cfservices import CfServicesMeter

METERS: tuple[Meter, ...] = (CfAppsMeter(), CfServicesMeter())

__all__ = ["METERS", "Meter", "MeterSnapshot", "ObservedKind", "ObservedResource"]
