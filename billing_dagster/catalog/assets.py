"""The catalog asset: the catalog files validated and loaded into Postgres."""

import os
from pathlib import Path
from typing import Any

import dagster as dg

from billing_dagster.catalog.loading import CatalogLoad, load_catalog
from billing_dagster.catalog.model import CatalogError
from billing_dagster.catalog.reading import EXAMPLE_CATALOG, read_catalog
from billing_dagster.resources import BillingDatabase


def catalog_directory(configured: str | None = None) -> Path:
    """The catalog to load: the run's config, else BILLING_CATALOG. There is deliberately no
    fallback to the example catalog: production must never price with example prices by
    accident (`make run` and `make dev` set BILLING_CATALOG to the example themselves)."""
    directory = configured or os.environ.get("BILLING_CATALOG")
    if not directory:
        raise dg.Failure(description="BILLING_CATALOG is not set: set it to the catalog "
                                     f"directory (the example is {EXAMPLE_CATALOG})",
                         allow_retries=False)
    return Path(directory)


class CatalogConfig(dg.Config):
    directory: str | None = None
    """The catalog directory; unset: BILLING_CATALOG when the run starts."""


@dg.asset(group_name="catalog", kinds={"postgres", "yaml"})
def billing_catalog(context: dg.AssetExecutionContext, config: CatalogConfig,
                    db: BillingDatabase) -> dg.MaterializeResult:
    """The reference data: tiers, customers and the CF orgs they own, resource kinds, prices
    and agreements, read from the catalog's YAML files, validated, and loaded in one
    transaction. Each load that changes something is one row of billing.catalog_load, with the
    instants whose price changed and, per org, the instants whose owner changed (re-priced by
    the repricing sensor). A bad catalog fails the run with every problem listed, writing
    nothing."""
    directory = catalog_directory(config.directory)
    if directory == EXAMPLE_CATALOG:
        context.log.info(f"loading the example catalog {directory}")
    try:
        catalog = read_catalog(directory)
        with db.connect() as conn:
            loaded = load_catalog(conn, catalog)
    except CatalogError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False,
                         metadata={"problems": dg.MetadataValue.json(exc.problems)}) from exc
    aliases = {org.guid: org.alias for _, org in catalog.ownerships}
    changed_orgs = [f"{aliases[guid]} ({guid})" if aliases.get(guid) else guid
                    for guid in loaded.changed_orgs]
    context.log.info(f"catalog {loaded.source}: "
                     + ("unchanged" if loaded.unchanged else
                        f"load {loaded.catalog_load_id}, {len(loaded.changed_prices)} changed "
                        f"price ranges, orgs whose owner changed: {changed_orgs}"))
    return dg.MaterializeResult(metadata=_metadata(loaded, changed_orgs))


def _metadata(loaded: CatalogLoad, changed_orgs: list[str]) -> dict[str, Any]:
    return {
        "source": dg.MetadataValue.path(loaded.source),
        "checksum": loaded.checksum,
        "catalog_load_id": loaded.catalog_load_id,
        "unchanged": loaded.unchanged,
        **loaded.summary(),
        "changed_prices": dg.MetadataValue.json([
            [start.isoformat(), end.isoformat() if end else None]
            for start, end in loaded.changed_prices]),
        "changed_orgs": dg.MetadataValue.json(changed_orgs),
    }


@dg.sensor(name="catalog_file_sensor", minimum_interval_seconds=60, job_name="catalog_job",
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Loads the catalog when its files change (and once at start); a catalog "
                       "that does not validate is reported here and not loaded.")
def catalog_file_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    try:
        directory = catalog_directory()
        checksum = read_catalog(directory).checksum
    except dg.Failure as exc:
        return dg.SkipReason(exc.description)
    except CatalogError as exc:
        return dg.SkipReason(f"the catalog does not validate, not loaded:\n{exc}")
    if checksum == context.cursor:
        return dg.SkipReason(f"catalog {directory} unchanged")
    context.update_cursor(checksum)
    return dg.RunRequest(run_key=f"catalog-{checksum}")
