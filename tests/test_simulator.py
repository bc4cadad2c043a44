"""The CF simulator: a deterministic foundation, and real HTTP behaviour of its CF API and UAA."""

import json
import math
import time
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from billing_dagster.simulator import Foundation, Simulator, UnknownEventGuid
from billing_dagster.simulator import uaa as uaa_module
from billing_dagster.simulator.event_log import EventLog
from billing_dagster.simulator.records import ServiceUsageEvent

START = datetime(2025, 3, 1, tzinfo=UTC)
ADMIN_AUTHORITIES = ("cloud_controller.admin", "usage.admin", "usage.read")


def small_foundation(**kwargs: Any) -> Foundation:
    return Foundation(42, 120, 60, START, **kwargs)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(small_foundation()) as simulator:
        yield simulator


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def get_token(http: httpx.Client, sim: Simulator, **form: str) -> str:
    response = http.post(
        sim.url + "/uaa/oauth/token",
        data={"grant_type": "client_credentials", **form},
        auth=("billing", "billing-secret"),
    )
    response.raise_for_status()
    return response.json()["access_token"]


def bearer(http: httpx.Client, sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"bearer {get_token(http, sim)}"}


def walk(http: httpx.Client, url: str, headers: dict[str, str]) -> list[dict]:
    """Every page of a list, following pagination.next until it is null."""
    pages = []
    next_url: str | None = url
    while next_url is not None:
        response = http.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        next_link = page["pagination"]["next"]
        next_url = next_link["href"] if next_link else None
    return pages


def assert_cf_error(response: httpx.Response, status: int, title: str, code: int) -> str:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert (error["title"], error["code"]) == (title, code)
    return error["detail"]


def replay(foundation: Foundation) -> None:
    """Replaying each process's app events must give its current running size, and each
    instance's service events its current plan (or DELETED when it is gone)."""
    running: dict[str, tuple[str, int, int]] = {}
    for event in foundation.app_events:
        running[event.process_guid] = (
            event.state, event.instance_count, event.memory_in_mb_per_instance
        )
    for process in foundation.processes.values():
        if foundation.apps[process.app_guid].state == "STARTED":
            assert running[process.guid] == ("STARTED", process.instances, process.memory_in_mb)
        else:
            assert running.get(process.guid, ("STOPPED",))[0] == "STOPPED"
    for process_guid, (state, _, _) in running.items():
        if state == "STARTED":
            assert foundation.apps[foundation.processes[process_guid].app_guid].state == "STARTED"
    plans: dict[str, tuple[str, str | None]] = {}
    for event in foundation.service_events:
        plans[event.service_instance_guid] = (event.state, event.service_plan_guid)
    for guid, (state, plan_guid) in plans.items():
        instance = foundation.service_instances.get(guid)
        if instance is None:
            assert state == "DELETED"
        else:
            assert state in ("CREATED", "UPDATED") and plan_guid == instance.plan_guid


# -- the foundation model ------------------------------------------------------------------


def test_same_seed_gives_the_same_foundation_and_another_seed_does_not() -> None:
    first, second, other = small_foundation(), small_foundation(), Foundation(43, 120, 60, START)
    assert list(first.apps.items()) == list(second.apps.items())
    assert list(first.processes.items()) == list(second.processes.items())
    assert list(first.service_instances.items()) == list(second.service_instances.items())
    assert first.app_events == second.app_events
    assert set(first.apps).isdisjoint(other.apps)
    # The service catalog is shared by every seed.
    assert dict(first.service_plans) == dict(other.service_plans)


def test_evolution_does_not_depend_on_how_time_is_advanced() -> None:
    one_step, many_steps = small_foundation(), small_foundation()
    end = START + timedelta(days=2, hours=5, minutes=17, seconds=3)
    one_step.advance_to(end)
    moment = START
    for step_seconds in (1, 59, 3599, 1800, 7000, 13, 40_000, 86_400):
        moment = min(end, moment + timedelta(seconds=step_seconds))
        many_steps.advance_to(moment)
    many_steps.advance_to(end)
    assert one_step.changes_applied == many_steps.changes_applied > 50
    assert one_step.app_events == many_steps.app_events
    assert one_step.service_events == many_steps.service_events
    assert list(one_step.processes.items()) == list(many_steps.processes.items())
    assert list(one_step.service_instances.items()) == list(many_steps.service_instances.items())


