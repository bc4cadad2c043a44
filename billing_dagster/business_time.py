"""The business time zone. Every stored instant is UTC; business months (the ledger's, the
statements', the monthly partitions of Dagster and of the fact tables) and agreements' days are
America/New_York. Kept apart from billing_dagster.partitions so that modules which must not
import Dagster (the database helpers) name the same zone."""

from zoneinfo import ZoneInfo

BUSINESS_TIMEZONE = "America/New_York"
BUSINESS_TIME = ZoneInfo(BUSINESS_TIMEZONE)
