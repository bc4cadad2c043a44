"""Sensors: unknown kinds reported once (and to a webhook), and held usage charged exactly once
by the re-pricing runs a catalog load triggers."""

from datetime import UTC, date, datetime, timedelta
from typing import cast

import dagster as dg
import pytest
from psycopg.types.range import Range

from billing_dagster.jobs import hours_to_meter, metering_after_landing_sensor
from billing_dagster.ledger.assets import ledger_entries
from billing_dagster.meters import MeterSnapshot, ObservedResource
from billing_dagster.partitions import (
    contiguous,
    hourly_keys_between,
    hourly_partitions,
    monthly_partitions,
    utc_window,
)
from billing_dagster.pricing.assets import held_usage, priced_postings
from billing_dagster.pricing.sensors import (
    RANGE_END,
    RANGE_START,
    reposting_sensor,
    repricing_sensor,
    unknown_kinds_sensor,
)
from billing_dagster.resources import BillingDatabase
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import Inventory, Snapshot, land_snapshot
from tests.test_ledger import add_price, run_app

MARCH = monthly_partitions.time_window_for_partition_key("2025-03")
START, END = utc_window(MARCH)


@pytest.fixture
def held(conn, db_url):
    """Acme used app memory for 3 hours of March 2025 with no price in the catalog yet."""
    conn.execute("INSERT INTO billing.customer (id, name) VALUES ('acme', 'Acme')")
    conn.execute("INSERT INTO billing.org_ownership (org_guid, customer_id, valid_during) "
                 "VALUES ('org-1', 'acme', '(,)')")
    conn.commit()
    run_app(conn, "a", 2, START + timedelta(hours=5), START + timedelta(hours=8))
    derive_window(conn, START, END)
    resources = {"db": BillingDatabase(url=db_url)}
    keys = hourly_keys_between(START, END)
    assert dg.materialize([priced_postings], resources=resources, tags={
        RANGE_START: keys[0], RANGE_END: keys[-1]}).success
    return resources


def load_price(conn, microcredits: int, valid_from: datetime) -> None:
    """What a catalog load that adds a price writes (the loader's contract)."""
    valid = Range(valid_from, None, "[)")
    conn.execute("INSERT INTO billing.price (resource_kind_id, microcredits_per_unit, unit, "
                 "valid_during) SELECT id, %s, 3600, %s FROM billing.resource_kind "
                 "WHERE natural_id = 'app-memory'", (microcredits, valid))
    conn.execute("INSERT INTO billing.catalog_load (source, checksum, summary, changed_prices, "
                 "changed_orgs) VALUES ('test', 'x', '{}', tstzmultirange(%s), '{}')", (valid,))
    conn.commit()


def test_an_unknown_kind_is_reported_once_with_where_it_was_seen(conn, held):
    first = unknown_kinds_sensor(dg.build_sensor_context(resources=held))
    second = unknown_kinds_sensor(dg.build_sensor_context(resources=held))
    assert isinstance(first, dg.SensorResult) and first.skip_reason is not None
    message = first.skip_reason.skip_message or ""
    assert "cfapps:App memory (no price) used 3 hours" in message and "acme-org" in message
    assert isinstance(second, dg.SkipReason)
    review = conn.execute("SELECT reason, hours, resources, quantity "
                          "FROM billing.unknown_kind_review").fetchall()
    assert review == [("no price", 3, 3, 2 * 3 * 3600)]


def test_new_unknown_kinds_are_posted_to_the_alert_webhook(conn, held, webhook):
    unknown_kinds_sensor(dg.build_sensor_context(resources=held))
    assert [k["reason"] for k in webhook[0]["kinds"]] == ["no price"]