def test_generated_shape_and_seed_events() -> None:
    foundation = Foundation(5, 1000, 400, START)
    assert len(foundation.organizations) == 40 and len(foundation.spaces) == 200
    assert len(foundation.apps) == 1000 and len(foundation.service_instances) == 400
    started = [app for app in foundation.apps.values() if app.state == "STARTED"]
    assert 0.7 < len(started) / 1000 < 0.9
    workers = [p for p in foundation.processes.values() if p.type == "worker"]
    assert 0.1 < len(workers) / 1000 < 0.3
    for app in foundation.apps.values():
        web, *others = foundation.processes_of(app.guid)
        assert web.guid == app.guid and web.type == "web"
        assert [p.type for p in others] in ([], ["worker"])
    for process in foundation.processes.values():
        assert 1 <= process.instances <= 4
        assert process.memory_in_mb in (64, 128, 256, 512, 1024, 2048)
    managed = [i for i in foundation.service_instances.values() if i.type == "managed"]
    assert 0.8 < len(managed) / 400 < 0.97
    assert all(i.plan_guid is None for i in foundation.service_instances.values()
               if i.type == "user-provided")
    offerings = {foundation.service_offerings[foundation.service_plans[i.plan_guid].offering_guid]
                 .name for i in managed if i.plan_guid}
    assert {"aws-rds", "s3", "aws-elasticache-redis"} <= offerings

    # Like a purge-and-reseed at start: one STARTED (previous == current) per started process,
    # reusing the process guid, and one CREATED per service instance.
    started_processes = [p for p in foundation.processes.values()
                         if foundation.apps[p.app_guid].state == "STARTED"]
    events = foundation.app_events
    assert [e.guid for e in events] == [p.guid for p in started_processes]
    assert all(e.state == e.previous_state == "STARTED" and e.created_at == "2025-03-01T00:00:00Z"
               and e.instance_count == e.previous_instance_count for e in events)
    assert [e.guid for e in foundation.service_events] == list(foundation.service_instances)
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_events_replay_to_the_current_state() -> None:
    foundation = Foundation(9, 400, 200, START)
    foundation.advance_to(START + timedelta(days=3, minutes=30))
    kinds = {(e.state, e.previous_state) for e in foundation.app_events}
    assert kinds == {("STARTED", "STARTED"), ("STARTED", "STOPPED"), ("STOPPED", "STARTED")}
    assert {e.state for e in foundation.service_events} == {"CREATED", "UPDATED", "DELETED"}
    replay(foundation)
    # A stop carries the process's non-zero size; a scale is STARTED -> STARTED with both sizes.
    stops = [e for e in foundation.app_events if e.state == "STOPPED"]
    assert all(e.instance_count > 0 and e.memory_in_mb_per_instance > 0 for e in stops)
    scales = [e for e in foundation.app_events if e.state == e.previous_state == "STARTED"
              and e.created_at > "2025-03-01T00:00:00Z"]
    assert scales and all(
        (e.instance_count, e.memory_in_mb_per_instance)
        != (e.previous_instance_count, e.previous_memory_in_mb_per_instance) for e in scales
    )
    # Event times are whole seconds, never before start nor after now, in id order.
    times = [e.created_at for e in foundation.app_events]
    assert times == sorted(times) and times[-1] <= "2025-03-04T00:30:00Z"
    replan = next(e for e in foundation.service_events if e.state == "UPDATED")
    assert replan.service_plan_guid is not None and replan.service_offering_name is not None


def test_advance_rejects_the_past_and_naive_times() -> None:
    foundation = small_foundation()
    foundation.advance_to(START + timedelta(hours=1))
    with pytest.raises(ValueError, match="back"):
        foundation.advance_to(START)
    with pytest.raises(ValueError, match="timezone"):
        foundation.advance_to(datetime(2025, 3, 2))
    assert foundation.now == START + timedelta(hours=1)


