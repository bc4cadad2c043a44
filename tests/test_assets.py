"""End to end through Dagster: the simulator over HTTP, the assets, a real test database."""

from datetime import UTC, timedelta

import dagster as dg
import pytest

from billing_dagster.cf.client import RetryPolicy
from billing_dagster.partitions import hourly_keys_between
from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.usage.assets import foundation_snapshot, hourly_measurements
from tests.support import SIM_CLIENT, SIM_START

FAST_RETRY = RetryPolicy(max_attempts=2, backoff_seconds=0.01, max_wait_seconds=0.01)


@pytest.fixture
def resources(simulator, db_url):
    return {
        "db": BillingDatabase(url=db_url),
        "cf": CloudFoundryApi(api_url=simulator.url, client_id=SIM_CLIENT[0],
                              client_secret=SIM_CLIENT[1], max_attempts=FAST_RETRY.max_attempts,
                              backoff_seconds=0.01, max_wait_seconds=0.01),
        "clock": Clock(simulator_url=simulator.url),
    }


def snapshot(sim, resources, at) -> dg.ExecuteInProcessResult:
    sim.advance_to(at)
    return dg.materialize([foundation_snapshot], resources=resources)


def derive(resources, keys: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize([hourly_measurements], resources=resources, tags={
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1]})


def expected_app_memory(foundation) -> int:
    """MiB of every process of every STARTED app, straight from the simulator's state."""
    return sum(p.instances * p.memory_in_mb for p in foundation.processes.values()
               if foundation.apps[p.app_guid].state == "STARTED")


def test_a_snapshot_lands_the_foundation_as_it_is(simulator, resources, conn):
    result = snapshot(simulator, resources, SIM_START + timedelta(minutes=1))
    assert result.success
    metadata = result.asset_materializations_for_node("foundation_snapshot")[0].metadata
    assert metadata["readings"].value == {"cfapps": "complete", "cfservices": "complete"}
    running = conn.execute(
        "SELECT sum(o.rate) FROM billing.observation o JOIN billing.resource r "
        "ON r.id = o.resource_id WHERE r.meter = 'cfapps'").fetchone()
    assert running == (expected_app_memory(simulator.foundation),)
    names = conn.execute("SELECT count(*) FROM billing.cf_org WHERE NOT is_stub").fetchone()
    assert names == (len(simulator.foundation.organizations),)
    check = result.get_asset_check_evaluations()[0]
    assert check.passed


def test_a_failed_meter_is_partial_and_the_next_snapshot_completes_it(simulator, resources, conn):
    simulator.inject_fault("503", count=100, path_prefix="/v3/service_instances")
    first = snapshot(simulator, resources, SIM_START + timedelta(minutes=1))
    assert first.success  # cfapps landed; the run succeeds with a failing warn check
    check = first.get_asset_check_evaluations()[0]
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)
    simulator.clear_faults()
    second = snapshot(simulator, resources, SIM_START + timedelta(minutes=30))
    assert second.get_asset_check_evaluations()[0].passed
    readings = conn.execute("SELECT meter, status, resources > 0 FROM billing.reading "
                            "ORDER BY taken_at, meter").fetchall()
    assert readings == [("cfapps", "complete", True), ("cfservices", "failed", False),
                        ("cfapps", "complete", True), ("cfservices", "complete", True)]
    # hour 09: snapshots only (no usage events landed), so nothing is known at its start and
    # nothing proves what changed between the snapshots; cfservices' failed reading is counted
    derive(resources, hourly_keys_between(SIM_START, SIM_START + timedelta(hours=1)))
    coverage = conn.execute("SELECT meter, status, uncovered_seconds, incomplete_readings, "
                            "reason FROM billing.hour_coverage ORDER BY meter").fetchall()
    assert coverage == [("cfapps", "gap", 3600, 0, "no usage events landed"),
                        ("cfservices", "gap", 3600, 1, "no usage events landed")]


def test_every_meter_failing_fails_the_run_but_records_the_readings(simulator, resources, conn):
    simulator.inject_fault("503", count=1000, path_prefix="/v3/")
    result = dg.materialize([foundation_snapshot], resources=resources, raise_on_error=False)
    assert not result.success
    statuses = conn.execute("SELECT status FROM billing.reading").fetchall()
    assert sorted(statuses) == [("failed",), ("failed",)]


def test_a_range_backfill_in_one_run_equals_single_hour_runs(simulator, resources, conn):
    for hour in range(0, 7):
        assert snapshot(simulator, resources, SIM_START + timedelta(hours=hour, minutes=1)).success
    start = SIM_START + timedelta(hours=1)
    keys = hourly_keys_between(start, start + timedelta(hours=4))
    assert len(keys) == 4
    select = ("SELECT hour_start, resource_id, resource_kind_id, value "
              "FROM billing.hourly_measurement ORDER BY 1, 2, 3")
    ranged = derive(resources, keys)
    assert ranged.success
    assert len(ranged.get_asset_materialization_events()) == 4  # one per partition, one run
    one_run = conn.execute(select).fetchall()
    conn.execute("DELETE FROM billing.hourly_measurement")
    conn.commit()
    for key in keys:
        assert dg.materialize([hourly_measurements], resources=resources,
                              partition_key=key).success
    assert conn.execute(select).fetchall() == one_run
    # and every hour is exactly what the simulator's state integrates to
    hours = conn.execute("SELECT count(DISTINCT hour_start), min(hour_start) "
                         "FROM billing.hourly_measurement").fetchone()
    assert hours == (4, start.astimezone(UTC))


def test_refused_credentials_fail_the_snapshot_naming_the_variables_once(simulator, db_url):
    # Found by the fault campaign: the one refusal was repeated for the inventory and again
    # for each meter, and ran into the next sentence.
    wrong = {"db": BillingDatabase(url=db_url), "clock": Clock(simulator_url=simulator.url),
             "cf": CloudFoundryApi(api_url=simulator.url, client_id=SIM_CLIENT[0],
                                   client_secret="not-the-secret", max_attempts=1)}
    result = dg.materialize([foundation_snapshot], resources=wrong, raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    user_failure = failure.step_failure_data.user_failure_data
    description = (user_failure.description if user_failure else None) or ""
    assert description.count("check CF_CLIENT_ID and CF_CLIENT_SECRET") == 1, description
    assert "CF_CLIENT_SECRET. The failed readings are recorded" in description
