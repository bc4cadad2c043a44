"""The simulator's oracle: the true usage of every resource-hour, from its own state history."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.oracle import OutsideHistory

START = datetime(2025, 3, 1, tzinfo=UTC)
H10 = START + timedelta(hours=10)


def quiet() -> Foundation:
    return Foundation(11, 30, 20, START, evolve=False)


def truth(foundation: Foundation, start: datetime, hours: int = 1) -> dict[tuple, int]:
    return {(datetime.fromtimestamp(r.hour_start, UTC), r.resource, r.kind): r.unit_seconds
            for r in foundation.true_usage(start, start + timedelta(hours=hours))}


def a_space(foundation: Foundation) -> str:
    return next(iter(foundation.spaces))


def test_an_app_started_at_10_20_and_stopped_at_10_50_ran_30_minutes() -> None:
    f = quiet()
    app = f.create_app(a_space(f), START, started=False, instances=2, memory_in_mb=512)
    f.start_app(app, H10 + timedelta(minutes=20))
    f.stop_app(app, H10 + timedelta(minutes=50))
    f.advance_to(H10 + timedelta(hours=2))
    assert {k: v for k, v in truth(f, H10, 2).items() if k[1] == app} == {
        (H10, app, "app-memory"): 2 * 512 * 30 * 60}


def test_a_scale_at_10_30_splits_the_hour_and_a_skewed_stamp_does_not_move_the_truth() -> None:
    f = quiet()
    app = f.create_app(a_space(f), START, instances=1, memory_in_mb=256)
    f.scale_process(app, H10 + timedelta(minutes=30), instances=3, clock_skew_seconds=-900)
    f.advance_to(H10 + timedelta(hours=1))
    assert truth(f, H10)[(H10, app, "app-memory")] == 256 * 1800 + 3 * 256 * 1800
    (event,) = [e for e in f.app_events if e.process_guid == app and e.instance_count == 3]
    assert event.created_at == "2025-03-01T10:15:00Z"  # what CF says, not what happened


def test_a_replan_splits_the_hour_between_plans_and_user_provided_is_never_billed() -> None:
    f = quiet()
    space = a_space(f)
    plans = f.service_plans
    first = next(p for p in plans.values() if p.name == "micro-psql")
    second = next(p for p in plans.values()
                  if p.offering_guid == first.offering_guid and p.guid != first.guid)
    managed = f.create_service_instance(space, first.guid, START)
    provided = f.create_service_instance(space, None, START)
    f.replan_service_instance(managed, second.guid, H10 + timedelta(minutes=15))
    f.delete_service_instance(managed, H10 + timedelta(minutes=45))
    f.advance_to(H10 + timedelta(hours=1))
    hour = truth(f, H10)
    assert {k: v for k, v in hour.items() if k[1] == managed} == {
        (H10, managed, first.guid): 15 * 60, (H10, managed, second.guid): 30 * 60}
    assert not [k for k in truth(f, START, 11) if k[1] == provided]


def test_created_and_deleted_in_the_same_second_ran_nothing_and_a_second_is_a_second() -> None:
    f = quiet()
    space = a_space(f)
    plan = next(iter(f.service_plans))
    gone = f.create_app(space, H10, memory_in_mb=128)
    f.delete_app(gone, H10)
    brief = f.create_service_instance(space, plan, H10 + timedelta(seconds=10))
    f.delete_service_instance(brief, H10 + timedelta(seconds=11))
    f.advance_to(H10 + timedelta(hours=1))
    hour = truth(f, H10)
    assert not [k for k in hour if k[1] == gone]
    assert hour[(H10, brief, plan)] == 1


def test_the_truth_outlives_pruning_and_purges_of_the_usage_events() -> None:
    f = Foundation(5, 60, 30, START, retention_days=1)
    f.advance_to(START + timedelta(days=3))
    before = truth(f, START, 72)
    assert min(e.created_at for e in f.app_events) > "2025-03-01T23"  # day one pruned
    f.purge_and_reseed_app_events()
    f.purge_and_reseed_service_events()
    assert truth(f, START, 72) == before and before


def test_nothing_is_known_before_the_start_or_after_now() -> None:
    f = quiet()
    f.advance_to(H10)
    with pytest.raises(OutsideHistory, match="starts at 2025-03-01T00:00:00Z"):
        f.true_usage(START - timedelta(hours=1), START)
    with pytest.raises(OutsideHistory, match="after virtual now"):
        f.true_usage(H10, H10 + timedelta(hours=1))
    with pytest.raises(OutsideHistory, match="whole UTC hours"):
        f.true_usage(START + timedelta(minutes=5), H10)


def replay_events(foundation: Foundation, start: datetime, end: datetime) -> dict[tuple, int]:
    """A second, independent reading of the truth: integrate the simulator's own usage events
    (a foundation with no clock skew, reseeded at ``start`` so its events hold the full state),
    second by second per hour."""
    rate: dict[tuple[str, str], int] = {}
    changes: list[tuple[int, tuple[str, str], int]] = []
    for e in foundation.app_events:
        at = int(datetime.fromisoformat(e.created_at).timestamp())
        size = e.instance_count * e.memory_in_mb_per_instance if e.state == "STARTED" else 0
        changes.append((at, (e.process_guid, "app-memory"), size))
    plan_of: dict[str, str] = {}
    for e in foundation.service_events:
        if e.service_instance_type != "managed_service_instance" or e.service_plan_guid is None:
            continue
        at = int(datetime.fromisoformat(e.created_at).timestamp())
        previous = plan_of.get(e.service_instance_guid)
        if previous is not None:
            changes.append((at, (e.service_instance_guid, previous), 0))
        if e.state == "DELETED":
            plan_of.pop(e.service_instance_guid, None)
        else:
            plan_of[e.service_instance_guid] = e.service_plan_guid
            changes.append((at, (e.service_instance_guid, e.service_plan_guid), 1))
    changes.sort(key=lambda change: change[0])  # stable: each stream keeps its API order
    used: dict[tuple, int] = defaultdict(int)
    t0, t1 = int(start.timestamp()), int(end.timestamp())
    cursor = t0
    for at, key, value in changes + [(t1, ("", ""), 0)]:
        for hour in range(cursor - cursor % 3600, at, 3600):
            lo, hi = max(cursor, hour), min(at, hour + 3600)
            for (resource, kind), r in rate.items():
                if r and hi > lo:
                    used[(datetime.fromtimestamp(hour, UTC), resource, kind)] += r * (hi - lo)
        cursor = max(cursor, at)
        rate[key] = value
    return dict(used)


def test_the_oracle_agrees_with_an_independent_replay_of_the_events_over_two_days() -> None:
    f = Foundation(23, 150, 60, START)  # evolving: starts, stops, scales, crashes, deploys
    f.advance_to(START + timedelta(days=2))
    assert f.changes_applied > 100
    end = START + timedelta(days=2)
    assert truth(f, START, 48) == replay_events(f, START, end)


def test_the_oracle_over_http(http_sim: Simulator) -> None:
    control = http_sim.url + "/_sim/usage"
    with httpx.Client(timeout=10) as http:
        http_sim.advance_to(START + timedelta(hours=3))
        body = http.get(control, params={"start": "2025-03-01T01:00:00Z",
                                         "end": "2025-03-01T03:00:00Z"}).json()
        assert (body["start"], body["end"], body["known_from"]) == (
            "2025-03-01T01:00:00Z", "2025-03-01T03:00:00Z", "2025-03-01T00:00:00Z")
        expected = [r.as_json() for r in http_sim.foundation.true_usage(
            START + timedelta(hours=1), START + timedelta(hours=3))]
        assert body["rows"] == expected and expected
        assert set(expected[0]) == {"hour_start", "meter", "resource", "kind", "unit_seconds",
                                    "space_guid", "org_guid"}
        refused = http.get(control, params={"start": "2025-03-01T00:00:00Z",
                                            "end": "2025-03-01T05:00:00Z"})
        assert refused.status_code == 400 and "after virtual now" in refused.json()["error"]
        assert "missing: end" in http.get(control, params={"start": "x"}).json()["error"]


@pytest.fixture
def http_sim():
    with Simulator(Foundation(9, 40, 20, START)) as sim:
        yield sim