def test_retention_prunes_old_events() -> None:
    foundation = small_foundation(retention_days=1)
    first_event = foundation.app_events[0].guid
    foundation.advance_to(START + timedelta(days=3))
    cutoff = "2025-03-03T00:00:00Z"
    assert all(e.created_at >= cutoff for e in foundation.app_events)
    assert all(e.created_at >= cutoff for e in foundation.service_events)
    assert foundation.app_events and foundation.service_events
    with pytest.raises(UnknownEventGuid):
        foundation.app_events_after(first_event)


def test_pruning_always_keeps_the_newest_event() -> None:
    log: EventLog[ServiceUsageEvent] = EventLog()
    for day in (1, 2, 3):
        log.append(ServiceUsageEvent(
            id=log.next_id(), guid=f"g{day}", created_at=f"2025-01-0{day}T00:00:00Z",
            state="CREATED", space_guid="s", space_name="dev", organization_guid="o",
            service_instance_guid="i", service_instance_name="db",
            service_instance_type="user_provided_service_instance", service_plan_guid=None,
            service_plan_name=None, service_offering_guid=None, service_offering_name=None,
            service_broker_guid=None, service_broker_name=None,
        ))
    assert log.prune_before("2025-06-01T00:00:00Z") == 2
    assert [e.guid for e in log.all()] == ["g3"]
    assert log.after("g3") == []


def test_purge_and_reseed_replaces_history_with_the_current_state() -> None:
    foundation = small_foundation()
    foundation.advance_to(START + timedelta(hours=30))
    last_id = foundation.app_events[-1].id
    foundation.purge_and_reseed_app_events()
    foundation.purge_and_reseed_service_events()
    started = [p for p in foundation.processes.values()
               if foundation.apps[p.app_guid].state == "STARTED"]
    events = foundation.app_events
    assert [e.guid for e in events] == [p.guid for p in started]
    assert all(e.created_at == "2025-03-02T06:00:00Z" for e in events)
    assert events[0].id > last_id
    assert [e.guid for e in foundation.service_events] == list(foundation.service_instances)
    replay(foundation)


def test_large_foundation_is_generated_and_served() -> None:
    foundation = Foundation(1, 100_000, 50_000, START)
    assert len(foundation.apps) == 100_000 and len(foundation.service_instances) == 50_000
    assert len(foundation.organizations) == 4000 and len(foundation.spaces) == 20_000
    assert 110_000 < len(foundation.processes) < 130_000
    with Simulator(foundation) as simulator, httpx.Client(timeout=30) as http:
        response = http.get(simulator.url + "/v3/apps?per_page=5000&page=20",
                            headers=bearer(http, simulator))
        page = response.json()
        assert page["pagination"]["total_results"] == 100_000
        assert page["pagination"]["total_pages"] == 20 and page["pagination"]["next"] is None
        assert [app["guid"] for app in page["resources"]] == list(foundation.apps)[95_000:]


# -- UAA -----------------------------------------------------------------------------------


