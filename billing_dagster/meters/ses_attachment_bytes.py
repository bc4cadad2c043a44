"""Meter ``ses_attachment_bytes``: bytes of attachments sent per configuration set per hour.

SES publishes no attachment metric of its own, so this one is read from a metric the
deployment publishes next to SES's (``AttachmentBytes`` in the namespace ``cloud.gov/SES``,
dimension ``ses:configuration-set``, one datapoint per message with its attachments' bytes),
for example from the configuration set's event destination. cloud.gov charges 1 credit per
120 GB of attachments. See ses.py for how the hours are read.
"""

from billing_dagster.meters.ses import SesCounterMeter

NAMESPACE = "cloud.gov/SES"
METRIC = "AttachmentBytes"


def ses_attachment_bytes_meter(lookback_hours: int = 6,
                               settle_minutes: int = 1) -> SesCounterMeter:
    return SesCounterMeter("ses_attachment_bytes", NAMESPACE, METRIC,
                           lookback_hours=lookback_hours, settle_minutes=settle_minutes)
