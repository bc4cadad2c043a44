"""Hourly derivation from landed observations, on real Postgres (no HTTP needed here: the
snapshots are built as the meters would return them and landed by the real landing code)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from billing_dagster.meters import MeterSnapshot, ObservedKind, ObservedResource
from billing_dagster.partitions import BUSINESS_TIMEZONE, hourly_partitions, utc_window
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import Inventory, Snapshot, land_snapshot

ORG, SPACE = "org-1", "space-1"
INVENTORY = Inventory(orgs=[(ORG, "agency-org")], spaces=[(SPACE, ORG, "prod")])
H10 = datetime(2025, 3, 3, 10, tzinfo=UTC)
NEW_YORK = ZoneInfo(BUSINESS_TIMEZONE)


def app(guid: str, mib: int, space: str | None = SPACE) -> ObservedResource:
    return ObservedResource(guid, f"{guid}/web", space, "app-memory", mib)


def service(guid: str, plan: str) -> ObservedResource:
    return ObservedResource(guid, guid, SPACE, plan, 1)


def land(conn, at: datetime, apps=(), services=(), *, apps_complete=True,
         services_complete=True, inventory=INVENTORY) -> None:
    kinds = [ObservedKind("plan-small", "aws-rds/micro-psql"),
             ObservedKind("plan-big", "aws-rds/medium-psql")]
    land_snapshot(conn, Snapshot(at, inventory, [
        MeterSnapshot("cfapps", list(apps), [], complete=apps_complete,
                      error=None if apps_complete else "apps listing failed"),
        MeterSnapshot("cfservices", list(services), kinds, complete=services_complete),
    ]))


def measurements(conn, start: datetime, hours: int = 1) -> dict[tuple[str, str], int]:
    """(resource natural id, kind natural id) -> unit-seconds in [start, start + hours)."""
    rows = conn.execute(
        "SELECT r.natural_id, k.natural_id, sum(m.value) FROM billing.hourly_measurement m "
        "JOIN billing.resource r ON r.id = m.resource_id "
        "JOIN billing.resource_kind k ON k.id = m.resource_kind_id "
        "WHERE m.hour_start >= %s AND m.hour_start < %s GROUP BY 1, 2",
        (start, start + timedelta(hours=hours))).fetchall()
    return {(r, k): int(v) for r, k, v in rows}


def test_a_resource_running_all_hour_measures_its_rate_times_3600(conn):
    for minutes in (-59, 1):
        land(conn, H10 + timedelta(minutes=minutes), apps=[app("a", 512)],
             services=[service("s", "plan-small")])
    derived = derive_window(conn, H10, H10 + timedelta(hours=1))
    assert measurements(conn, H10) == {("a", "app-memory"): 512 * 3600,
                                       ("s", "plan-small"): 3600}
    assert {t.meter: t.unit_seconds for t in derived.totals} == {"cfapps": 512 * 3600,
                                                                 "cfservices": 3600}
    # two snapshots agree, but nothing proves that nothing changed between them: without
    # usage events the hour is carried from the snapshot, not called complete
    assert [(f.meter, f.status, f.basis, f.uncovered_seconds, f.reason)
            for f in derived.flagged] == [
        ("cfapps", "carried", "snapshot", 3600, "no usage events landed"),
        ("cfservices", "carried", "snapshot", 3600, "no usage events landed")]


def test_changes_inside_the_hour_split_it_at_the_observation(conn):
    land(conn, H10 - timedelta(minutes=30), apps=[app("a", 256)],
         services=[service("s", "plan-small")])
    # at 10:20 the app doubles its memory and the service moves to another plan
    land(conn, H10 + timedelta(minutes=20), apps=[app("a", 512)],
         services=[service("s", "plan-big")])
    # at 10:50 the app is gone from a complete listing: it stopped
    land(conn, H10 + timedelta(minutes=50), apps=[], services=[service("s", "plan-big")])
    derive_window(conn, H10, H10 + timedelta(hours=1))
    assert measurements(conn, H10) == {
        ("a", "app-memory"): 256 * 20 * 60 + 512 * 30 * 60,
        ("s", "plan-small"): 20 * 60,
        ("s", "plan-big"): 40 * 60,
    }


def test_an_hour_with_no_reading_before_it_is_a_gap_not_zero(conn):
    land(conn, H10 + timedelta(minutes=15), apps=[app("a", 100)])
    derived = derive_window(conn, H10 - timedelta(hours=1), H10 + timedelta(hours=1))
    by_hour = {(f.hour_start, f.meter): f for f in derived.flagged}
    nine = by_hour[(H10 - timedelta(hours=1), "cfapps")]
    ten = by_hour[(H10, "cfapps")]
    assert (nine.status, nine.uncovered_seconds) == ("gap", 3600)
    assert (ten.status, ten.uncovered_seconds, ten.basis) == ("gap", 3600, None)
    # what was observed is kept: 45 minutes of hour 10, nothing claimed for hour 9
    assert measurements(conn, H10 - timedelta(hours=1)) == {}
    assert measurements(conn, H10) == {("a", "app-memory"): 100 * 45 * 60}


def test_hours_known_only_from_an_older_snapshot_are_carried_however_recent_it_is(conn):
    land(conn, H10 - timedelta(hours=5), apps=[app("a", 64)], services=[])
    derived = derive_window(conn, H10 - timedelta(hours=3), H10 + timedelta(hours=1))
    statuses = {f.hour_start: (f.status, f.state_from) for f in derived.flagged
                if f.meter == "cfapps"}
    assert statuses == {H10 - timedelta(hours=n): ("carried", H10 - timedelta(hours=5))
                        for n in range(4)}
    assert measurements(conn, H10 - timedelta(hours=3), 4) == {("a", "app-memory"): 64 * 4 * 3600}


def test_an_app_in_an_unknown_space_is_kept_against_a_stub_and_flagged(conn):
    land(conn, H10 - timedelta(minutes=1), apps=[app("a", 128, space="space-nobody-listed")])
    derived = derive_window(conn, H10, H10 + timedelta(hours=1))
    assert measurements(conn, H10) == {("a", "app-memory"): 128 * 3600}
    stub = conn.execute("SELECT is_stub, org_guid FROM billing.cf_space WHERE guid = %s",
                        ("space-nobody-listed",)).fetchone()
    assert stub == (True, None)
    assert {t.meter: t.unattributed for t in derived.totals}["cfapps"] == 1


def test_an_unknown_plan_becomes_a_stub_kind_and_its_usage_is_kept(conn):
    land(conn, H10 - timedelta(minutes=1), services=[service("s", "plan-nobody-listed")])
    derived = derive_window(conn, H10, H10 + timedelta(hours=1))
    assert measurements(conn, H10) == {("s", "plan-nobody-listed"): 3600}
    assert {t.meter: t.unknown_kinds for t in derived.totals}["cfservices"] == 1


def test_a_partial_snapshot_keeps_what_it_read_and_the_next_one_completes_it(conn):
    land(conn, H10 - timedelta(hours=1), apps=[app("a", 100), app("b", 200)])
    # 10:10: the apps listing broke after app "a": partial, "b" must not be taken as stopped
    land(conn, H10 + timedelta(minutes=10), apps=[app("a", 100)], apps_complete=False)
    # 10:40: complete again, and now "b" really is gone
    land(conn, H10 + timedelta(minutes=40), apps=[app("a", 100)])
    derived = derive_window(conn, H10, H10 + timedelta(hours=1))
    assert measurements(conn, H10) == {("a", "app-memory"): 100 * 3600,
                                       ("b", "app-memory"): 200 * 40 * 60}
    flagged = [(f.meter, f.status, f.incomplete_readings) for f in derived.flagged]
    assert flagged == [("cfapps", "carried", 1), ("cfservices", "carried", 0)]
    statuses = conn.execute("SELECT status FROM billing.reading WHERE meter = 'cfapps' "
                            "ORDER BY taken_at").fetchall()
    assert [s for (s,) in statuses] == ["complete", "partial", "complete"]


def stored_per_reading(conn) -> list[int]:
    """How many observations each cfapps snapshot stored, in the order they were taken."""
    return [n for (n,) in conn.execute(
        "SELECT count(o.resource_id) FROM billing.reading rd "
        "LEFT JOIN billing.observation o ON o.reading_id = rd.id "
        "WHERE rd.meter = 'cfapps' GROUP BY rd.id, rd.taken_at ORDER BY rd.taken_at")]


def test_a_snapshot_stores_only_what_changed_and_measures_the_same(conn):
    # the timeline: "a" runs at 512 throughout; "b" runs at 256 and scales to 1024 at 12:00;
    # "c" runs at 64 and is gone from 13:00; "d" is listed stopped (rate 0) throughout
    steady, stopped = app("a", 512), app("d", 0)
    for hour, b, c in [(9, 256, 64), (10, 256, 64), (11, 256, 64), (12, 1024, 64),
                       (13, 1024, None), (14, 1024, None)]:
        listed = [steady, app("b", b), stopped] + ([app("c", c)] if c else [])
        land(conn, H10.replace(hour=hour), apps=listed)
    # 9:00 stores all four; then only b's scaling at 12:00 and c's absence at 13:00
    assert stored_per_reading(conn) == [4, 0, 0, 1, 1, 0]
    derive_window(conn, H10, H10 + timedelta(hours=5))
    assert measurements(conn, H10, 5) == {
        ("a", "app-memory"): 512 * 5 * 3600,
        ("b", "app-memory"): 256 * 2 * 3600 + 1024 * 3 * 3600,
        ("c", "app-memory"): 64 * 3 * 3600,
    }
    assert {hour: value for hour, value in conn.execute(
        "SELECT m.hour_start, m.value FROM billing.hourly_measurement m "
        "JOIN billing.resource r ON r.id = m.resource_id WHERE r.natural_id = 'c'")} == {
        H10.replace(hour=h): 64 * 3600 for h in (10, 11, 12)}


def test_a_resource_stopped_after_skipped_repeats_is_still_seen_gone(conn):
    for hour in (9, 10, 11):  # the 10:00 and 11:00 snapshots store nothing for "a"
        land(conn, H10.replace(hour=hour), apps=[app("a", 128)])
    land(conn, H10.replace(hour=11, minute=30), apps=[])  # a complete listing without it
    assert stored_per_reading(conn) == [1, 0, 0, 1]
    derive_window(conn, H10, H10 + timedelta(hours=3))
    assert measurements(conn, H10, 3) == {("a", "app-memory"): 128 * 90 * 60}


def test_a_snapshot_older_than_the_newest_known_state_is_stored_even_if_equal(conn):
    # landed out of time order, as a late landing of an older snapshot would be: the newest
    # state (1024 from 12:00) says nothing of 11:00, so the 11:00 reading is stored
    land(conn, H10, apps=[app("a", 512)])
    land(conn, H10.replace(hour=12), apps=[app("a", 1024)])
    land(conn, H10.replace(hour=11), apps=[app("a", 1024)])
    derive_window(conn, H10, H10 + timedelta(hours=3))
    by_hour = dict(conn.execute("SELECT hour_start, value FROM billing.hourly_measurement"))
    assert by_hour == {H10: 512 * 3600, H10.replace(hour=11): 1024 * 3600,
                       H10.replace(hour=12): 1024 * 3600}


def test_the_newest_state_follows_every_writer(conn):
    """billing.resource_state is what the snapshots compare with: it must equal each
    resource's last observation however the observations were written."""
    land(conn, H10, apps=[app("a", 100), app("b", 200)], services=[service("s", "plan-small")])
    land(conn, H10.replace(hour=11), apps=[app("a", 300)], services=[service("s", "plan-big")])
    land(conn, H10.replace(hour=10, minute=30), apps=[app("a", 100), app("b", 50)])
    kept = conn.execute("SELECT resource_id, observed_at, seq, resource_kind_id, rate "
                        "FROM billing.resource_state ORDER BY resource_id").fetchall()
    last = conn.execute(
        "SELECT DISTINCT ON (resource_id) resource_id, observed_at, seq, resource_kind_id, "
        "rate FROM billing.observation ORDER BY resource_id, observed_at DESC, seq DESC"
    ).fetchall()
    assert kept == last and len(kept) == 3