def test_token_from_uaa_discovered_at_the_root(sim: Simulator, http: httpx.Client) -> None:
    root = http.get(sim.url + "/").json()
    uaa = root["links"]["uaa"]["href"]
    assert uaa == root["links"]["login"]["href"] == sim.url + "/uaa"
    assert root["links"]["cloud_controller_v3"]["href"] == sim.url + "/v3"
    response = http.post(uaa + "/oauth/token", data={"grant_type": "client_credentials"},
                         auth=("billing", "billing-secret"))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 43_199
    assert body["scope"] == "cloud_controller.admin_read_only usage.admin usage.read"
    assert "refresh_token" not in body and len(body["jti"]) == 32

    (key,) = http.get(uaa + "/token_keys").json()["keys"]
    assert (key["alg"], key["kty"], key["use"]) == ("RS256", "RSA", "sig")
    assert key["value"].startswith("-----BEGIN PUBLIC KEY-----") and key["n"] and key["e"]
    header = jwt.get_unverified_header(body["access_token"])
    assert header["kid"] == key["kid"] and header["jku"] == uaa + "/token_keys"
    assert header["typ"] == "JWT" and header["alg"] == "RS256"
    issuer = http.get(uaa + "/.well-known/openid-configuration").json()["issuer"]
    for verifying_key in (key["value"], jwt.PyJWK(key).key):
        claims = jwt.decode(body["access_token"], verifying_key, algorithms=["RS256"],
                            audience="cloud_controller", issuer=issuer)
        assert claims["jti"] == body["jti"]
    assert claims["sub"] == claims["client_id"] == claims["cid"] == claims["azp"] == "billing"
    assert claims["grant_type"] == "client_credentials" and claims["zid"] == "uaa"
    assert claims["scope"] == claims["authorities"] == [
        "cloud_controller.admin_read_only", "usage.admin", "usage.read"]
    assert claims["aud"] == ["billing", "cloud_controller", "usage"]
    # Real wall-clock time, although virtual time is 2025-03-01.
    assert abs(claims["iat"] - time.time()) < 60
    assert claims["exp"] - claims["iat"] == 43_200
    assert sim.token_requests == 1


def test_token_with_credentials_in_the_body_and_refusals(
    sim: Simulator, http: httpx.Client
) -> None:
    token_url = sim.url + "/uaa/oauth/token"
    body_creds = http.post(token_url, data={"grant_type": "client_credentials",
                                            "client_id": "billing",
                                            "client_secret": "billing-secret"})
    assert body_creds.status_code == 200
    claims = jwt.decode(body_creds.json()["access_token"], options={"verify_signature": False})
    assert claims["client_auth_method"] == "client_secret_post"

    wrong = http.post(token_url, data={"grant_type": "client_credentials"},
                      auth=("billing", "nope"))
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith('Basic realm="UAA/client"')
    assert wrong.json() == {"error": "unauthorized", "error_description": "Bad credentials"}
    anonymous = http.post(token_url, data={"grant_type": "client_credentials"})
    assert anonymous.status_code == 401
    bad_grant = http.post(token_url, data={"grant_type": "password"},
                          auth=("billing", "billing-secret"))
    assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "unsupported_grant_type"
    bad_scope = http.post(token_url, data={"grant_type": "client_credentials",
                                           "scope": "cloud_controller.admin"},
                          auth=("billing", "billing-secret"))
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"
    assert sim.token_requests == 5


