"""JSON shapes of v3 resources and usage events (docs/cf-and-uaa.md §4 and §5).

Plain functions from a record to a dict, as the Cloud Controller presenters lay them out: every
data field of the reference, in its order, but only the links a reader follows (self and the
parents), because a 100k-app snapshot is hundreds of megabytes and links are most of the bytes.
``base`` is the API's absolute root URL, e.g. ``http://127.0.0.1:8081``.
"""

from typing import Any

from billing_dagster.simulator.records import (
    App,
    AppUsageEvent,
    Organization,
    Process,
    ServiceBroker,
    ServiceInstance,
    ServiceOffering,
    ServicePlan,
    ServiceUsageEvent,
    Space,
)

Json = dict[str, Any]

_EMPTY_METADATA: Json = {"labels": {}, "annotations": {}}
STACK = "cflinuxfs4"
HIDDEN = "[PRIVATE DATA HIDDEN IN LISTS]"


def _to_one(guid: str | None) -> Json:
    return {"data": {"guid": guid} if guid is not None else None}


def _href(url: str) -> Json:
    return {"href": url}


def present_organization(org: Organization, base: str) -> Json:
    self_url = f"{base}/v3/organizations/{org.guid}"
    return {
        "guid": org.guid,
        "created_at": org.created_at,
        "updated_at": org.created_at,
        "name": org.name,
        "suspended": False,
        "relationships": {"quota": _to_one(org.quota_guid)},
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(self_url),
            "domains": _href(f"{self_url}/domains"),
            "default_domain": _href(f"{self_url}/domains/default"),
            "quota": _href(f"{base}/v3/organization_quotas/{org.quota_guid}"),
        },
    }


def present_space(space: Space, base: str) -> Json:
    self_url = f"{base}/v3/spaces/{space.guid}"
    return {
        "guid": space.guid,
        "created_at": space.created_at,
        "updated_at": space.created_at,
        "name": space.name,
        "relationships": {
            "organization": _to_one(space.organization_guid),
            "quota": {"data": None},
        },
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(self_url),
            "organization": _href(f"{base}/v3/organizations/{space.organization_guid}"),
        },
    }


def present_app(app: App, base: str, buildpack_name: str | None) -> Json:
    self_url = f"{base}/v3/apps/{app.guid}"
    if buildpack_name is None:
        lifecycle: Json = {"type": "docker", "data": {}}
    else:
        lifecycle = {"type": "buildpack", "data": {"buildpacks": [buildpack_name], "stack": STACK}}
    return {
        "guid": app.guid,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
        "name": app.name,
        "state": app.state,
        "lifecycle": lifecycle,
        "relationships": {
            "space": _to_one(app.space_guid),
            "current_droplet": _to_one(app.droplet_guid),
        },
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(self_url),
            "space": _href(f"{base}/v3/spaces/{app.space_guid}"),
            "processes": _href(f"{self_url}/processes"),
        },
    }


def present_process(process: Process, base: str, space_guid: str) -> Json:
    self_url = f"{base}/v3/processes/{process.guid}"
    web = process.type == "web"
    return {
        "guid": process.guid,
        "created_at": process.created_at,
        "updated_at": process.updated_at,
        "version": process.version,
        "type": process.type,
        "command": HIDDEN,
        "user": "vcap",
        "instances": process.instances,
        "memory_in_mb": process.memory_in_mb,
        "disk_in_mb": 1024,
        "log_rate_limit_in_bytes_per_second": -1,
        "health_check": {
            "type": "port" if web else "process",
            "data": {"timeout": None, "invocation_timeout": None, "interval": None},
        },
        "readiness_health_check": {
            "type": "process",
            "data": {"invocation_timeout": None, "interval": None},
        },
        "relationships": {"app": _to_one(process.app_guid), "revision": None},
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(self_url),
            "app": _href(f"{base}/v3/apps/{process.app_guid}"),
            "space": _href(f"{base}/v3/spaces/{space_guid}"),
        },
    }


def present_service_instance(instance: ServiceInstance, base: str) -> Json:
    self_url = f"{base}/v3/service_instances/{instance.guid}"
    operation = instance.last_operation
    body: Json = {
        "guid": instance.guid,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
        "name": instance.name,
        "tags": [],
        "type": instance.type,
        "last_operation": {
            "type": operation,
            "state": "succeeded",
            "description": f"{operation.capitalize()} succeeded",
            "created_at": instance.updated_at,
            "updated_at": instance.updated_at,
        },
    }
    links: Json = {
        "self": _href(self_url),
        "space": _href(f"{base}/v3/spaces/{instance.space_guid}"),
    }
    if instance.type == "managed":
        body["maintenance_info"] = {}
        body["upgrade_available"] = False
        body["dashboard_url"] = None
        body["relationships"] = {
            "space": _to_one(instance.space_guid),
            "service_plan": _to_one(instance.plan_guid),
        }
        links["service_plan"] = _href(f"{base}/v3/service_plans/{instance.plan_guid}")
    else:
        body["syslog_drain_url"] = None
        body["route_service_url"] = None
        body["relationships"] = {"space": _to_one(instance.space_guid)}
        links["credentials"] = _href(f"{self_url}/credentials")
    body["metadata"] = _EMPTY_METADATA
    body["links"] = links
    return body


