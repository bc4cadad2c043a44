"""The code location loads the way the webserver and daemon load it."""

import dagster as dg

from billing_dagster.definitions import defs


def test_definitions_validate_as_a_code_location():
    dg.Definitions.validate_loadable(defs)


def test_schedules_run_at_minute_one():
    repository = defs.get_repository_def()
    snapshot = repository.get_schedule_def("snapshot_schedule")
    measurements = repository.get_schedule_def("measurements_schedule")
    assert (snapshot.cron_schedule, snapshot.execution_timezone) == ("1 * * * *", "UTC")
    assert measurements.cron_schedule == "1 * * * *"
    assert measurements.job_name == "measurements_job"


def test_the_hourly_asset_backfills_a_range_in_one_run():
    assets = {a.key.to_user_string(): a for a in defs.assets or []}
    assert assets["hourly_measurements"].backfill_policy == dg.BackfillPolicy.single_run()
