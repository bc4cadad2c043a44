"""Meters: each reads one kind of usage. Cloud Foundry meters (``METERS``) have a snapshot
reader and, optionally, a usage-event stream; AWS meters (``AWS_METERS``) read the metered
services' storage and sends. Add a meter as one module here and list it; the landing,
derivation and pricing code is shared."""

from billing_dagster.meters.aws import AwsMeter, AwsReading, AwsSample
from billing_dagster.meters.base import (
    EventStream,
    Meter,
    MeterSnapshot,
    ObservedKind,
    ObservedResource,
)
from billing_dagster.meters.cfapps import CfAppsMeter
from billing_dagster.meters.cfservices import CfServicesMeter
from billing_dagster.meters.opensearch_storage import OpenSearchStorageMeter
from billing_dagster.meters.rds_storage import RdsStorageMeter
from billing_dagster.meters.s3_storage import S3StorageMeter
from billing_dagster.meters.ses_attachment_bytes import ses_attachment_bytes_meter
from billing_dagster.meters.ses_sends import ses_sends_meter

METERS: tuple[Meter, ...] = (CfAppsMeter(), CfServicesMeter())
STREAMS: tuple[EventStream, ...] = tuple(m.events for m in METERS if m.events is not None)
AWS_METERS: tuple[AwsMeter, ...] = (RdsStorageMeter(), OpenSearchStorageMeter(),
                                    S3StorageMeter(), ses_sends_meter(),
                                    ses_attachment_bytes_meter())

__all__ = ["AWS_METERS", "METERS", "STREAMS", "AwsMeter", "AwsReading", "AwsSample",
           "CfAppsMeter", "CfServicesMeter", "EventStream", "Meter", "MeterSnapshot",
           "ObservedKind", "ObservedResource"]