def test_cloud_controller_checks_the_bearer_token(
    sim: Simulator, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = sim.url + "/v3/apps"
    assert_cf_error(http.get(apps), 401, "CF-NotAuthenticated", 10002)
    assert_cf_error(http.get(apps, headers={"Authorization": "bearer nonsense"}),
                    401, "CF-InvalidAuthToken", 1000)
    with Simulator(small_foundation()) as other:
        foreign = get_token(http, other)
    assert_cf_error(http.get(apps, headers={"Authorization": f"bearer {foreign}"}),
                    401, "CF-InvalidAuthToken", 1000)
    # A token issued a day ago has expired (token times are wall-clock time).
    day_ago = time.time() - 86_400
    monkeypatch.setattr(uaa_module, "time", types.SimpleNamespace(time=lambda: day_ago))
    expired = get_token(http, sim)
    monkeypatch.undo()
    assert_cf_error(http.get(apps, headers={"Authorization": f"bearer {expired}"}),
                    401, "CF-InvalidAuthToken", 1000)
    # A token narrowed to usage.read is not meant for the Cloud Controller (aud lacks it).
    narrow = get_token(http, sim, scope="usage.read")
    assert jwt.decode(narrow, options={"verify_signature": False})["aud"] == ["billing", "usage"]
    assert_cf_error(http.get(apps, headers={"Authorization": f"bearer {narrow}"}),
                    401, "CF-InvalidAuthToken", 1000)
    # The root documents need no token.
    assert http.get(sim.url + "/v3").json()["links"]["apps"]["href"] == apps
    assert http.get(sim.url + "/v3/info").status_code == 200
    assert http.get(apps, headers=bearer(http, sim)).status_code == 200


# -- lists ---------------------------------------------------------------------------------


def test_pagination_follows_next_links_to_the_end(sim: Simulator, http: httpx.Client) -> None:
    headers = bearer(http, sim)
    pages = walk(http, sim.url + "/v3/apps?per_page=7&include=space", headers)
    total = len(sim.foundation.apps)
    assert len(pages) == math.ceil(total / 7) > 3
    first, second, last = pages[0]["pagination"], pages[1]["pagination"], pages[-1]["pagination"]
    assert first["total_results"] == total and first["total_pages"] == len(pages)
    assert first["previous"] is None and last["next"] is None
    assert second["previous"]["href"] == first["first"]["href"]
    assert first["first"]["href"] == sim.url + "/v3/apps?include=space&page=1&per_page=7"
    assert last["last"]["href"].startswith(sim.url + "/v3/apps?include=space&page=")
    # Filters survive into the links: every page still has its included spaces.
    assert all("spaces" in page["included"] for page in pages)
    guids = [app["guid"] for page in pages for app in page["resources"]]
    assert guids == list(sim.foundation.apps)

    empty = http.get(sim.url + "/v3/apps?names=no-such-app", headers=headers).json()
    assert empty["resources"] == [] and empty["pagination"]["total_pages"] == 1
    assert empty["pagination"]["last"]["href"].endswith("page=1&per_page=50")


def test_page_size_and_parameter_validation(sim: Simulator, http: httpx.Client) -> None:
    headers = bearer(http, sim)
    default = http.get(sim.url + "/v3/processes", headers=headers).json()
    assert len(default["resources"]) == 50
    assert len(http.get(sim.url + "/v3/apps?per_page=5000", headers=headers).json()
               ["resources"]) == len(sim.foundation.apps)
    for query in ("per_page=5001", "per_page=0", "page=0", "colour=blue", "order_by=colour"):
        detail = assert_cf_error(http.get(f"{sim.url}/v3/apps?{query}", headers=headers),
                                 400, "CF-BadQueryParameter", 10005)
        assert detail.startswith("The query parameter is invalid: ")
    assert_cf_error(http.get(sim.url + "/v3/app_usage_events?per_page=5001", headers=headers),
                    422, "CF-UnprocessableEntity", 10008)
    detail = assert_cf_error(
        http.get(sim.url + "/v3/service_usage_events?colour=blue", headers=headers),
        422, "CF-UnprocessableEntity", 10008)
    assert "Unknown query parameter(s): 'colour'" in detail
    assert_cf_error(http.get(sim.url + "/v3/nothing_here", headers=headers),
                    404, "CF-ResourceNotFound", 10010)
    assert_cf_error(http.get(sim.url + "/v3/apps/not-a-guid", headers=headers),
                    404, "CF-ResourceNotFound", 10010)
    app_guid = next(iter(sim.foundation.apps))
    one = http.get(f"{sim.url}/v3/apps/{app_guid}", headers=headers).json()
    assert one["guid"] == app_guid and one["links"]["self"]["href"].endswith(app_guid)
    names = [a["name"] for a in http.get(sim.url + "/v3/apps?per_page=5000&order_by=-name",
                                         headers=headers).json()["resources"]]
    assert names == sorted(names, reverse=True)


def test_apps_include_space_and_filters(sim: Simulator, http: httpx.Client) -> None:
    headers = bearer(http, sim)
    page = http.get(sim.url + "/v3/apps?per_page=20&include=space", headers=headers).json()
    wanted = {app["relationships"]["space"]["data"]["guid"] for app in page["resources"]}
    spaces = page["included"]["spaces"]
    assert {space["guid"] for space in spaces} == wanted and len(spaces) == len(wanted)
    for space in spaces:
        org_guid = space["relationships"]["organization"]["data"]["guid"]
        assert org_guid == sim.foundation.spaces[space["guid"]].organization_guid

    space_guid = next(iter(wanted))
    in_space = walk(http, f"{sim.url}/v3/apps?space_guids={space_guid}&per_page=2", headers)
    assert [a["guid"] for p in in_space for a in p["resources"]] == [
        a.guid for a in sim.foundation.apps.values() if a.space_guid == space_guid]
    started = [app for app in page["resources"] if app["state"] == "STARTED"]
    processes = http.get(f"{sim.url}/v3/processes?app_guids={started[0]['guid']}",
                         headers=headers).json()["resources"]
    assert processes[0]["guid"] == started[0]["guid"] and processes[0]["type"] == "web"
    assert processes[0]["relationships"]["app"]["data"]["guid"] == started[0]["guid"]


def test_service_instances_type_filter_and_plans(sim: Simulator, http: httpx.Client) -> None:
    headers = bearer(http, sim)
    managed = walk(http, sim.url + "/v3/service_instances?type=managed&per_page=10", headers)
    resources = [si for page in managed for si in page["resources"]]
    expected = [i.guid for i in sim.foundation.service_instances.values() if i.type == "managed"]
    assert [si["guid"] for si in resources] == expected
    assert all(si["type"] == "managed" and si["relationships"]["service_plan"]["data"]["guid"]
               for si in resources)
    user_provided = http.get(sim.url + "/v3/service_instances?type=user-provided",
                             headers=headers).json()["resources"]
    assert user_provided and all("service_plan" not in si["relationships"]
                                 for si in user_provided)
    assert_cf_error(http.get(sim.url + "/v3/service_instances?include=space", headers=headers),
                    400, "CF-BadQueryParameter", 10005)

    plans = http.get(sim.url + "/v3/service_plans?include=service_offering&per_page=5000",
                     headers=headers).json()
    offerings = {o["guid"]: o for o in plans["included"]["service_offerings"]}
    for plan in plans["resources"]:
        assert plan["relationships"]["service_offering"]["data"]["guid"] in offerings
    assert {o["name"] for o in offerings.values()} >= {"aws-rds", "s3", "app-autoscaler"}
    used_plans = {si["relationships"]["service_plan"]["data"]["guid"] for si in resources}
    assert used_plans <= {plan["guid"] for plan in plans["resources"]}


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "title"),
    [("429", 429, "CF-RateLimitExceeded"), ("500", 500, "UnknownError"),
     ("502", 502, "UnknownError"), ("503", 503, "CF-ServiceUnavailable")],
)
def test_error_faults_hit_the_next_matching_requests(
    sim: Simulator, http: httpx.Client, kind: str, status: int, title: str
) -> None:
    headers = bearer(http, sim)
    sim.inject_fault(kind, count=2, retry_after=7)
    responses = [http.get(sim.url + "/v3/apps", headers=headers) for _ in range(2)]
    for response in responses:
        assert response.status_code == status
        assert json.loads(response.content)["errors"][0]["title"] == title
    response = responses[-1]
    if kind == "429":
        assert response.headers["Retry-After"] == "7"
        assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time()) + 6
    assert http.get(sim.url + "/v3/apps", headers=headers).status_code == 200


