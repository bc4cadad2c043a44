"""Loading a validated catalog into Postgres, in one transaction: all of it or none of it.

Tiers, customers and agreements are upserted (never deleted: the ledger refers to them); the
org-to-customer mapping and the prices are replaced to match the catalog exactly; resource kinds
are upserted (never deleted: usage refers to them). Each load that changes something is recorded
in billing.catalog_load with the instants whose price changed and the orgs whose customer
changed, which is what the re-pricing sensor re-prices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from billing_dagster.catalog.model import MICROCREDITS_PER_CREDIT, Catalog, CatalogError
from billing_dagster.sql import copy_rows, query


@dataclass(frozen=True)
class CatalogLoad:
    """What a load did, for logs and Dagster metadata.

    ``unchanged``: the catalog is the one the newest load recorded (same checksum) and loading
    it changed no price and no org, so no catalog_load row was written and ``catalog_load_id``
    is that newest load's id. ``changed_prices`` holds [start, end) UTC pairs, end None when
    open-ended.
    """

    catalog_load_id: int
    unchanged: bool
    source: str
    checksum: str
    tiers: int
    customers: int
    orgs: int
    kinds: int
    prices: int
    iaas: int
    changed_prices: list[tuple[datetime, datetime | None]]
    changed_orgs: list[str]
    prices_added: int = 0
    prices_removed: int = 0

    def summary(self) -> dict[str, int]:
        """The counts stored in catalog_load.summary."""
        return {"tiers": self.tiers, "customers": self.customers, "orgs": self.orgs,
                "kinds": self.kinds, "prices": self.prices, "iaas": self.iaas,
                "prices_added": self.prices_added, "prices_removed": self.prices_removed}


def load_catalog(conn: psycopg.Connection, catalog: Catalog) -> CatalogLoad:
    """Write ``catalog`` to the database in one transaction; on any error nothing is written.

    Raises CatalogError when the catalog changes an agreement whose credits are already posted
    to the ledger (its customer, credits or period can no longer change).
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("lock_catalog"))
        cur.execute(query("create_catalog_staging"))
        copy_rows(cur, "copy_catalog_tier", [(t.name, t.credits_per_month) for t in catalog.tiers])
        copy_rows(cur, "copy_catalog_customer",
                  [(c.id, c.name, c.tier) for c in catalog.customers])
        copy_rows(cur, "copy_catalog_customer_tier", [
            (c.id, period.tier, period.valid_from, following.valid_from if following else None)
            for c in catalog.customers
            for period, following in zip(c.tiers, [*c.tiers[1:], None], strict=True)])
        copy_rows(cur, "copy_catalog_org", [
            (org.guid, customer_id, org.alias, org.valid_from, org.valid_to,
             f"customers.yaml {customer_id}")
            for customer_id, org in catalog.ownerships])
        copy_rows(cur, "copy_catalog_kind", [
            (k.meter, k.natural_id, k.name, json.dumps(_details(k.meter, k.name, k.description)))
            for k in catalog.resource_kinds])
        copy_rows(cur, "copy_catalog_price", [
            (p.kind, p.microcredits_per_unit, p.unit, p.valid_from, p.valid_to,
             f"prices.yaml entry {index}")
            for index, p in enumerate(catalog.prices, start=1)])
        copy_rows(cur, "copy_catalog_iaa", [
            (i.id, i.customer, i.credits * MICROCREDITS_PER_CREDIT, i.pop_start, i.pop_end)
            for i in catalog.iaas])
        copy_rows(cur, "copy_catalog_iaa_modification", [
            (i.id, m.id, m.effective, m.credits * MICROCREDITS_PER_CREDIT, m.pop_end)
            for i in catalog.iaas for m in i.modifications])

        cur.execute(query("upsert_catalog_tiers"))
        cur.execute(query("upsert_catalog_customers"))
        cur.execute(query("upsert_catalog_kinds"))
        cur.execute(query("resolve_catalog_prices"))
        cur.execute(query("record_catalog_ownership_changes"))
        changed = cur.execute(query("record_catalog_changes")).fetchone()
        assert changed is not None
        changed_prices, changed_orgs = _ranges(changed[0]), list(changed[1])
        cur.execute(query("replace_catalog_ownership"))
        cur.execute(query("replace_catalog_customer_tiers"))
        cur.execute(query("delete_catalog_prices"))
        prices_removed = cur.rowcount
        cur.execute(query("update_catalog_price_sources"))
        cur.execute(query("insert_catalog_prices"))
        prices_added = cur.rowcount

        with conn.cursor(row_factory=dict_row) as check:
            refused = check.execute(query("refused_iaa_changes")).fetchall()
            refused_modifications = check.execute(
                query("refused_modification_changes")).fetchall()
        if refused or refused_modifications:  # the exception rolls all of the above back
            raise CatalogError(_refusals(catalog, refused)
                               + _modification_refusals(catalog, refused_modifications),
                               heading="catalog not loaded")
        cur.execute(query("upsert_catalog_iaas"))
        cur.execute(query("replace_catalog_modifications"))

        newest = cur.execute(query("newest_catalog_load")).fetchone()
        result = CatalogLoad(
            catalog_load_id=0, unchanged=False, source=catalog.source,
            checksum=catalog.checksum, tiers=len(catalog.tiers),
            customers=len(catalog.customers), orgs=len(catalog.ownerships),
            kinds=len(catalog.resource_kinds), prices=len(catalog.prices),
            iaas=len(catalog.iaas), changed_prices=changed_prices, changed_orgs=changed_orgs,
            prices_added=prices_added, prices_removed=prices_removed)
        if (newest is not None and newest[1] == catalog.checksum and not changed_prices
                and not changed_orgs):
            return replace(result, catalog_load_id=newest[0], unchanged=True)
        row = cur.execute(query("insert_catalog_load"), {
            "source": catalog.source, "checksum": catalog.checksum,
            "summary": Jsonb(result.summary())}).fetchone()
        assert row is not None
        return replace(result, catalog_load_id=row[0])


