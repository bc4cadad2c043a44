"""The Cloud Controller v3 subset: root documents, resource lists, usage events, purges.

Lists follow docs/cf-and-uaa.md §3: ``page``/``per_page`` (default 50, at most 5000), a
``pagination`` block with absolute hrefs that keep the caller's filters, insertion (id) order
unless ``order_by`` is given, comma-separated filter values, ``include`` where CC has it, and
unknown parameters rejected (400 CF-BadQueryParameter; 422 CF-UnprocessableEntity on the usage
event lists). Only the filters listed per collection here are implemented; any other parameter
is refused rather than silently ignored.

Handlers run under the simulator's foundation lock; authentication happens before, in the server.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from urllib.parse import urlencode

from billing_dagster.simulator.event_log import UnknownEventGuid
from billing_dagster.simulator.foundation import Foundation
from billing_dagster.simulator.gc_pause import paused_gc
from billing_dagster.simulator.presenters import (
    Json,
    present_app,
    present_app_usage_event,
    present_organization,
    present_process,
    present_service_broker,
    present_service_instance,
    present_service_offering,
    present_service_plan,
    present_service_usage_event,
    present_space,
)
from billing_dagster.simulator.responses import (
    ApiError,
    Response,
    bad_query_parameter,
    json_response,
    not_authorized,
    resource_not_found,
    unprocessable,
)

API_VERSION = "3.228.0"
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 5000
READ_SCOPES = frozenset({
    "cloud_controller.admin", "cloud_controller.admin_read_only",
    "cloud_controller.global_auditor", "cloud_controller.read",
})
GLOBAL_READ_SCOPES = frozenset({
    "cloud_controller.admin", "cloud_controller.admin_read_only",
    "cloud_controller.global_auditor",
})
ADMIN_SCOPE = "cloud_controller.admin"
V3_RESOURCES = (
    "app_usage_events", "apps", "audit_events", "buildpacks", "builds", "deployments", "domains",
    "droplets", "environment_variable_groups", "feature_flags", "info", "isolation_segments",
    "organizations", "organization_quotas", "packages", "processes", "resource_matches", "roles",
    "routes", "security_groups", "service_brokers", "service_instances",
    "service_credential_bindings", "service_offerings", "service_plans",
    "service_route_bindings", "service_usage_events", "spaces", "space_quotas", "stacks",
    "tasks", "users",
)
PUBLIC_PATHS = frozenset({"/", "/v3", "/v3/info"})

Row = Any
RowFilter = Callable[[Row], bool]
FilterFactory = Callable[[Foundation, str], RowFilter]
"""(foundation, raw query value) -> predicate over rows; may raise ApiError for bad values."""
Presenter = Callable[[Foundation, str], Callable[[Row], Json]]
"""(foundation, base url) -> function presenting one row."""
Includer = Callable[[Foundation, list[Row], str], dict[str, list[Json]]]
"""(foundation, rows of the page, base url) -> the ``included`` lists it adds."""


@dataclass(frozen=True, slots=True)
class CcRequest:
    method: str
    path: str
    query: Mapping[str, str]
    """Last value of each query parameter, decoded."""
    base: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Collection:
    """One resource list (``/v3/<name>``) and its single-resource route."""

    name: str
    label: str
    """Singular for errors: "App not found"."""
    rows: Callable[[Foundation], Mapping[str, Row]]
    presenter: Presenter
    filters: Mapping[str, FilterFactory]
    order_by: tuple[str, ...]
    includes: Mapping[str, Includer] = field(default_factory=dict)


# -- filters -------------------------------------------------------------------------------


def _values(raw: str) -> frozenset[str]:
    return frozenset(value for value in raw.split(",") if value)


def _attr_in(attribute: str) -> FilterFactory:
    get = attrgetter(attribute)

    def factory(_: Foundation, raw: str) -> RowFilter:
        values = _values(raw)
        return lambda row: get(row) in values

    return factory


def _spaces_of_orgs(foundation: Foundation, raw: str) -> frozenset[str]:
    orgs = _values(raw)
    return frozenset(s.guid for s in foundation.spaces.values() if s.organization_guid in orgs)


def _space_in_orgs(foundation: Foundation, raw: str) -> RowFilter:
    spaces = _spaces_of_orgs(foundation, raw)
    return lambda row: row.space_guid in spaces


def _process_space_in(foundation: Foundation, raw: str) -> RowFilter:
    spaces = _values(raw)
    apps = foundation.apps
    return lambda process: apps[process.app_guid].space_guid in spaces


def _process_org_in(foundation: Foundation, raw: str) -> RowFilter:
    spaces = _spaces_of_orgs(foundation, raw)
    apps = foundation.apps
    return lambda process: apps[process.app_guid].space_guid in spaces


def _instance_type(_: Foundation, raw: str) -> RowFilter:
    if raw not in ("managed", "user-provided"):
        raise bad_query_parameter("Type must be one of 'managed', 'user-provided'")
    return lambda instance: instance.type == raw


def _instance_plan_names(foundation: Foundation, raw: str) -> RowFilter:
    names = _values(raw)
    plans = frozenset(p.guid for p in foundation.service_plans.values() if p.name in names)
    return lambda instance: instance.plan_guid in plans


def _offerings_of_brokers(foundation: Foundation, brokers: frozenset[str]) -> frozenset[str]:
    return frozenset(
        o.guid for o in foundation.service_offerings.values() if o.broker_guid in brokers
    )


def _broker_guids_by_name(foundation: Foundation, raw: str) -> frozenset[str]:
    names = _values(raw)
    return frozenset(b.guid for b in foundation.service_brokers.values() if b.name in names)


def _plan_offering_names(foundation: Foundation, raw: str) -> RowFilter:
    names = _values(raw)
    offerings = frozenset(
        o.guid for o in foundation.service_offerings.values() if o.name in names
    )
    return lambda plan: plan.offering_guid in offerings


def _plan_broker_guids(foundation: Foundation, raw: str) -> RowFilter:
    offerings = _offerings_of_brokers(foundation, _values(raw))
    return lambda plan: plan.offering_guid in offerings


def _plan_broker_names(foundation: Foundation, raw: str) -> RowFilter:
    offerings = _offerings_of_brokers(foundation, _broker_guids_by_name(foundation, raw))
    return lambda plan: plan.offering_guid in offerings


def _offering_broker_names(foundation: Foundation, raw: str) -> RowFilter:
    brokers = _broker_guids_by_name(foundation, raw)
    return lambda offering: offering.broker_guid in brokers


def _available(_: Foundation, raw: str) -> RowFilter:
    if raw not in ("true", "false"):
        raise bad_query_parameter("Available must be a boolean")
    # Every simulated plan and offering is available.
    return lambda row: raw == "true"


# -- includes ------------------------------------------------------------------------------


def _by_creation(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: (row.created_at, row.guid))


def _spaces_of(foundation: Foundation, guids: list[str]) -> list[Row]:
    spaces = foundation.spaces
    return _by_creation([spaces[guid] for guid in dict.fromkeys(guids)])


def _orgs_of(foundation: Foundation, spaces: list[Row]) -> list[Row]:
    orgs = foundation.organizations
    return _by_creation([orgs[guid] for guid in dict.fromkeys(s.organization_guid for s in spaces)])


def _include_app_space(foundation: Foundation, apps: list[Row], base: str) -> dict[str, list[Json]]:
    spaces = _spaces_of(foundation, [app.space_guid for app in apps])
    return {"spaces": [present_space(space, base) for space in spaces]}


def _include_app_space_org(
    foundation: Foundation, apps: list[Row], base: str
) -> dict[str, list[Json]]:
    spaces = _spaces_of(foundation, [app.space_guid for app in apps])
    return {
        "spaces": [present_space(space, base) for space in spaces],
        "organizations": [present_organization(o, base) for o in _orgs_of(foundation, spaces)],
    }


def _include_space_org(
    foundation: Foundation, spaces: list[Row], base: str
) -> dict[str, list[Json]]:
    return {"organizations": [present_organization(o, base)
                              for o in _orgs_of(foundation, spaces)]}


def _include_plan_offering(
    foundation: Foundation, plans: list[Row], base: str
) -> dict[str, list[Json]]:
    offerings = foundation.service_offerings
    chosen = [offerings[guid] for guid in dict.fromkeys(plan.offering_guid for plan in plans)]
    return {"service_offerings": [present_service_offering(o, base)
                                  for o in _by_creation(chosen)]}


def _include_plan_space_org(_: Foundation, __: list[Row], ___: str) -> dict[str, list[Json]]:
    # All simulated brokers are global: no plan belongs to a space.
    return {"spaces": [], "organizations": []}


# -- collections ---------------------------------------------------------------------------


def _app_presenter(foundation: Foundation, base: str) -> Callable[[Row], Json]:
    buildpacks = foundation.buildpacks

    def present(app: Row) -> Json:
        buildpack = buildpacks[app.buildpack_guid].name if app.buildpack_guid else None
        return present_app(app, base, buildpack)

    return present


def _process_presenter(foundation: Foundation, base: str) -> Callable[[Row], Json]:
    apps = foundation.apps
    return lambda process: present_process(process, base, apps[process.app_guid].space_guid)


def _plain(present: Callable[[Any, str], Json]) -> Presenter:
    return lambda _, base: lambda row: present(row, base)


_GUIDS = {"guids": _attr_in("guid")}
_NAMED = {**_GUIDS, "names": _attr_in("name")}
_TIMESTAMPED = ("created_at", "updated_at")

COLLECTIONS: dict[str, Collection] = {c.name: c for c in (
    Collection(
        "organizations", "Organization", lambda f: f.organizations,
        _plain(present_organization), _NAMED, (*_TIMESTAMPED, "name"),
    ),
    Collection(
        "spaces", "Space", lambda f: f.spaces, _plain(present_space),
        {**_NAMED, "organization_guids": _attr_in("organization_guid")},
        (*_TIMESTAMPED, "name"), {"organization": _include_space_org},
    ),
    Collection(
        "apps", "App", lambda f: f.apps, _app_presenter,
        {**_NAMED, "space_guids": _attr_in("space_guid"), "organization_guids": _space_in_orgs},
        (*_TIMESTAMPED, "name", "state"),
        {"space": _include_app_space, "space.organization": _include_app_space_org},
    ),
    Collection(
        "processes", "Process", lambda f: f.processes, _process_presenter,
        {**_GUIDS, "types": _attr_in("type"), "app_guids": _attr_in("app_guid"),
         "space_guids": _process_space_in, "organization_guids": _process_org_in},
        _TIMESTAMPED,
    ),
    Collection(
        "service_instances", "Service instance", lambda f: f.service_instances,
        _plain(present_service_instance),
        {**_NAMED, "type": _instance_type, "space_guids": _attr_in("space_guid"),
         "organization_guids": _space_in_orgs, "service_plan_guids": _attr_in("plan_guid"),
         "service_plan_names": _instance_plan_names},
        (*_TIMESTAMPED, "name"),
    ),
    Collection(
        "service_plans", "Service plan", lambda f: f.service_plans,
        _plain(present_service_plan),
        {**_NAMED, "available": _available,
         "service_offering_guids": _attr_in("offering_guid"),
         "service_offering_names": _plan_offering_names,
         "service_broker_guids": _plan_broker_guids,
         "service_broker_names": _plan_broker_names},
        (*_TIMESTAMPED, "name"),
        {"service_offering": _include_plan_offering, "space.organization": _include_plan_space_org},
    ),
    Collection(
        "service_offerings", "Service offering", lambda f: f.service_offerings,
        _plain(present_service_offering),
        {**_NAMED, "available": _available, "service_broker_guids": _attr_in("broker_guid"),
         "service_broker_names": _offering_broker_names},
        (*_TIMESTAMPED, "name"),
    ),
    Collection(
        "service_brokers", "Service broker", lambda f: f.service_brokers,
        _plain(present_service_broker), _NAMED, (*_TIMESTAMPED, "name"),
    ),
)}


@dataclass(frozen=True, slots=True)
class EventStream:
    """One usage event list; its parameter errors are 422, not 400 (docs/cf-and-uaa.md §3.2)."""

    name: str
    label: str
    rows_after: Callable[[Foundation, str | None], list[Row]]
    lookup: Callable[[Foundation, str], Row | None]
    present: Callable[[Any, str], Json]
    purge: Callable[[Foundation], None]
    filters: Mapping[str, FilterFactory]


EVENT_STREAMS: dict[str, EventStream] = {s.name: s for s in (
    EventStream(
        "app_usage_events", "app usage event",
        lambda f, after: f.app_events_after(after), lambda f, guid: f.app_event(guid),
        present_app_usage_event, lambda f: f.purge_and_reseed_app_events(), _GUIDS,
    ),
    EventStream(
        "service_usage_events", "service usage event",
        lambda f, after: f.service_events_after(after), lambda f, guid: f.service_event(guid),
        present_service_usage_event, lambda f: f.purge_and_reseed_service_events(),
        {**_GUIDS, "service_instance_types": _attr_in("service_instance_type"),
         "service_offering_guids": _attr_in("service_offering_guid")},
    ),
)}


# -- routing -------------------------------------------------------------------------------


def requires_auth(path: str) -> bool:
    """Everything under /v3/ except /v3/info needs a token; / and /v3 do not."""
    return path not in PUBLIC_PATHS and path.startswith("/v3/")


def handle(foundation: Foundation, request: CcRequest) -> Response:
    """Answer one Cloud Controller request (already authenticated if it needs to be)."""
    try:
        with paused_gc():
            return _route(foundation, request)
    except ApiError as error:
        return error.response()


def _route(foundation: Foundation, request: CcRequest) -> Response:
    path, method = request.path, request.method
    if method == "GET" and path in PUBLIC_PATHS:
        return json_response(200, _public_document(path, request.base))
    parts = path.split("/")[2:] if path.startswith("/v3/") else []
    if method == "GET" and parts:
        if not request.scopes & READ_SCOPES:
            raise not_authorized()
        collection = COLLECTIONS.get(parts[0])
        if collection is not None and len(parts) == 1:
            return _list_collection(foundation, collection, request)
        if collection is not None and len(parts) == 2:
            row = collection.rows(foundation).get(parts[1])
            if row is None:
                raise resource_not_found(f"{collection.label} not found")
            return json_response(200, collection.presenter(foundation, request.base)(row))
        stream = EVENT_STREAMS.get(parts[0])
        if stream is not None and len(parts) == 1:
            return _list_events(foundation, stream, request)
        if stream is not None and len(parts) == 2:
            event = stream.lookup(foundation, parts[1])
            if event is None or not request.scopes & GLOBAL_READ_SCOPES:
                raise resource_not_found(f"{stream.label.capitalize()} not found")
            return json_response(200, stream.present(event, request.base))
    if (method == "POST" and len(parts) == 3 and parts[0] in EVENT_STREAMS
            and parts[1:] == ["actions", "destructively_purge_all_and_reseed"]):
        if ADMIN_SCOPE not in request.scopes:
            raise not_authorized()
        EVENT_STREAMS[parts[0]].purge(foundation)
        return json_response(200, {})
    raise resource_not_found("Unknown request")


def _public_document(path: str, base: str) -> Json:
    if path == "/":
        return {"links": {
            "self": {"href": base},
            "bits_service": None,
            "cloud_controller_v2": None,
            "cloud_controller_v3": {"href": f"{base}/v3", "meta": {"version": API_VERSION}},
            "network_policy_v0": {"href": f"{base}/networking/v0/external"},
            "network_policy_v1": {"href": f"{base}/networking/v1/external"},
            "login": {"href": f"{base}/uaa"},
            "uaa": {"href": f"{base}/uaa"},
            "credhub": None,
            "routing": None,
            "logging": None,
            "log_cache": None,
            "log_stream": None,
            "app_ssh": None,
        }}
    if path == "/v3":
        links = {"self": {"href": f"{base}/v3"}}
        links.update({name: {"href": f"{base}/v3/{name}"} for name in V3_RESOURCES})
        return {"links": links}
    return {
        "build": "cf-simulator",
        "cli_version": {"minimum": "", "recommended": ""},
        "custom": {},
        "description": "Simulated cloud.gov foundation (billing-dagster tests)",
        "name": "cf-simulator",
        "version": 0,
        "osbapi_version": "2.15",
        "rate_limits": {"enabled": False, "general_limit": 2000, "reset_interval_in_minutes": 60},
        "links": {"self": {"href": f"{base}/v3/info"},
                  "support": {"href": "https://cloud.gov/docs/help/"}},
    }


# -- lists ---------------------------------------------------------------------------------


def _check_params(
    request: CcRequest, allowed: list[str], error: Callable[[str], ApiError]
) -> None:
    unknown = [key for key in request.query if key not in allowed]
    if unknown:
        raise error(
            "Unknown query parameter(s): "
            + ", ".join(f"'{key}'" for key in unknown)
            + ". Valid parameters are: "
            + ", ".join(f"'{key}'" for key in allowed)
        )


def _page_params(request: CcRequest, error: Callable[[str], ApiError]) -> tuple[int, int]:
    def number(key: str, default: int) -> int:
        raw = request.query.get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            return -1

    page, per_page = number("page", 1), number("per_page", DEFAULT_PER_PAGE)
    if page < 1:
        raise error("Page must be greater than 0")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise error(f"Per page must be between 1 and {MAX_PER_PAGE}")
    return page, per_page


def _ordered(rows: list[Row], request: CcRequest, allowed: tuple[str, ...],
             error: Callable[[str], ApiError]) -> list[Row]:
    raw = request.query.get("order_by")
    if raw is None:
        return rows
    raw = raw.strip()  # a "+" prefix arrives as a space when not percent-encoded
    descending = raw.startswith("-")
    name = raw.lstrip("+-")
    if name not in allowed:
        raise error("Order by can only be: " + ", ".join(f"'{key}'" for key in allowed))
    # Records that never change (catalog, orgs, spaces) have no updated_at: it equals created_at.

    def key(row: Row) -> tuple[str, str]:
        return getattr(row, name, row.created_at), row.guid

    return sorted(rows, key=key, reverse=descending)


def _pagination(request: CcRequest, total: int, page: int, per_page: int) -> Json:
    params = {key: value for key, value in request.query.items()
              if key not in ("page", "per_page")}
    params["per_page"] = str(per_page)
    total_pages = max(1, math.ceil(total / per_page))

    def link(number: int) -> Json:
        query = urlencode(sorted({**params, "page": str(number)}.items()))
        return {"href": f"{request.base}{request.path}?{query}"}

    return {
        "total_results": total,
        "total_pages": total_pages,
        "first": link(1),
        "last": link(total_pages),
        "next": link(page + 1) if page < total_pages else None,
        "previous": link(page - 1) if page > 1 else None,
    }


def _select(
    foundation: Foundation,
    rows: list[Row],
    request: CcRequest,
    filters: Mapping[str, FilterFactory],
) -> list[Row]:
    predicates = [filters[key](foundation, value)
                  for key, value in request.query.items() if key in filters]
    for predicate in predicates:
        rows = [row for row in rows if predicate(row)]
    return rows


def _list_collection(foundation: Foundation, collection: Collection,
                     request: CcRequest) -> Response:
    error = bad_query_parameter
    allowed = ["page", "per_page", "order_by", *collection.filters]
    if collection.includes:
        allowed.append("include")
    _check_params(request, allowed, error)
    page, per_page = _page_params(request, error)
    includes: list[Includer] = []
    if "include" in request.query:
        for name in _values(request.query["include"]):
            includer = collection.includes.get(name)
            if includer is None:
                raise error(
                    f"Invalid included resource: '{name}'. Valid included resources are: "
                    + ", ".join(f"'{key}'" for key in collection.includes)
                )
            includes.append(includer)
    rows = _select(foundation, list(collection.rows(foundation).values()), request,
                   collection.filters)
    rows = _ordered(rows, request, collection.order_by, error)
    chosen = rows[(page - 1) * per_page: page * per_page]
    present = collection.presenter(foundation, request.base)
    body: Json = {
        "pagination": _pagination(request, len(rows), page, per_page),
        "resources": [present(row) for row in chosen],
    }
    if includes:
        included: dict[str, list[Json]] = {}
        for includer in includes:
            included.update(includer(foundation, chosen, request.base))
        body["included"] = included
    return json_response(200, body)


def _list_events(foundation: Foundation, stream: EventStream, request: CcRequest) -> Response:
    error = unprocessable
    if "updated_ats" in request.query:
        raise error("Filtering by 'updated_ats' is not allowed on this resource.")
    _check_params(request, ["page", "per_page", "order_by", "after_guid", *stream.filters],
                  error)
    page, per_page = _page_params(request, error)
    after_guid = request.query.get("after_guid")
    if after_guid is not None and "," in after_guid:
        raise error("After guid filter accepts only one guid")
    try:
        rows = stream.rows_after(foundation, after_guid)
    except UnknownEventGuid:
        raise error(f"After guid filter must be a valid {stream.label} guid.") from None
    if not request.scopes & GLOBAL_READ_SCOPES:
        rows = []
    rows = _select(foundation, rows, request, stream.filters)
    rows = _ordered(rows, request, ("created_at",), error)
    chosen = rows[(page - 1) * per_page: page * per_page]
    return json_response(200, {
        "pagination": _pagination(request, len(rows), page, per_page),
        "resources": [stream.present(row, request.base) for row in chosen],
    })
