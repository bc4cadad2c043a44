"""The Dagster code location: every asset, check, job, schedule, sensor and resource."""

import dagster as dg

from billing_dagster.catalog.assets import billing_catalog, catalog_file_sensor
from billing_dagster.jobs import (
    catalog_job,
    landing_job,
    landing_schedule,
    ledger_job,
    ledger_schedule,
    metering_after_landing_sensor,
    metering_job,
    repricing_job,
)
from billing_dagster.ledger.assets import customer_balances, ledger_entries, monthly_statements
from billing_dagster.ledger.runway import customer_runway, runway_alerts_sensor
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.pricing.sensors import (
    reposting_sensor,
    repricing_sensor,
    unknown_kinds_sensor,
)
from billing_dagster.resources import AwsApi, BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.usage.assets import (
    aws_readings,
    foundation_snapshot,
    hourly_measurements,
    usage_events,
)

# customer_balances follows the ledger, customer_runway the metering runs and the ledger, by
# themselves; Dagster's default automation sensor starts stopped, so this one is declared running.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "billing_automation", target=dg.AssetSelection.assets(customer_balances, customer_runway),
    default_status=dg.DefaultSensorStatus.RUNNING)


def resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "db": BillingDatabase(),
        "cf": CloudFoundryApi(api_url=dg.EnvVar("CF_API_URL"),
                              client_id=dg.EnvVar("CF_CLIENT_ID"),
                              client_secret=dg.EnvVar("CF_CLIENT_SECRET")),
        "aws": AwsApi(),
        "clock": Clock(),
    }


defs = dg.Definitions(
    assets=[billing_catalog, foundation_snapshot, usage_events, aws_readings, hourly_measurements,
            priced_postings,
            ledger_entries, customer_balances, monthly_statements, customer_runway],
    jobs=[landing_job, metering_job, repricing_job, ledger_job, catalog_job],
    schedules=[landing_schedule, ledger_schedule],
    sensors=[catalog_file_sensor, metering_after_landing_sensor, unknown_kinds_sensor,
             repricing_sensor, reposting_sensor, runway_alerts_sensor, automation_sensor],
    resources=resources(),
)