def test_a_price_added_later_gets_held_usage_charged_exactly_once(conn, held):
    month = date(2025, 3, 1)
    assert dg.materialize([ledger_entries], resources=held, partition_key="2025-03").success
    assert conn.execute("SELECT count(*) FROM billing.ledger_transaction").fetchone() == (0,)

    first = repricing_sensor(dg.build_sensor_context(resources=held))  # starts watching
    assert isinstance(first, dg.SensorResult) and first.cursor == "0"
    load_price(conn, 1_000_000, datetime(2025, 1, 1, tzinfo=UTC))
    tick = repricing_sensor(dg.build_sensor_context(resources=held, cursor=first.cursor))
    assert isinstance(tick, dg.SensorResult) and tick.cursor
    (request,) = tick.run_requests or []
    held_hours = hourly_keys_between(START + timedelta(hours=5), START + timedelta(hours=8))
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (held_hours[0],
                                                                     held_hours[-1])
    with dg.DagsterInstance.ephemeral() as instance:
        repriced = dg.materialize([priced_postings], resources=held, instance=instance,
                                  tags=request.tags)
        assert repriced.success
        run = instance.get_run_by_id(repriced.run_id)
        assert run is not None
        context = dg.build_run_status_sensor_context(
            sensor_name="reposting_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=repriced.get_run_success_event())
        (repost,) = cast(list[dg.RunRequest], list(reposting_sensor(context)))  # type: ignore[arg-type]
    assert repost.partition_key == "2025-03"
    for _ in range(2):  # the reposting, and a repeat of it, charge the usage once
        assert dg.materialize([ledger_entries], resources=held,
                              partition_key=repost.partition_key).success
    charged = conn.execute(
        "SELECT transaction_type, business_month, sum(amount_microcredits) / 2 "
        "FROM billing.ledger_transaction t JOIN billing.ledger_entry e "
        "ON e.transaction_id = t.id GROUP BY 1, 2").fetchall()
    assert charged == [("usage_post", month, 6_000_000)]
    again = repricing_sensor(dg.build_sensor_context(resources=held, cursor=tick.cursor))
    assert isinstance(again, dg.SkipReason)


def test_contiguous_hours_become_one_range_each():
    h = datetime(2025, 3, 3, tzinfo=UTC)
    hours = [h, h + timedelta(hours=1), h + timedelta(hours=2), h + timedelta(hours=5)]
    assert contiguous(hours) == [(h, h + timedelta(hours=3)),
                                 (h + timedelta(hours=5), h + timedelta(hours=6))]


NY_HOUR = datetime(2025, 5, 12, 10, tzinfo=UTC)  # 06:00 in New York


@pytest.mark.parametrize(("previous", "now", "first", "last"), [
    (None, NY_HOUR + timedelta(minutes=1), 9, 9),  # the first landing: the hour that ended
    (NY_HOUR - timedelta(minutes=59), NY_HOUR + timedelta(minutes=1), 9, 9),  # every hour
    (NY_HOUR - timedelta(hours=1, minutes=59), NY_HOUR + timedelta(minutes=1), 8, 9),
    (NY_HOUR - timedelta(hours=6, minutes=59), NY_HOUR + timedelta(minutes=1), 3, 9),
    (NY_HOUR + timedelta(minutes=1), NY_HOUR + timedelta(minutes=30), 9, 9),  # a manual one
    (NY_HOUR - timedelta(days=9), NY_HOUR + timedelta(minutes=1), 10 - 168, 9),  # capped
], ids=["first landing", "hourly", "one failed landing", "six failed", "manual", "long outage"])
def test_a_landing_meters_every_hour_since_the_previous_successful_one(previous, now, first,
                                                                        last):
    def key(hour_utc: int) -> str:
        start = datetime(2025, 5, 12, tzinfo=UTC) + timedelta(hours=hour_utc)
        return hourly_keys_between(start, start + timedelta(hours=1))[0]

    assert hours_to_meter(previous, now) == (key(first), key(last))


def test_the_metering_sensor_reads_the_landing_runs_of_the_instance():
    @dg.op
    def land() -> None:
        return None

    @dg.job(name="landing_job")
    def landing() -> None:
        land()

    with dg.instance_for_test() as instance:
        first = landing.execute_in_process(instance=instance)
        second = landing.execute_in_process(instance=instance)
        run = instance.get_run_by_id(second.run_id)
        assert first.success and run is not None
        context = dg.build_run_status_sensor_context(
            sensor_name="metering_after_landing_sensor", dagster_instance=instance,
            dagster_run=run, dagster_event=second.get_run_success_event())
        request = metering_after_landing_sensor(context)  # type: ignore[call-arg]
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == hourly_partitions.get_last_partition_key()
    assert request.tags["billing/after_landing_run"] == second.run_id


def held_now(resources) -> tuple[bool, dict]:
    result = dg.materialize([held_usage], resources=resources)
    (check,) = result.get_asset_check_evaluations()
    (materialization,) = result.asset_materializations_for_node("held_usage")
    return check.passed, {k: v.value for k, v in materialization.metadata.items()}


def test_held_usage_stays_listed_after_a_later_window_is_priced_until_the_gap_is_filled(
        conn, held):
    passed, metadata = held_now(held)
    assert not passed and metadata["held_rows"] == 1
    assert metadata["unknown_kinds"] == ["cfapps:App memory (no price)"]
    assert "| no price | cfapps | App memory | acme-org | 2025-03-01 10:00 | 2025-03-01 12:00 " \
           "| 3 | 3 | 21600 | - |" in str(metadata["held_usage"])
    # a later window with nothing held is priced: the window's check passes, the held usage
    # of the earlier hours is still listed
    later = hourly_keys_between(END - timedelta(hours=2), END)
    priced = dg.materialize([priced_postings], resources=held,
                            tags={RANGE_START: later[0], RANGE_END: later[-1]})
    assert all(c.passed for c in priced.get_asset_check_evaluations())
    assert held_now(held)[1]["held_rows"] == 1
    # the catalog fills the gap and the hours are priced again: nothing is held
    load_price(conn, 1_000_000, datetime(2025, 1, 1, tzinfo=UTC))
    keys = hourly_keys_between(START, END)
    assert dg.materialize([priced_postings], resources=held,
                          tags={RANGE_START: keys[0], RANGE_END: keys[-1]}).success
    passed, metadata = held_now(held)
    assert passed and metadata["held_rows"] == 0 and metadata["unknown_kinds"] == []


def test_held_usage_metadata_lists_the_largest_rows_and_counts_the_rest(conn, db_url):
    """Sixty orgs with no customer: the metadata, kept in Dagster's event log for every
    materialization, lists the 50 largest and counts the rest; the view lists them all."""
    orgs = [(f"org-{n:02}", f"lost-{n:02}") for n in range(60)]
    inventory = Inventory(orgs=orgs, spaces=[(f"space-{n:02}", guid, "dev")
                                             for n, (guid, _) in enumerate(orgs)])
    at, until = START + timedelta(hours=1), START + timedelta(hours=2)
    for when, scale in ((at, 1), (until, 0)):  # org n's app runs one hour at n+1 MiB
        land_snapshot(conn, Snapshot(when, inventory, [MeterSnapshot("cfapps", [
            ObservedResource(f"app-{n:02}", f"app-{n:02}", f"space-{n:02}", "app-memory",
                             (n + 1) * scale) for n in range(60)], [], complete=False)]))
    derive_window(conn, START, END)
    add_price(conn, 1_000_000, 3600, START)  # priced: held only for want of a customer
    resources = {"db": BillingDatabase(url=db_url)}
    priced = dg.materialize([priced_postings], resources=resources,
                            partition_key=hourly_partitions.get_partition_key_for_timestamp(
                                at.timestamp()))
    (check,) = priced.get_asset_check_evaluations()
    assert not check.passed and check.metadata["held_rows"].value == 60
    window_table = str(check.metadata["held_usage"].value)
    orgs_listed = cast(list, check.metadata["orgs_without_customer"].value)
    assert orgs_listed[:2] == ["lost-00", "lost-01"] and orgs_listed[-1] == "... and 10 more"
    assert len(orgs_listed) == 51
    passed, metadata = held_now(resources)
    assert not passed and metadata["held_rows"] == 60
    for table in (window_table, str(metadata["held_usage"])):
        rows = [line for line in table.splitlines() if line.startswith("| no customer")]
        # the largest first: lost-59 (60 MiB) down to lost-10 (11 MiB); the ten smallest are
        # counted, not listed
        assert [row.split(" | ")[3] for row in rows] == [f"lost-{n:02}"
                                                          for n in range(59, 9, -1)]
        assert "10 more rows (10 resource-hours) are not shown" in table
    assert conn.execute("SELECT count(*), sum(quantity) FROM billing.held_usage").fetchone() \
        == (60, sum((n + 1) * 3600 for n in range(60)))