def test_rederiving_a_window_replaces_its_rows_identically(conn):
    for minutes in (-61, -1, 17, 59, 77, 119):
        apps = [app("a", 100 + minutes % 7), app("b", 300)] if minutes != 17 else [app("a", 5)]
        land(conn, H10 + timedelta(minutes=minutes), apps=apps,
             services=[service("s", "plan-small")])
    select = ("SELECT hour_start, resource_id, resource_kind_id, value "
              "FROM billing.hourly_measurement ORDER BY 1, 2, 3")
    derive_window(conn, H10, H10 + timedelta(hours=2))
    first = conn.execute(select).fetchall()
    derive_window(conn, H10, H10 + timedelta(hours=2))
    derive_window(conn, H10 + timedelta(hours=1), H10 + timedelta(hours=2))
    assert conn.execute(select).fetchall() == first
    assert len(first) == 6  # a, b, s in each of the two hours


@pytest.mark.parametrize(("day", "hours"), [("2025-11-02", 25), ("2025-03-09", 23),
                                            ("2025-03-10", 24)])
def test_dst_days_have_the_right_hours_each_one_utc_hour(day: str, hours: int):
    start = datetime.fromisoformat(day).replace(tzinfo=NEW_YORK)
    keys = hourly_partitions.get_partition_keys_in_time_window(
        dg.TimeWindow(start, start + timedelta(days=1)))
    windows = [utc_window(hourly_partitions.time_window_for_partition_key(k)) for k in keys]
    assert len(keys) == hours
    assert all((end - begin) == timedelta(hours=1) for begin, end in windows)
    assert len({begin for begin, _ in windows}) == hours
    if hours == 25:
        assert "2025-11-02-01:00-0500" in keys


