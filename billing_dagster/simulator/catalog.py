"""The static part of a simulated foundation: brokers, offerings, plans, buildpacks, names.

Offerings and plans follow cloud.gov's real catalog where it is known (docs/cf-and-uaa.md §7.1
says which names are not). Their guids are derived from their names, not from the foundation's
seed, so every simulated foundation shares one service catalog and a billing catalog file can
name a plan by guid or name.
"""

import hashlib
import uuid
from dataclasses import dataclass

from billing_dagster.simulator.records import (
    Buildpack,
    ServiceBroker,
    ServiceOffering,
    ServicePlan,
)


def stable_guid(*parts: str) -> str:
    """A version-4-shaped guid that depends only on ``parts`` (same across seeds and runs)."""
    digest = hashlib.sha256("/".join(("cf-simulator", *parts)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


@dataclass(frozen=True, slots=True)
class OfferingSpec:
    """One service offering of the catalog and how common its instances are."""

    name: str
    broker: str
    description: str
    tags: tuple[str, ...]
    documentation_url: str
    weight: int
    """Relative share of new managed instances that use this offering."""
    plans: tuple[str, ...]
    """Plan names, most common first (new instances favour the first ones)."""
    free_plans: tuple[str, ...] = ()


BROKER_URLS: dict[str, str] = {
    "aws-broker": "https://aws-broker.fr.cloud.gov",
    "s3-broker": "https://s3-broker.fr.cloud.gov",
    "external-domain-broker": "https://external-domain-broker.fr.cloud.gov",
    "app-autoscaler-broker": "https://app-autoscaler-broker.fr.cloud.gov",
}

OFFERING_SPECS: tuple[OfferingSpec, ...] = (
    OfferingSpec(
        name="aws-rds",
        broker="aws-broker",
        description="Persistent Relational Database",
        tags=("database", "RDS"),
        documentation_url="https://cloud.gov/docs/services/relational-database/",
        weight=35,
        plans=(
            "micro-psql", "small-psql", "medium-psql", "medium-gp-psql", "micro-mysql",
            "small-mysql", "micro-psql-redundant", "small-psql-redundant",
            "medium-psql-redundant", "medium-mysql", "medium-gp-mysql", "large-gp-psql",
            "xlarge-gp-psql",
        ),
        free_plans=("micro-psql", "micro-mysql"),
    ),
    OfferingSpec(
        name="aws-elasticache-redis",
        broker="aws-broker",
        description="AWS ElastiCache Redis",
        tags=("redis", "Elasticache"),
        documentation_url="https://cloud.gov/docs/services/aws-elasticache/",
        weight=10,
        plans=("redis-dev", "redis-3node", "redis-5node", "redis-3node-large", "redis-5node-large"),
    ),
    OfferingSpec(
        name="aws-elasticsearch",
        broker="aws-broker",
        description="AWS OpenSearch",
        tags=("elasticsearch", "opensearch"),
        documentation_url="https://cloud.gov/docs/services/aws-elasticsearch/",
        weight=5,
        plans=("es-dev", "es-medium", "es-medium-ha", "es-large", "es-large-ha", "es-xlarge"),
    ),
    OfferingSpec(
        name="s3",
        broker="s3-broker",
        description="Use Amazon S3 buckets to store and retrieve objects",
        tags=("s3", "object-storage"),
        documentation_url="https://cloud.gov/docs/services/s3/",
        weight=25,
        plans=("basic", "basic-public", "basic-sandbox", "basic-public-sandbox"),
        free_plans=("basic-sandbox", "basic-public-sandbox"),
    ),
    OfferingSpec(
        name="external-domain",
        broker="external-domain-broker",
        description="Custom domains with TLS, optionally behind a CDN",
        tags=("domain", "cdn"),
        documentation_url="https://cloud.gov/docs/services/external-domain-service/",
        weight=10,
        plans=("domain-with-cdn", "domain", "domain-with-org-lb", "domain-with-cdn-dedicated-waf"),
    ),
    OfferingSpec(
        name="app-autoscaler",
        broker="app-autoscaler-broker",
        description="Automatically increase or decrease the number of application instances",
        tags=("autoscaler",),
        documentation_url="https://cloud.gov/docs/services/app-autoscaler/",
        weight=15,
        plans=("autoscaler-free-plan",),
        free_plans=("autoscaler-free-plan",),
    ),
    OfferingSpec(
        name="aws-ses",
        broker="aws-broker",
        description="Send email through Amazon SES",
        tags=("email", "ses"),
        documentation_url="https://cloud.gov/docs/services/aws-ses/",
        weight=5,
        plans=("base",),
    ),
)

BUILDPACK_NAMES: tuple[str, ...] = (
    "python_buildpack", "nodejs_buildpack", "ruby_buildpack", "java_buildpack", "go_buildpack",
    "staticfile_buildpack", "php_buildpack", "binary_buildpack",
)

AGENCIES: tuple[str, ...] = (
    "gsa", "tts", "18f", "doi", "doe", "ed", "hhs", "nasa", "nsf", "opm", "sba", "usda", "va",
    "dol", "fec", "ftc", "epa", "nih", "cms", "fda", "noaa", "usgs", "nps", "irs", "ssa",
)

WORDS: tuple[str, ...] = (
    "benefits", "grants", "forms", "search", "notify", "login", "data", "reports", "portal",
    "claims", "permits", "analytics", "directory", "feedback", "jobs", "maps", "budget",
    "inventory", "records", "schedule", "payments", "docs", "status", "alerts", "catalog",
    "survey", "training", "intake", "review", "audit",
)

APP_ROLES: tuple[str, ...] = ("api", "web", "worker", "frontend", "admin", "cron", "proxy", "etl")

SPACE_NAMES: tuple[str, ...] = ("prod", "staging", "dev", "test", "sandbox", "demo", "qa")

INSTANCE_CHOICES: tuple[int, ...] = (1, 1, 1, 1, 2, 2, 2, 3, 4)
MEMORY_CHOICES: tuple[int, ...] = (64, 128, 128, 256, 256, 256, 512, 512, 512, 1024, 1024, 2048)
MEMORY_SIZES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)


@dataclass(frozen=True, slots=True)
class Catalog:
    """The resolved catalog objects of one foundation, keyed by guid in creation order."""

    brokers: dict[str, ServiceBroker]
    offerings: dict[str, ServiceOffering]
    plans: dict[str, ServicePlan]
    buildpacks: dict[str, Buildpack]
    plans_by_offering: dict[str, tuple[str, ...]]
    """Offering guid -> its plan guids, most common first."""
    offering_weights: tuple[tuple[str, int], ...]
    """(offering guid, weight) for choosing the offering of a new managed instance."""

    def buildpack_named(self, name: str) -> Buildpack:
        return self.buildpacks[stable_guid("buildpack", name)]


def build_catalog(created_at: str) -> Catalog:
    """Create the brokers, offerings, plans and buildpacks, all stamped ``created_at``."""
    brokers: dict[str, ServiceBroker] = {}
    for name, url in BROKER_URLS.items():
        guid = stable_guid("broker", name)
        brokers[guid] = ServiceBroker(guid=guid, name=name, url=url, created_at=created_at)
    offerings: dict[str, ServiceOffering] = {}
    plans: dict[str, ServicePlan] = {}
    plans_by_offering: dict[str, tuple[str, ...]] = {}
    weights: list[tuple[str, int]] = []
    for spec in OFFERING_SPECS:
        offering_guid = stable_guid("offering", spec.name)
        offerings[offering_guid] = ServiceOffering(
            guid=offering_guid,
            name=spec.name,
            description=spec.description,
            tags=spec.tags,
            documentation_url=spec.documentation_url,
            broker_guid=stable_guid("broker", spec.broker),
            created_at=created_at,
        )
        plan_guids = []
        for plan_name in spec.plans:
            plan_guid = stable_guid("plan", spec.name, plan_name)
            plans[plan_guid] = ServicePlan(
                guid=plan_guid,
                name=plan_name,
                description=f"{spec.name} {plan_name}",
                free=plan_name in spec.free_plans,
                offering_guid=offering_guid,
                created_at=created_at,
            )
            plan_guids.append(plan_guid)
        plans_by_offering[offering_guid] = tuple(plan_guids)
        weights.append((offering_guid, spec.weight))
    buildpacks = {}
    for name in BUILDPACK_NAMES:
        guid = stable_guid("buildpack", name)
        buildpacks[guid] = Buildpack(guid=guid, name=name)
    return Catalog(
        brokers=brokers,
        offerings=offerings,
        plans=plans,
        buildpacks=buildpacks,
        plans_by_offering=plans_by_offering,
        offering_weights=tuple(weights),
    )