def test_faults_only_hit_their_path_prefix(sim: Simulator, http: httpx.Client) -> None:
    headers = bearer(http, sim)
    sim.inject_fault("500", path_prefix="/v3/processes")
    assert http.get(sim.url + "/v3/apps", headers=headers).status_code == 200
    assert http.get(sim.url + "/v3/processes", headers=headers).status_code == 500
    sim.inject_fault("503", path_prefix="/uaa/")
    assert http.post(sim.url + "/uaa/oauth/token", data={"grant_type": "client_credentials"},
                     auth=("billing", "billing-secret")).status_code == 503
    sim.inject_fault("500", count=5)
    sim.clear_faults()
    assert http.get(sim.url + "/v3/apps", headers=headers).status_code == 200


def test_slow_truncated_and_malformed_replies(sim: Simulator, http: httpx.Client) -> None:
    headers = bearer(http, sim)
    url = sim.url + "/v3/apps?per_page=100"
    whole = http.get(url, headers=headers)

    sim.inject_fault("slow", delay_seconds=0.4)
    started = time.monotonic()
    slow = http.get(url, headers=headers)
    assert time.monotonic() - started >= 0.4 and slow.json() == whole.json()

    sim.inject_fault("truncate")
    truncated = http.get(url, headers=headers)
    assert truncated.status_code == 200
    assert truncated.content == whole.content[: len(whole.content) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.content)

    sim.inject_fault("malformed")
    malformed = http.get(url, headers=headers)
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content)
    # The connection is still usable afterwards (Content-Length matched each body).
    assert http.get(url, headers=headers).content == whole.content


