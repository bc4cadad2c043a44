"""The CF client against the simulator over real HTTP: auth, pagination, retries, bad JSON."""

import gc
import math
import threading
import time

import pytest

from billing_dagster.cf.client import CfApiError, CloudFoundryClient, RetryPolicy
from billing_dagster.meters import CfAppsMeter, CfServicesMeter
from tests.support import cf_client


def test_pagination_follows_next_until_null(simulator):
    with cf_client(simulator, per_page=7) as client:
        pages = list(client.pages("/v3/apps"))
    apps = len(simulator.foundation.apps)
    assert apps > 7 * 3
    assert len(pages) == math.ceil(apps / 7)
    assert sorted(a["guid"] for p in pages for a in p.resources) == sorted(
        simulator.foundation.apps)
    assert pages[-1].next_url is None


def test_included_parents_are_merged_across_pages(simulator):
    with cf_client(simulator, per_page=5) as client:
        plans = client.list_all("/v3/service_plans", {"include": "service_offering"})
    offering_guids = {o["guid"] for o in plans.included["service_offerings"]}
    assert {p["relationships"]["service_offering"]["data"]["guid"]
            for p in plans.resources} <= offering_guids


def test_the_token_is_reused_then_refreshed_before_it_expires(simulator):
    clock = [1_000_000_000.0]
    with cf_client(simulator, now=lambda: clock[0], refresh_margin_seconds=60) as client:
        client.get("/v3/organizations")
        client.get("/v3/spaces")
        assert client.token_fetches == 1
        # the simulator's tokens live 12 h; jump to within the refresh margin of their exp
        import jwt
        exp = jwt.decode(client.access_token(), options={"verify_signature": False})["exp"]
        clock[0] = exp - 30
        client.get("/v3/organizations")
        assert client.token_fetches == 2
    assert simulator.token_requests == 2


def test_wrong_client_secret_names_the_variables_to_check(simulator):
    with CloudFoundryClient(simulator.url, "billing", "wrong") as client, \
            pytest.raises(CfApiError, match="CF_CLIENT_ID and CF_CLIENT_SECRET"):
        client.get("/v3/apps")


@pytest.mark.parametrize("kind", ["429", "500", "502", "503"])
def test_rate_limits_and_server_errors_are_retried_then_succeed(simulator, kind):
    waits: list[float] = []
    with cf_client(simulator, sleep=waits.append) as client:
        client.access_token()
        simulator.inject_fault(kind, count=2, path_prefix="/v3/organizations", retry_after=7)
        organizations = client.list_all("/v3/organizations")
    assert len(organizations.resources) == len(simulator.foundation.organizations)
    if kind == "429":
        assert waits == [0.05, 0.05]  # Retry-After: 7 s, capped by the test's max wait
    else:
        assert waits == [0.01, 0.02]  # exponential backoff


def test_retry_after_is_honoured(simulator):
    waits: list[float] = []
    retry = RetryPolicy(max_attempts=3, backoff_seconds=0.01, max_wait_seconds=60)
    with cf_client(simulator, sleep=waits.append, retry=retry) as client:
        simulator.inject_fault("429", count=1, path_prefix="/v3/spaces", retry_after=7)
        client.list_all("/v3/spaces")
    assert waits == [7.0]


def test_exhausted_retries_end_in_a_clear_error(simulator):
    with cf_client(simulator, sleep=lambda _: None) as client:
        client.access_token()
        simulator.inject_fault("503", count=10, path_prefix="/v3/apps")
        with pytest.raises(CfApiError) as error:
            client.list_all("/v3/apps")
    message = str(error.value)
    assert "/v3/apps" in message and "failed 3 times" in message and "503" in message


@pytest.mark.parametrize("kind", ["truncate", "malformed"])
def test_bad_json_is_an_error_never_an_empty_list(simulator, kind):
    with cf_client(simulator, sleep=lambda _: None) as client:
        client.access_token()
        simulator.inject_fault(kind, count=10, path_prefix="/v3/service_instances")
        with pytest.raises(CfApiError, match="malformed JSON"):
            client.list_all("/v3/service_instances", {"type": "managed"})


def test_one_truncated_page_is_retried_and_the_read_completes(simulator):
    with cf_client(simulator, sleep=lambda _: None, per_page=10) as client:
        client.access_token()
        simulator.inject_fault("truncate", count=1, path_prefix="/v3/apps")
        apps = client.list_all("/v3/apps")
    assert len(apps.resources) == len(simulator.foundation.apps)


def test_a_slow_reply_times_out_and_is_retried(simulator):
    with cf_client(simulator, sleep=lambda _: None, timeout_seconds=0.3) as client:
        client.access_token()
        simulator.inject_fault("slow", count=1, path_prefix="/v3/organizations",
                               delay_seconds=1.0)
        organizations = client.list_all("/v3/organizations")
    assert len(organizations.resources) == len(simulator.foundation.organizations)


def test_a_next_link_back_to_a_page_already_read_is_an_error_not_a_loop(simulator):
    # Found by the fault campaign: the client followed such a link for as long as the server
    # sent it, and a list read whole (list_all) held that page's resources twice.
    simulator.inject_fault("repeat_next", count=1, path_prefix="/v3/apps", skip=1)
    with cf_client(simulator, per_page=5) as client, \
            pytest.raises(CfApiError, match="links to a page already read") as raised:
        client.list_all("/v3/apps")
    assert "page=2" in str(raised.value)


