"""The catalog: customers, tiers, org ownership, resource kinds, prices and agreements, read
from reviewable YAML files (the directory named by BILLING_CATALOG), validated, and loaded into
Postgres in one transaction."""

from billing_dagster.catalog.loading import CatalogLoad, load_catalog
from billing_dagster.catalog.model import (
    Catalog,
    CatalogError,
    Customer,
    Iaa,
    Modification,
    OrgOwnership,
    PriceEntry,
    ResourceKindEntry,
    Tier,
    TierPeriod,
)
from billing_dagster.catalog.reading import CATALOG_FILES, EXAMPLE_CATALOG, read_catalog

__all__ = [
    "CATALOG_FILES",
    "EXAMPLE_CATALOG",
    "Catalog",
    "CatalogError",
    "CatalogLoad",
    "Customer",
    "Iaa",
    "Modification",
    "OrgOwnership",
    "PriceEntry",
    "ResourceKindEntry",
    "Tier",
    "TierPeriod",
    "load_catalog",
    "read_catalog",
]