def _details(meter: str, name: str, description: str | None) -> dict[str, str]:
    details: dict[str, str] = {}
    if meter == "cfservices":
        offering, _, plan = name.partition("/")
        details = {"service_offering": offering, "service_plan": plan}
    if description is not None:
        details["description"] = description
    return details


def _ranges(multirange: Any) -> list[tuple[datetime, datetime | None]]:
    ranges: list[Range[datetime]] = list(multirange)
    return [(r.lower.astimezone(UTC), r.upper.astimezone(UTC) if r.upper else None)
            for r in ranges if r.lower is not None]


def _refusals(catalog: Catalog, refused: list[dict[str, Any]]) -> list[str]:
    entries = {iaa.id: index for index, iaa in enumerate(catalog.iaas, start=1)}
    problems = []
    for row in refused:
        changes = []
        if row["customer_id"] != row["new_customer_id"]:
            changes.append(f"customer from {row['customer_id']} to {row['new_customer_id']}")
        if row["credits_microcredits"] != row["new_credits_microcredits"]:
            changes.append(f"credits from {row['credits_microcredits'] // MICROCREDITS_PER_CREDIT}"
                           f" to {row['new_credits_microcredits'] // MICROCREDITS_PER_CREDIT}")
        if row["period_of_performance"] != row["new_period_of_performance"]:
            changes.append(f"the period from {_period(row['period_of_performance'])} to "
                           f"{_period(row['new_period_of_performance'])}")
        problems.append(
            f"iaas.yaml: entry {entries[row['id']]} ({row['id']}): changes "
            f"{' and '.join(changes)}, but the agreement's credits are already posted to the "
            f"ledger (transaction iaa_pop_start:{row['id']}): restore the posted values and "
            "record the change as a new agreement or an adjustment")
    return problems


def _modification_refusals(catalog: Catalog, refused: list[dict[str, Any]]) -> list[str]:
    entries = {iaa.id: index for index, iaa in enumerate(catalog.iaas, start=1)}
    problems = []
    for row in refused:
        where = (f"iaas.yaml: entry {entries[row['iaa_id']]} ({row['iaa_id']})"
                 if row["iaa_id"] in entries else f"iaas.yaml: agreement {row['iaa_id']}")
        what = ("adds" if not row["stored"] else "removes" if not row["listed"]
                else "changes")
        if row["expired"]:
            problems.append(
                f"{where}: {what} modification {row['id']}, but the agreement's expiry is "
                f"already posted to the ledger (transaction iaa_pop_end:{row['iaa_id']}): "
                "restore its modifications as they were and record the change as a new "
                "agreement")
        else:
            problems.append(
                f"{where}: {what} modification {row['id']}, which is already posted to the "
                f"ledger (transaction iaa_modification:{row['iaa_id']}:{row['id']}): restore "
                "it as posted and record the change as a new modification")
    return problems


def _period(period: Range[date]) -> str:
    assert period.lower is not None and period.upper is not None
    return f"{period.lower} to {period.upper - timedelta(days=1)}"