def test_a_plan_record_without_its_guid_leaves_the_instances_counted(simulator):
    # Found by the fault campaign: the KeyError escaped the meter, and the whole cfservices
    # reading failed with every instance dropped from it.
    simulator.inject_fault("drop_guid", count=1, path_prefix="/v3/service_plans")
    with cf_client(simulator) as client:
        reading = CfServicesMeter().snapshot(client)
    managed = {i.guid for i in simulator.foundation.service_instances.values()
               if i.type == "managed"}
    assert reading.complete
    assert {r.natural_id for r in reading.resources} == managed
    assert reading.error is not None and "no valid field 'guid'" in reading.error


def test_user_provided_service_instances_are_not_metered(simulator):
    instances = simulator.foundation.service_instances.values()
    managed = {i.guid for i in instances if i.type == "managed"}
    assert len(managed) < len(instances)  # the foundation has user-provided ones too
    with cf_client(simulator) as client:
        reading = CfServicesMeter().snapshot(client)
    assert reading.complete
    assert {r.natural_id for r in reading.resources} == managed


def test_a_record_without_its_guid_stops_the_meter_with_a_partial_reading(simulator):
    simulator.inject_fault("drop_guid", count=1, path_prefix="/v3/service_instances")
    with cf_client(simulator, per_page=5) as client:
        reading = CfServicesMeter().snapshot(client)
    assert reading.status == "partial"
    assert len(reading.resources) == 4  # the four good records of the first page are kept
    assert reading.error is not None and "missing or invalid field 'guid'" in reading.error


def _processes_of_apps(simulator, app_guids):
    state = simulator.foundation
    return {p.guid for guid in app_guids for p in state.processes_of(guid)}


def test_an_app_record_without_its_guid_keeps_the_processes_of_the_apps_before_it(simulator):
    with cf_client(simulator, per_page=5) as client:
        first_page = [a["guid"] for a in next(client.pages("/v3/apps")).resources]
        simulator.inject_fault("drop_guid", count=1, path_prefix="/v3/apps")
        reading = CfAppsMeter().snapshot(client)
    assert reading.status == "partial"
    assert {r.natural_id for r in reading.resources} == _processes_of_apps(simulator,
                                                                            first_page[:4])
    assert reading.error is not None and "malformed app record after 4 good ones" in reading.error
    assert "'guid'" in reading.error


def test_apps_listing_failing_midway_keeps_the_apps_read_and_says_how_far_it_got(simulator):
    with cf_client(simulator, per_page=5) as client:
        first_page = [a["guid"] for a in next(client.pages("/v3/apps")).resources]
        simulator.inject_fault("503", count=10, path_prefix="/v3/apps", skip=1)
        reading = CfAppsMeter().snapshot(client)
    assert reading.status == "partial"
    assert {r.natural_id for r in reading.resources} == _processes_of_apps(simulator, first_page)
    assert reading.error is not None and "apps listing failed after 5 apps" in reading.error


def test_a_process_record_without_its_guid_fails_the_reading_naming_the_field(simulator):
    # the processes are read whole before any app is observed: a bad one leaves nothing
    simulator.inject_fault("drop_guid", count=1, path_prefix="/v3/processes")
    with cf_client(simulator, per_page=5) as client:
        reading = CfAppsMeter().snapshot(client)
    assert reading.status == "failed" and reading.resources == []
    assert reading.error is not None
    assert "malformed process record after 4 good ones" in reading.error


@pytest.mark.parametrize("enabled", [True, False])
def test_reads_in_many_threads_leave_the_garbage_collector_as_they_found_it(simulator, enabled):
    # decoding pauses the cyclic collector (a page allocates ~100k objects); reads decoding at
    # once in several threads must neither leave it paused nor turn it on
    (gc.enable if enabled else gc.disable)()
    try:
        with cf_client(simulator, per_page=3) as client:
            client.access_token()
            counts: list[int] = []
            threads = [threading.Thread(
                target=lambda path=path: counts.append(len(client.list_all(path).resources)))
                for path in ("/v3/apps", "/v3/processes", "/v3/spaces", "/v3/apps")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert sorted(counts) == sorted([len(simulator.foundation.apps)] * 2 + [
            len(simulator.foundation.processes), len(simulator.foundation.spaces)])
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_threads_reading_at_once_share_one_token_fetch(simulator):
    # a snapshot's lists are read by a thread each: UAA sees one token request, not one each
    with cf_client(simulator) as client:
        threads = [threading.Thread(target=client.list_all, args=(path,))
                   for path in ("/v3/organizations", "/v3/spaces", "/v3/apps", "/v3/processes")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.token_fetches == 1
    assert simulator.token_requests == 1


def test_threads_waiting_for_a_token_fetch_that_failed_do_not_try_again(simulator):
    # UAA down: the first thread's fetch fails after its retries; the threads that waited for
    # it fail with its error at once instead of each repeating the retries
    simulator.inject_fault("503", count=50, path_prefix="/uaa/")
    errors: list[str] = []
    together = threading.Barrier(4)

    def read(path: str) -> None:
        together.wait()  # all four ask for the token while the first fetch is under way
        try:
            client.list_all(path)
        except CfApiError as exc:
            errors.append(str(exc))

    with cf_client(simulator, sleep=lambda _: time.sleep(0.1)) as client:
        client._discover_token_url()  # the API root answers; only the token endpoint is down
        threads = [threading.Thread(target=read, args=(path,))
                   for path in ("/v3/organizations", "/v3/spaces", "/v3/apps", "/v3/processes")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(errors) == 4 and all("oauth/token" in e and "failed 3 times" in e for e in errors)
    assert simulator.faults_served == 3  # one fetch's three attempts, not one per thread
