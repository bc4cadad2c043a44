"""Meter ``ses_sends``: messages sent per configuration set per hour (``AWS/SES Send``, which
SES event publishing puts in CloudWatch per configuration set).

cloud.gov charges 1 credit per 150,000 sends. See ses.py for how the hours are read.
"""

from billing_dagster.meters.ses import SesCounterMeter


def ses_sends_meter(lookback_hours: int = 6, settle_minutes: int = 1) -> SesCounterMeter:
    return SesCounterMeter("ses_sends", "AWS/SES", "Send", lookback_hours=lookback_hours,
                           settle_minutes=settle_minutes)
