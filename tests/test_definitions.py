"""The code location loads the way the webserver and daemon load it."""

import dagster as dg

from billing_dagster.definitions import defs


def test_definitions_validate_as_a_code_location():
    dg.Definitions.validate_loadable(defs)


def test_schedules_run_at_minute_one():
    snapshot = defs.get_schedule_def("snapshot_schedule")
    measurements = defs.get_schedule_def("measurements_schedule")
    assert (snapshot.cron_schedule, snapshot.execution_timezone) == ("1 * * * *", "UTC")
    assert measurements.cron_schedule == "1 * * * *"
    assert measurements.job_name == "measurements_job"


def test_the_hourly_asset_backfills_a_range_in_one_run():
    spec = defs.resolve_assets_def("hourly_measurements")
    assert spec.backfill_policy == dg.BackfillPolicy.single_run()
