"""The code location loads the way the webserver and daemon load it."""

import dagster as dg

from billing_dagster.definitions import defs


def test_definitions_validate_as_a_code_location():
    dg.Definitions.validate_loadable(defs)


def test_schedules_land_at_minute_one_and_post_months_on_the_first_at_0601_new_york():
    repository = defs.get_repository_def()
    landing = repository.get_schedule_def("landing_schedule")
    ledger = repository.get_schedule_def("ledger_schedule")
    assert (landing.cron_schedule, landing.execution_timezone) == ("1 * * * *", "UTC")
    assert landing.job_name == "landing_job"
    assert (ledger.cron_schedule, ledger.execution_timezone) == ("1 6 1 * *", "America/New_York")
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in (landing, ledger))


def test_sensors_run_by_default():
    repository = defs.get_repository_def()
    names = {"catalog_file_sensor", "metering_after_landing_sensor", "unknown_kinds_sensor",
             "repricing_sensor", "reposting_sensor", "runway_alerts_sensor", "billing_automation"}
    sensors = {s.name: s for s in repository.sensor_defs}
    assert names <= set(sensors)
    assert all(sensors[n].default_status == dg.DefaultSensorStatus.RUNNING for n in names)


def test_hourly_assets_backfill_a_range_in_one_run():
    assets = {a.key.to_user_string(): a for a in defs.assets or []
              if isinstance(a, dg.AssetsDefinition)}
    for name in ("hourly_measurements", "priced_postings"):
        assert assets[name].backfill_policy == dg.BackfillPolicy.single_run()