def test_control_endpoints(sim: Simulator, http: httpx.Client) -> None:
    control = sim.url + "/_sim"
    assert http.get(control + "/clock").json() == {"now": "2025-03-01T00:00:00Z"}
    moved = http.post(control + "/clock", json={"now": "2025-03-01T05:30:00Z"})
    assert moved.json() == {"now": "2025-03-01T05:30:00Z"}
    assert sim.foundation.now == START + timedelta(hours=5, minutes=30)
    assert http.post(control + "/clock", json={"now": "2025-03-01T01:00:00Z"}).status_code == 400
    assert http.post(control + "/clock", json={"now": "2025-03-02T00:00:00"}).status_code == 400

    added = http.post(control + "/faults", json={"kind": "502", "count": 1})
    assert added.status_code == 201 and added.json()["faults"][0]["kind"] == "502"
    assert http.post(control + "/faults", json={"kind": "418"}).status_code == 400
    assert http.get(sim.url + "/v3").status_code == 200  # not under /v3/
    assert http.get(sim.url + "/v3/apps").status_code == 502
    http.post(control + "/faults", json={"kind": "500", "count": 3})
    assert http.delete(control + "/faults").json() == {"faults": []}

    stats = http.get(control + "/stats").json()
    assert stats["token_requests"] == 0
    assert stats["requests"] == [["GET", "/v3"], ["GET", "/v3/apps"]]
    assert sim.requests == [("GET", "/v3"), ("GET", "/v3/apps")]
    assert stats["apps"] == len(sim.foundation.apps)


# -- usage events over HTTP ----------------------------------------------------------------


def test_usage_events_read_incrementally_with_after_guid(
    sim: Simulator, http: httpx.Client
) -> None:
    headers = bearer(http, sim)
    events_url = sim.url + "/v3/app_usage_events?per_page=30"
    first_read = [e for page in walk(http, events_url, headers) for e in page["resources"]]
    assert [e["guid"] for e in first_read] == [e.guid for e in sim.foundation.app_events]
    sample = first_read[0]
    assert sample["state"] == {"current": "STARTED", "previous": "STARTED"}
    assert sample["updated_at"] == sample["created_at"] == "2025-03-01T00:00:00Z"
    assert sample["task"] == {"guid": None, "name": None}

    sim.advance_to(START + timedelta(hours=12))
    last = first_read[-1]["guid"]
    pages = walk(http, f"{events_url}&after_guid={last}", headers)
    assert all(f"after_guid={last}" in (p["pagination"]["first"]["href"]) for p in pages)
    new = [e for page in pages for e in page["resources"]]
    assert new and all(e["created_at"] > "2025-03-01T00:00:00Z" for e in new)
    assert [e["guid"] for e in first_read + new] == [e.guid for e in sim.foundation.app_events]
    tail = http.get(f"{events_url}&after_guid={new[-1]['guid']}", headers=headers).json()
    assert tail["resources"] == [] and tail["pagination"]["total_results"] == 0

    detail = assert_cf_error(
        http.get(sim.url + "/v3/app_usage_events?after_guid=no-such-guid", headers=headers),
        422, "CF-UnprocessableEntity", 10008)
    assert detail == "After guid filter must be a valid app usage event guid."
    detail = assert_cf_error(
        http.get(sim.url + "/v3/service_usage_events?after_guid=no-such-guid", headers=headers),
        422, "CF-UnprocessableEntity", 10008)
    assert detail == "After guid filter must be a valid service usage event guid."

    services = http.get(sim.url + "/v3/service_usage_events?per_page=5000"
                        "&service_instance_types=user_provided_service_instance",
                        headers=headers).json()["resources"]
    assert services and all(e["service_plan"] == {"guid": None, "name": None} and
                            e["service_broker"] == {"guid": None, "name": None}
                            for e in services)


