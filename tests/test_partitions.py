"""Partitions a person can read: the code location's partitions start at the billing start
(configured, or a month before the first landing), and hours measured outside a Dagster run
are recorded as materializations with their own metadata."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from billing_dagster.definitions import code_location
from billing_dagster.partitions import RANGE_END, RANGE_START, hourly_keys_between
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.resources import BillingDatabase
from billing_dagster.settings import ConfigError, billing_start
from billing_dagster.usage.assets import hourly_measurements
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.recorded import MEASURED_BY, record_measured_hours
from tests.support import conninfo_as_url
from tests.test_events import H10, START, land_all, pick_app, quiet_simulator
from tests.test_measurements import app, land

NOW = datetime(2026, 12, 5, 9, tzinfo=UTC)
HOURLY = ("hourly_measurements", "priced_postings")


def first_keys(defs: dg.Definitions) -> dict[str, str | None]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): node.partitions_def.get_first_partition_key()
            for key in graph.get_all_asset_keys()
            if (node := graph.get(key)).partitions_def is not None}


@pytest.mark.parametrize(("env", "first_landing", "start"), [
    ({"BILLING_START": "2025-07-01"}, None, date(2025, 7, 1)),
    ({"BILLING_START": " 2025-07-15 "}, NOW, date(2025, 7, 15)),
    ({}, datetime(2025, 3, 10, 12, tzinfo=UTC), date(2025, 2, 1)),
    # New York's month: 2025-03-01 03:00 UTC is still February there
    ({}, datetime(2025, 3, 1, 3, tzinfo=UTC), date(2025, 1, 1)),
    ({}, datetime(2026, 1, 20, tzinfo=UTC), date(2025, 12, 1)),
    ({}, None, date(2026, 11, 1)),
])
def test_billing_start_is_configured_or_a_month_before_the_first_landing(env, first_landing,
                                                                        start):
    assert billing_start(env, first_landing, NOW) == start


def test_a_billing_start_that_is_not_a_date_names_the_variable():
    with pytest.raises(ConfigError, match="BILLING_START='July' is not a date: set it to the "
                                          "first day billing covers, as YYYY-MM-DD"):
        billing_start({"BILLING_START": "July"}, None, NOW)


def test_the_code_location_starts_its_partitions_at_the_billing_start(monkeypatch):
    monkeypatch.setenv("BILLING_START", "2026-11-01")
    defs = code_location()
    assert first_keys(defs) == {"hourly_measurements": "2026-11-01-00:00",
                                "priced_postings": "2026-11-01-00:00",
                                "ledger_entries": "2026-11", "monthly_statements": "2026-11"}
    dg.Definitions.validate_loadable(defs)
    metering = defs.resolve_job_def("metering_job")
    assert metering.partitions_def is not None
    assert metering.partitions_def.get_first_partition_key() == "2026-11-01-00:00"
    assert {s.name for s in defs.get_repository_def().schedule_defs} == {
        "landing_schedule", "ledger_schedule"}


def test_without_a_billing_start_the_partitions_begin_a_month_before_the_first_landing(
        monkeypatch, conn, db_url):
    monkeypatch.delenv("BILLING_START", raising=False)
    monkeypatch.setenv("DATABASE_URL", conninfo_as_url(db_url))
    land(conn, datetime(2025, 4, 2, 14, 1, tzinfo=UTC), apps=[app("a", 64)])
    assert first_keys(code_location())["hourly_measurements"] == "2025-03-01-00:00"


def test_hours_measured_outside_dagster_are_recorded_per_partition(conn):
    start = datetime(2025, 3, 3, 9, tzinfo=UTC)
    for minutes in (-59, 1, 61, 121):
        land(conn, start + timedelta(minutes=minutes), apps=[app("a", 512), app("b", 256)])
    derive_window(conn, start, start + timedelta(hours=3))
    with dg.instance_for_test() as instance:
        # four hours asked for, three measured: the fourth is not recorded
        recorded = record_measured_hours(instance, conn, start, start + timedelta(hours=4),
                                         "a-test", "a test, outside Dagster")
        assert recorded == 3
        for asset in HOURLY:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {
                "2025-03-03-04:00", "2025-03-03-05:00", "2025-03-03-06:00"}
        events = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("hourly_measurements"),
                                  asset_partitions=["2025-03-03-05:00"]), limit=1).records
        materialization = events[0].asset_materialization
        assert materialization is not None
        assert materialization.metadata["rows"] == dg.IntMetadataValue(2)
        assert materialization.metadata["hour_start_utc"] == dg.TextMetadataValue(
            "2025-03-03T10:00:00+00:00")
        assert materialization.metadata["measured"] == dg.TextMetadataValue(
            "a test, outside Dagster")
        assert materialization.tags == {MEASURED_BY: "a-test"}
        # each hour's hour_complete judges that materialization (snapshots alone: carried)
        infos = instance.event_log_storage.get_asset_check_partition_info(
            [dg.AssetCheckKey(dg.AssetKey("hourly_measurements"), "hour_complete")])
        assert sorted((i.partition_key, i.latest_execution_status.value, i.is_current)
                      for i in infos) == [(key, "FAILED", True) for key in (
                          "2025-03-03-04:00", "2025-03-03-05:00", "2025-03-03-06:00")]


def test_a_run_of_many_hours_gives_each_partition_its_own_hour_and_hour_complete_check(
        conn, db_url):
    """A single-run backfill of four hours: each hourly partition shows its own hour's rows
    and microcredits (not the run's), and its hour_complete check fails exactly where the
    landed data does not determine the hour (the hour before anything was landed)."""
    with quiet_simulator() as sim:
        land_all(conn, sim, START + timedelta(minutes=5))
        app_, _ = pick_app(sim, "STOPPED")
        sim.foundation.start_app(app_.guid, H10 + timedelta(minutes=20))
        for hour in (1, 2):
            land_all(conn, sim, H10 + timedelta(hours=hour, minutes=5))
    first, end = START - timedelta(hours=1), H10 + timedelta(hours=2)
    keys = hourly_keys_between(first, end)
    with dg.instance_for_test() as instance:
        assert dg.materialize([hourly_measurements, priced_postings], instance=instance,
                              resources={"db": BillingDatabase(url=db_url)},
                              tags={RANGE_START: keys[0], RANGE_END: keys[-1]}).success
        # as the UI's check partitions read them: each evaluation judges its partition's
        # newest materialization (else Dagster shows the partition as not evaluated)
        infos = instance.event_log_storage.get_asset_check_partition_info(
            [dg.AssetCheckKey(dg.AssetKey("hourly_measurements"), "hour_complete")])
        assert infos and all(i.is_current for i in infos), infos
        checks = {i.partition_key: i.latest_execution_status.value for i in infos}
        shown = {}
        for asset in HOURLY:
            for key in keys:
                (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
                materialization = record.asset_materialization
                assert materialization is not None
                shown[asset, key] = {k: v.value for k, v in materialization.metadata.items()}
    hours = [first + timedelta(hours=n) for n in range(len(keys))]
    for key, hour in zip(keys, hours, strict=True):
        rows, resources = conn.execute(
            "SELECT count(*), count(DISTINCT resource_id) FROM billing.hourly_measurement "
            "WHERE hour_start = %s", (hour,)).fetchone() or (0, 0)
        measured = shown["hourly_measurements", key]
        assert (measured["rows"], measured["resources"]) == (rows, resources)
        assert measured["hour_start_utc"] == hour.isoformat()
        assert measured["run_hours"] == 4 and measured["run_rows"] >= rows
        postings, microcredits = conn.execute(
            "SELECT count(*), coalesce(sum(amount_microcredits), 0) FROM billing.hourly_posting "
            "WHERE hour_start = %s", (hour,)).fetchone() or (0, 0)
        priced = shown["priced_postings", key]
        assert (priced["rows"], priced["microcredits_exact"]) == (postings, str(microcredits))
        flagged = conn.execute("SELECT count(*) FROM billing.hour_coverage WHERE hour_start = %s "
                               "AND status <> 'complete'", (hour,)).fetchone()
        assert checks[key] == ("SUCCEEDED" if flagged == (0,) else "FAILED"), (key, measured)
        assert measured["status"] == ("complete" if flagged == (0,) else measured["status"])
    assert checks[keys[0]] == "FAILED" and shown["hourly_measurements", keys[0]]["status"] \
        .startswith("flagged: cfapps gap")
    assert checks[keys[2]] == "SUCCEEDED" and shown["hourly_measurements", keys[2]]["rows"] > 0
    assert len({shown["hourly_measurements", k]["rows"] for k in keys}) > 1