def present_service_plan(plan: ServicePlan, base: str) -> Json:
    self_url = f"{base}/v3/service_plans/{plan.guid}"
    return {
        "guid": plan.guid,
        "created_at": plan.created_at,
        "updated_at": plan.created_at,
        "name": plan.name,
        "visibility_type": "public",
        "available": True,
        "free": plan.free,
        "costs": [],
        "description": plan.description,
        "maintenance_info": {},
        "broker_catalog": {
            "id": plan.guid,
            "metadata": {},
            "maximum_polling_duration": None,
            "features": {"bindable": True, "plan_updateable": True},
        },
        "schemas": {
            "service_instance": {"create": {"parameters": {}}, "update": {"parameters": {}}},
            "service_binding": {"create": {"parameters": {}}},
        },
        "relationships": {"service_offering": _to_one(plan.offering_guid)},
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(self_url),
            "service_offering": _href(f"{base}/v3/service_offerings/{plan.offering_guid}"),
            "visibility": _href(f"{self_url}/visibility"),
        },
    }


def present_service_offering(offering: ServiceOffering, base: str) -> Json:
    self_url = f"{base}/v3/service_offerings/{offering.guid}"
    return {
        "guid": offering.guid,
        "created_at": offering.created_at,
        "updated_at": offering.created_at,
        "name": offering.name,
        "description": offering.description,
        "available": True,
        "tags": list(offering.tags),
        "requires": [],
        "shareable": True,
        "documentation_url": offering.documentation_url,
        "broker_catalog": {
            "id": offering.guid,
            "metadata": {"documentationUrl": offering.documentation_url},
            "features": {
                "plan_updateable": True,
                "bindable": True,
                "instances_retrievable": False,
                "bindings_retrievable": False,
                "allow_context_updates": False,
            },
        },
        "relationships": {"service_broker": _to_one(offering.broker_guid)},
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(self_url),
            "service_plans": _href(
                f"{base}/v3/service_plans?service_offering_guids={offering.guid}"
            ),
            "service_broker": _href(f"{base}/v3/service_brokers/{offering.broker_guid}"),
        },
    }


def present_service_broker(broker: ServiceBroker, base: str) -> Json:
    return {
        "guid": broker.guid,
        "created_at": broker.created_at,
        "updated_at": broker.created_at,
        "name": broker.name,
        "url": broker.url,
        "relationships": {},
        "metadata": _EMPTY_METADATA,
        "links": {
            "self": _href(f"{base}/v3/service_brokers/{broker.guid}"),
            "service_offerings": _href(
                f"{base}/v3/service_offerings?service_broker_guids={broker.guid}"
            ),
        },
    }


def present_app_usage_event(event: AppUsageEvent, base: str) -> Json:
    return {
        "guid": event.guid,
        "created_at": event.created_at,
        "updated_at": event.created_at,
        "state": {"current": event.state, "previous": event.previous_state},
        "app": {"guid": event.app_guid, "name": event.app_name},
        "process": {"guid": event.process_guid, "type": event.process_type},
        "space": {"guid": event.space_guid, "name": event.space_name},
        "organization": {"guid": event.organization_guid},
        "buildpack": {"guid": event.buildpack_guid, "name": event.buildpack_name},
        "task": {"guid": None, "name": None},
        "memory_in_mb_per_instance": {
            "current": event.memory_in_mb_per_instance,
            "previous": event.previous_memory_in_mb_per_instance,
        },
        "instance_count": {
            "current": event.instance_count,
            "previous": event.previous_instance_count,
        },
        "links": {"self": _href(f"{base}/v3/app_usage_events/{event.guid}")},
    }


def present_service_usage_event(event: ServiceUsageEvent, base: str) -> Json:
    return {
        "guid": event.guid,
        "created_at": event.created_at,
        "updated_at": event.created_at,
        "state": event.state,
        "space": {"guid": event.space_guid, "name": event.space_name},
        "organization": {"guid": event.organization_guid},
        "service_instance": {
            "guid": event.service_instance_guid,
            "name": event.service_instance_name,
            "type": event.service_instance_type,
        },
        "service_plan": {"guid": event.service_plan_guid, "name": event.service_plan_name},
        "service_offering": {
            "guid": event.service_offering_guid,
            "name": event.service_offering_name,
        },
        "service_broker": {"guid": event.service_broker_guid, "name": event.service_broker_name},
        "links": {"self": _href(f"{base}/v3/service_usage_events/{event.guid}")},
    }