def test_pruned_after_guid_is_refused(http: httpx.Client) -> None:
    with Simulator(small_foundation(retention_days=1)) as sim:
        headers = bearer(http, sim)
        oldest = http.get(sim.url + "/v3/service_usage_events?per_page=1",
                          headers=headers).json()["resources"][0]["guid"]
        assert http.get(f"{sim.url}/v3/service_usage_events?after_guid={oldest}",
                        headers=headers).status_code == 200
        sim.advance_to(START + timedelta(days=2))
        assert_cf_error(
            http.get(f"{sim.url}/v3/service_usage_events?after_guid={oldest}", headers=headers),
            422, "CF-UnprocessableEntity", 10008)
        remaining = http.get(sim.url + "/v3/service_usage_events?per_page=5000",
                             headers=headers).json()["resources"]
        assert remaining and min(e["created_at"] for e in remaining) >= "2025-03-02T00:00:00Z"


def test_served_events_replay_to_the_served_state(http: httpx.Client) -> None:
    with Simulator(Foundation(3, 200, 100, START)) as sim:
        sim.advance_to(START + timedelta(days=1, hours=3))
        headers = bearer(http, sim)
        events = [e for page in walk(http, sim.url + "/v3/app_usage_events?per_page=5000",
                                     headers) for e in page["resources"]]
        running: dict[str, tuple[str, int, int]] = {}
        for event in events:
            running[event["process"]["guid"]] = (
                event["state"]["current"], event["instance_count"]["current"],
                event["memory_in_mb_per_instance"]["current"])
        apps = {a["guid"]: a for p in walk(http, sim.url + "/v3/apps?per_page=5000", headers)
                for a in p["resources"]}
        processes = [p for page in walk(http, sim.url + "/v3/processes?per_page=5000", headers)
                     for p in page["resources"]]
        for process in processes:
            if apps[process["relationships"]["app"]["data"]["guid"]]["state"] == "STARTED":
                expected = ("STARTED", process["instances"], process["memory_in_mb"])
                assert running[process["guid"]] == expected
            else:
                assert running.get(process["guid"], ("STOPPED",))[0] == "STOPPED"


def test_purge_needs_admin_and_reseeds(http: httpx.Client) -> None:
    purge = "/v3/app_usage_events/actions/destructively_purge_all_and_reseed"
    with Simulator(small_foundation()) as reader:
        assert_cf_error(http.post(reader.url + purge, headers=bearer(http, reader)),
                        403, "CF-NotAuthorized", 10003)
    with Simulator(small_foundation(), authorities=ADMIN_AUTHORITIES) as admin:
        admin.advance_to(START + timedelta(hours=6))
        headers = bearer(http, admin)
        response = http.post(admin.url + purge, headers=headers)
        assert response.status_code == 200 and response.json() == {}
        events = http.get(admin.url + "/v3/app_usage_events?per_page=5000",
                          headers=headers).json()["resources"]
        assert {e["created_at"] for e in events} == {"2025-03-01T06:00:00Z"}
        assert all(e["guid"] == e["process"]["guid"] for e in events)
        service_purge = "/v3/service_usage_events/actions/destructively_purge_all_and_reseed"
        assert http.post(admin.url + service_purge, headers=headers).status_code == 200
        assert len(admin.foundation.service_events) == len(admin.foundation.service_instances)


def test_follow_wall_clock_moves_virtual_time_on_each_request(http: httpx.Client) -> None:
    # Six hours back: at least five whole hours of changes (2 an hour at this size) are due.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    with Simulator(Foundation(2, 50, 20, start), follow_wall_clock=True) as sim:
        now = datetime.fromisoformat(http.get(sim.url + "/_sim/clock").json()["now"])
        assert now == start  # control endpoints do not move the clock
        http.get(sim.url + "/v3/info")
        assert abs((sim.foundation.now - datetime.now(UTC)).total_seconds()) < 5
        assert sim.foundation.changes_applied >= 10