def test_the_fall_back_day_derives_25_utc_hours(conn):
    day = datetime(2025, 11, 2, tzinfo=NEW_YORK)
    start, end = day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC)
    land(conn, start - timedelta(minutes=1), apps=[app("a", 10)])
    derived = derive_window(conn, start, end)
    assert derived.hours == 25
    assert measurements(conn, start, 25) == {("a", "app-memory"): 10 * 25 * 3600}


def test_a_window_off_the_hour_is_refused():
    from billing_dagster.usage.measurements import check_window

    with pytest.raises(ValueError, match="not on a whole hour"):
        check_window(H10 + timedelta(minutes=30), H10 + timedelta(hours=1))


def covered_by_events(conn, meter: str, start: datetime, end: datetime) -> None:
    """Record that usage events were landed covering [start, end) with no change of ``meter``
    in it (what an events page with no event of that meter says)."""
    conn.execute("INSERT INTO billing.reading (meter, source, taken_at, status, covers) "
                 "VALUES (%s, 'events', %s, 'complete', tstzrange(%s, %s))",
                 (meter, end, start, end))
    conn.commit()


def test_flagged_hours_are_interpolated_only_when_asked_and_marked(conn):
    land(conn, H10 - timedelta(hours=1, minutes=1), apps=[app("a", 100)])  # 08:59
    land(conn, H10 + timedelta(hours=4, minutes=1), apps=[app("a", 300)])  # 14:01
    covered_by_events(conn, "cfapps", H10 - timedelta(hours=1, minutes=1), H10 + timedelta(hours=2))
    covered_by_events(conn, "cfapps", H10 + timedelta(hours=4, minutes=30),
                      H10 + timedelta(hours=6))
    window = (H10 - timedelta(hours=1), H10 + timedelta(hours=6))  # 09:00 .. 16:00
    as_measured = derive_window(conn, *window)
    assert [(f.hour_start.hour, f.status, f.uncovered_seconds) for f in as_measured.flagged
            if f.meter == "cfapps"] == [(12, "carried", 3600), (13, "carried", 3600),
                                        (14, "carried", 1800)]
    filled = derive_window(conn, *window, interpolate=True)
    # 14:00 is half known from events: only the wholly unknown hours are estimated
    assert [(f.hour_start.hour, f.status) for f in filled.flagged if f.meter == "cfapps"] == [
        (12, "interpolated"), (13, "interpolated"), (14, "carried")]
    rows = conn.execute("SELECT extract(hour FROM hour_start)::int, value, interpolated "
                        "FROM billing.hourly_measurement ORDER BY hour_start").fetchall()
    # the mean of 11:00 and 15:00, the nearest complete hours
    assert rows == [(9, 100 * 3600, False), (10, 100 * 3600, False), (11, 100 * 3600, False),
                    (12, 200 * 3600, True), (13, 200 * 3600, True),
                    (14, 100 * 60 + 300 * 59 * 60, False), (15, 300 * 3600, False)]
