"""The catalog: the example reads and loads, a reload of the same files is a no-op, a load
reports exactly the prices and orgs it changed, bad files are refused with the file, entry and
fix named, and a load that fails leaves the database as it was (real Postgres, no mocks)."""

import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.types.range import Range

from billing_dagster.catalog import (
    EXAMPLE_CATALOG,
    CatalogError,
    load_catalog,
    read_catalog,
)
from billing_dagster.catalog.assets import billing_catalog
from billing_dagster.ledger.posting import post_month
from billing_dagster.resources import BillingDatabase
from billing_dagster.simulator import Foundation
from billing_dagster.simulator.catalog import OFFERING_SPECS, stable_guid
from tests.support import SIM_START

GIB_MONTH = 1024 * 730 * 3600  # MiB-seconds of 1 GiB for a 730-hour month
START_2025 = datetime(2025, 1, 1, 5, tzinfo=UTC)  # 2025-01-01 00:00 America/New_York
CATALOG_TABLES = ("tier", "customer", "customer_tier", "org_ownership", "resource_kind", "price",
                  "iaa", "iaa_modification", "catalog_load", "ownership_change")
Data = dict[str, Any]


def copy_of_example(tmp_path: Path) -> Path:
    directory = tmp_path / "catalog"
    shutil.copytree(EXAMPLE_CATALOG, directory)
    return directory


def edit(directory: Path, file: str, change: Callable[[Data], object]) -> None:
    """Change one file of a catalog copy through its parsed data."""
    path = directory / file
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def example_entries(file: str) -> list[Data]:
    (entries,) = yaml.safe_load((EXAMPLE_CATALOG / file).read_text()).values()
    return entries


def price(data: Data, kind: str) -> Data:
    return next(p for p in data["prices"] if p["kind"] == kind)


def customer(data: Data, customer_id: str) -> Data:
    return next(c for c in data["customers"] if c["id"] == customer_id)


# the demo foundation's orgs (seed 7) by name
ORG = {org.name: guid for guid, org in Foundation(
    seed=7, apps=200, service_instances=80, start=SIM_START, evolve=False).organizations.items()}


def org(name: str, **period: object) -> Data:
    """An org entry of customers.yaml: by guid, with its name as the alias."""
    return {"guid": ORG[name], "name": name, **period}


def take_org(data: Data, customer_id: str, name: str) -> Data:
    """Remove the org named ``name`` from a customer's entry; return its entry."""
    orgs = customer(data, customer_id)["orgs"]
    found = next(o for o in orgs if o["name"] == name)
    orgs.remove(found)
    return found


def table_contents(conn: psycopg.Connection) -> dict[str, list[str]]:
    statement = sql.SQL("SELECT to_jsonb(t)::text FROM billing.{} t ORDER BY 1")
    return {table: [row[0] for row in conn.execute(statement.format(sql.Identifier(table)))]
            for table in CATALOG_TABLES}


# --- the example catalog ----------------------------------------------------------------------

def test_the_example_catalog_reads_with_every_entry_of_its_files():
    catalog = read_catalog(EXAMPLE_CATALOG)
    assert len(catalog.tiers) == len(example_entries("tiers.yaml")) == 13
    assert len(catalog.customers) == len(example_entries("customers.yaml"))
    assert len(catalog.resource_kinds) == len(example_entries("resource_kinds.yaml"))
    assert len(catalog.prices) == len(example_entries("prices.yaml"))
    assert len(catalog.iaas) == len(example_entries("iaas.yaml"))
    assert {t.name: t.credits_per_month for t in catalog.tiers}["hecto"] == 1000
    assert len(catalog.checksum) == 64 and catalog.source == str(EXAMPLE_CATALOG)
    app_memory = next(p for p in catalog.prices if p.kind == "App memory")
    assert app_memory.valid_from == START_2025 and app_memory.valid_to is None


def test_the_example_app_memory_price_charges_3_credits_for_a_gib_month():
    app_memory = next(p for p in read_catalog(EXAMPLE_CATALOG).prices if p.kind == "App memory")
    value = 1024 * 3600 * 730  # 1 GiB running for 730 hours, in MiB-seconds
    assert value * app_memory.microcredits_per_unit % app_memory.unit == 0
    assert value * app_memory.microcredits_per_unit // app_memory.unit == 3_000_000


def test_the_example_prices_every_simulated_plan_but_two_and_maps_all_orgs_but_one():
    catalog = read_catalog(EXAMPLE_CATALOG)
    demo = Foundation(seed=7, apps=200, service_instances=80, start=SIM_START)
    plan_names = {stable_guid("plan", spec.name, plan): f"{spec.name}/{plan}"
                  for spec in OFFERING_SPECS for plan in spec.plans}
    kinds = {k.natural_id: k.name for k in catalog.resource_kinds}
    priced = {p.kind for p in catalog.prices}
    assert {kinds[guid] for guid in plan_names if guid in kinds} <= priced
    assert all(plan_names[guid] == name for guid, name in kinds.items() if guid in plan_names)
    left_out = {name for guid, name in plan_names.items() if name not in priced}
    assert left_out == {"aws-rds/small-psql-redundant", "external-domain/domain-with-org-lb"}
    used = {plan_names[s.plan_guid] for s in demo.service_instances.values() if s.plan_guid}
    assert left_out <= used
    assert len(demo.organizations) == 8
    owned = {o.guid: o.alias for _, o in catalog.ownerships}
    assert set(demo.organizations) - set(owned) == {ORG["ftc-analytics-8"]}
    assert all(demo.organizations[guid].name == alias for guid, alias in owned.items())
    tiers = {t.name: t.credits_per_month for t in catalog.tiers}
    for c in catalog.customers:
        agreements = [i for i in catalog.iaas if i.customer == c.id]
        assert [(i.pop_start, i.pop_end) for i in agreements] == [
            (date(2025, 10, 1), date(2026, 9, 30)), (date(2026, 10, 1), date(2027, 9, 30))]
        for i in agreements:  # a year of the tier in effect when the agreement starts
            tier = [t.tier for t in c.tiers if t.valid_from is None or t.valid_from <= i.pop_start]
            assert i.credits == tiers[tier[-1]] * 12


def test_the_example_catalog_loads_and_loading_it_again_is_a_no_op(conn):
    catalog = read_catalog(EXAMPLE_CATALOG)
    first = load_catalog(conn, catalog)
    assert (first.tiers, first.customers, first.orgs, first.kinds, first.prices,
            first.iaas) == (13, 4, 7, len(catalog.resource_kinds), len(catalog.prices), 8)
    assert not first.unchanged
    assert first.changed_prices == [(START_2025, None)]
    assert first.changed_orgs == sorted(o.guid for _, o in catalog.ownerships)
    counts = {table: len(rows) for table, rows in table_contents(conn).items()}
    assert counts == {"tier": 13, "customer": 4, "customer_tier": 5, "org_ownership": 7,
                      "resource_kind": len(catalog.resource_kinds),  # app memory existed
                      "price": len(catalog.prices), "iaa": 8, "iaa_modification": 1,
                      "catalog_load": 1, "ownership_change": 7}
    assert conn.execute(
        "SELECT tier, valid_during FROM billing.customer_tier WHERE customer_id = 'gsa-tts' "
        "ORDER BY valid_during").fetchall() == [
        ("milli", Range(date(2025, 10, 1), date(2026, 10, 1), "[)")),
        ("centi", Range(date(2026, 10, 1), None, "[)"))]
    assert conn.execute("SELECT tier FROM billing.customer WHERE id = 'gsa-tts'"
                        ).fetchone() == ("centi",)
    assert conn.execute(
        "SELECT customer_id, alias, valid_during FROM billing.org_ownership WHERE org_guid = %s",
        (ORG["nasa-catalog-7"],)).fetchone() == ("nasa", "nasa-catalog-7", Range(None, None))
    assert conn.execute(
        "SELECT id, effective, credits_microcredits, pop_end FROM billing.iaa_modification "
        "WHERE iaa_id = 'IAA-EPA-FY26'").fetchall() == [
        ("P00001", date(2026, 6, 1), 500 * 1_000_000, None)]
    assert conn.execute("SELECT credits_microcredits FROM billing.agreement "
                        "WHERE id = 'IAA-EPA-FY26'").fetchone() == (3500 * 1_000_000,)
    assert conn.execute(
        "SELECT customer_id, credits_microcredits, period_of_performance FROM billing.iaa "
        "WHERE id = 'IAA-EPA-FY26'").fetchone() == (
        "epa", 3000 * 1_000_000, Range(date(2025, 10, 1), date(2026, 10, 1), "[)"))
    assert conn.execute(
        "SELECT k.name, k.details->>'service_plan', p.microcredits_per_unit, p.unit, p.source "
        "FROM billing.price p JOIN billing.resource_kind k ON k.id = p.resource_kind_id "
        "WHERE k.natural_id = %s", (stable_guid("plan", "aws-rds", "medium-psql"),)
    ).fetchone() == ("aws-rds/medium-psql", "medium-psql", 4_000_000, 730 * 3600,
                     "prices.yaml entry 4")
    load = conn.execute("SELECT id, checksum, summary, changed_orgs FROM billing.catalog_load"
                        ).fetchone()
    assert load[0] == first.catalog_load_id and load[1] == catalog.checksum
    assert load[2]["prices"] == len(catalog.prices) and load[2]["orgs"] == 7
    before = table_contents(conn)

    second = load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
    assert second.unchanged
    assert second.catalog_load_id == first.catalog_load_id
    assert second.changed_prices == [] and second.changed_orgs == []
    assert table_contents(conn) == before


# --- what a load changed ----------------------------------------------------------------------

def test_a_changed_price_reports_exactly_the_range_it_changed(conn, tmp_path):
    load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
    ids = dict(conn.execute("SELECT k.name, p.id FROM billing.price p "
                            "JOIN billing.resource_kind k ON k.id = p.resource_kind_id"))
    directory = copy_of_example(tmp_path)

    def june_at_4_credits(data: Data) -> None:
        # App memory costs 4 credits in June 2025 (New York), 3 before and after: the old
        # open-ended price is split in three, only June's price differs.
        memory = price(data, "App memory")
        memory["valid_to"] = date(2025, 6, 1)
        data["prices"] += [
            {**memory, "microcredits_per_unit": 4_000_000, "valid_from": date(2025, 6, 1),
             "valid_to": datetime(2025, 7, 1, 4, tzinfo=UTC)},
            {**memory, "valid_from": date(2025, 7, 1)}]
        del data["prices"][-1]["valid_to"]

    edit(directory, "prices.yaml", june_at_4_credits)
    load = load_catalog(conn, read_catalog(directory))
    assert not load.unchanged
    assert load.changed_prices == [(datetime(2025, 6, 1, 4, tzinfo=UTC),
                                    datetime(2025, 7, 1, 4, tzinfo=UTC))]
    assert load.changed_orgs == []
    assert (load.prices_removed, load.prices_added) == (1, 3)
    stored = conn.execute("SELECT changed_prices, changed_orgs FROM billing.catalog_load "
                          "WHERE id = %s", (load.catalog_load_id,)).fetchone()
    assert [(r.lower, r.upper) for r in stored[0]] == load.changed_prices and stored[1] == []
    kept = dict(conn.execute("SELECT k.name, p.id FROM billing.price p "
                             "JOIN billing.resource_kind k ON k.id = p.resource_kind_id "
                             "WHERE k.name <> 'App memory'"))
    assert kept == {name: i for name, i in ids.items() if name != "App memory"}


def changed_instants(conn: psycopg.Connection, load_id: int) -> dict[str, list[tuple]]:
    rows = conn.execute("SELECT org_guid, changed FROM billing.ownership_change "
                        "WHERE catalog_load_id = %s", (load_id,))
    return {guid: [(r.lower, r.upper) for r in changed] for guid, changed in rows}


def test_a_moved_org_and_a_newly_mapped_org_are_the_changed_orgs(conn, tmp_path):
    load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
    directory = copy_of_example(tmp_path)

    def move(data: Data) -> None:
        customer(data, "doi")["orgs"].append(take_org(data, "nasa", "nasa-catalog-7"))
        take_org(data, "gsa-tts", "fec-analytics-5")  # now owned by no one
        customer(data, "epa")["orgs"].append(org("ftc-analytics-8"))

    edit(directory, "customers.yaml", move)
    load = load_catalog(conn, read_catalog(directory))
    moved = [ORG[name] for name in ("fec-analytics-5", "ftc-analytics-8", "nasa-catalog-7")]
    assert load.changed_orgs == sorted(moved)
    assert changed_instants(conn, load.catalog_load_id) == {
        guid: [(None, None)] for guid in moved}  # for all time
    assert load.changed_prices == []
    assert not load.unchanged
    owners = dict(conn.execute("SELECT org_guid, customer_id FROM billing.org_ownership"))
    assert owners[ORG["nasa-catalog-7"]] == "doi" and owners[ORG["ftc-analytics-8"]] == "epa"
    assert ORG["fec-analytics-5"] not in owners
    assert conn.execute("SELECT count(*) FROM billing.catalog_load").fetchone()[0] == 2


def test_an_org_moved_on_a_date_changes_only_the_instants_from_that_date(conn, tmp_path):
    load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
    directory = copy_of_example(tmp_path)
    moved_on = date(2026, 3, 15)  # midnight New York: 04:00 UTC (EDT began on March 8)

    def move(data: Data) -> None:
        nasa = customer(data, "nasa")["orgs"]
        nasa[0]["valid_to"] = moved_on
        customer(data, "doi")["orgs"].append(org("nasa-catalog-7", valid_from=moved_on))
        customer(data, "epa")["orgs"][0]["name"] = "epa-forms-renamed"  # an alias: no change

    edit(directory, "customers.yaml", move)
    load = load_catalog(conn, read_catalog(directory))
    at = datetime(2026, 3, 15, 4, tzinfo=UTC)
    assert load.changed_orgs == [ORG["nasa-catalog-7"]]
    assert changed_instants(conn, load.catalog_load_id) == {ORG["nasa-catalog-7"]: [(at, None)]}
    assert conn.execute(
        "SELECT customer_id, valid_during FROM billing.org_ownership WHERE org_guid = %s "
        "ORDER BY valid_during", (ORG["nasa-catalog-7"],)).fetchall() == [
        ("nasa", Range(None, at, "[)")), ("doi", Range(at, None, "[)"))]
    assert conn.execute("SELECT alias FROM billing.org_ownership WHERE org_guid = %s",
                        (ORG["epa-forms-1"],)).fetchone() == ("epa-forms-renamed",)


# --- bad catalogs -----------------------------------------------------------------------------

def _add_overlapping_price(data: Data) -> None:
    data["prices"].append({"kind": "App memory", "microcredits_per_unit": 4_000_000,
                           "unit": GIB_MONTH, "valid_from": date(2025, 6, 1)})


def _remove_file(directory: Path) -> None:
    (directory / "iaas.yaml").unlink()


def _break_syntax(directory: Path) -> None:
    with (directory / "tiers.yaml").open("a") as file:
        file.write("  - name: [unclosed\n    credits_per_month: 3\n")


def _impossible_date(directory: Path) -> None:
    text = (directory / "iaas.yaml").read_text()
    (directory / "iaas.yaml").write_text(text.replace("pop_end: 2026-09-30", "pop_end: 2026-09-31",
                                                      1))


def _wrong_shape(directory: Path) -> None:
    (directory / "tiers.yaml").write_text("- name: micro\n  credits_per_month: 250\n")


BAD_EDITS: list[tuple[str, str, Callable[[Data], object], list[str]]] = [
    ("overlapping prices", "prices.yaml", _add_overlapping_price,
     ["prices.yaml: entry 1 (App memory)", "overlaps entry 39 (App memory, line",
      "from 2025-06-01 04:00 UTC", "set this entry's valid_to to entry 39's valid_from"]),
    ("IAA of an unknown customer", "iaas.yaml",
     lambda d: d["iaas"][2].update(customer="dept-of-nothing"),
     ["iaas.yaml: entry 3 (IAA-EPA-FY26)",
      "customer 'dept-of-nothing' is not in customers.yaml: use the id of a customer there"]),
    ("negative price", "prices.yaml",
     lambda d: price(d, "aws-rds/micro-psql").update(microcredits_per_unit=-1),
     ["prices.yaml: entry 2 (aws-rds/micro-psql)", "microcredits_per_unit is -1, it must be 0 "
      "or more: give the price in microcredits per unit"]),
    ("missing unit", "prices.yaml", lambda d: price(d, "aws-rds/micro-psql").pop("unit"),
     ["prices.yaml: entry 2 (aws-rds/micro-psql)", "unit is missing: give the price's unit in "
      "instance-seconds, e.g. 2628000 for a 730-hour month"]),
    ("zero unit", "prices.yaml", lambda d: price(d, "App memory").update(unit=0),
     ["prices.yaml: entry 1 (App memory)", "unit is 0, it must be 1 or more", "MiB-seconds"]),
    ("a yes/no value is not a number", "tiers.yaml",
     lambda d: d["tiers"][0].update(credits_per_month=True),
     ["tiers.yaml: entry 1 (sandbox)", "credits_per_month must be a whole number, found true"]),
    ("a decimal price", "prices.yaml", lambda d: price(d, "App memory").update(unit=2.5),
     ["prices.yaml: entry 1 (App memory)", "unit must be a whole number, found 2.5"]),
    ("unknown field", "tiers.yaml", lambda d: d["tiers"][1].update(credits_per_year=600),
     ["tiers.yaml: entry 2 (femto)", "unknown field 'credits_per_year': the fields here are "
      "name, credits_per_month"]),
    ("duplicate tier", "tiers.yaml", lambda d: d["tiers"].append(dict(d["tiers"][0])),
     ["tiers.yaml: entry 14 (sandbox)", "tier name 'sandbox' is already used by entry 1"]),
    ("customer with an unknown tier", "customers.yaml",
     lambda d: customer(d, "epa").update(tier="ultra"),
     ["customers.yaml: entry 3 (epa)", "tier 'ultra' is not in tiers.yaml: use one of centi, "
      "deci"]),
    ("org claimed by two customers", "customers.yaml",
     lambda d: customer(d, "epa")["orgs"].append(org("doi-data-4")),
     ["customers.yaml: entry 3 (epa)", "org 'doi-data-4' is already claimed by entry 2 (doi, line",
      "an org belongs to one customer at a time"]),
    ("org claimed by two customers over part of a period", "customers.yaml",
     lambda d: customer(d, "epa")["orgs"].append(org("doi-data-4", valid_from=date(2026, 1, 1),
                                                     valid_to=date(2026, 2, 1))),
     ["customers.yaml: entry 3 (epa)", "org 'doi-data-4' is already claimed by entry 2 (doi, "
      "line", "from 2026-01-01 05:00 UTC to 2026-02-01 05:00 UTC", "end one's period "
      "(valid_to) where the other's begins (valid_from)"]),
    ("org given by name alone", "customers.yaml",
     lambda d: customer(d, "epa")["orgs"].append("epa-grants-9"),
     ["customers.yaml: entry 3 (epa)", "org 'epa-grants-9' is given by name alone: give each "
      "org by its guid, with the name as an alias", "`cf org epa-grants-9 --guid`"]),
    ("org guid that is not a guid", "customers.yaml",
     lambda d: customer(d, "epa")["orgs"].append({"guid": "epa-grants-9"}),
     ["customers.yaml: entry 3 (epa)", "org 2: guid 'epa-grants-9' is not a guid"]),
    ("ownership ending before it starts", "customers.yaml",
     lambda d: customer(d, "epa")["orgs"][0].update(valid_from=date(2026, 3, 1),
                                                    valid_to=date(2026, 2, 1)),
     ["customers.yaml: entry 3 (epa)", "org 'epa-forms-1''s valid_to (2026-02-01 05:00 UTC) is "
      "not after its valid_from (2026-03-01 05:00 UTC)"]),
    ("ownership starting mid-hour", "customers.yaml",
     lambda d: customer(d, "epa")["orgs"][0].update(
         valid_from=datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
     ["customers.yaml: entry 3 (epa)", "valid_from 2026-03-01 10:30:00 UTC is not on a whole "
      "hour: an org changes owner at the start of an hour"]),
    ("tier changing mid-month", "customers.yaml",
     lambda d: customer(d, "gsa-tts")["tier"][1].update(valid_from=date(2026, 10, 15)),
     ["customers.yaml: entry 1 (gsa-tts)", "tier period 2 (centi) starts on 2026-10-15, not on "
      "the first day of a month", "e.g. 2026-10-01"]),
    ("tiers out of order", "customers.yaml",
     lambda d: customer(d, "gsa-tts")["tier"][1].update(valid_from=date(2025, 1, 1)),
     ["customers.yaml: entry 1 (gsa-tts)", "tier period 2 (centi) starts on 2025-01-01, not "
      "after the tier before it (2025-10-01)"]),
    ("a modification outside the period", "iaas.yaml",
     lambda d: d["iaas"][0].update(modifications=[
         {"id": "P00001", "effective": date(2026, 10, 1), "credits": 100}]),
     ["iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)", "modification P00001 takes effect on 2026-10-01,"
      " outside the agreement's period (2025-10-01 to 2026-09-30)"]),
    ("a modification removing more than the agreement holds", "iaas.yaml",
     lambda d: d["iaas"][0].update(modifications=[
         {"id": "P00001", "effective": date(2026, 1, 1), "credits": -5000}]),
     ["iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)", "modification P00001 removes 5000 credits, more "
      "than the agreement holds (4200)"]),
    ("a modification that changes nothing", "iaas.yaml",
     lambda d: d["iaas"][0].update(modifications=[{"id": "P00001",
                                                   "effective": date(2026, 1, 1)}]),
     ["iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)", "modification P00001 changes nothing: give "
      "credits"]),
    ("a modification with an unknown field", "iaas.yaml",
     lambda d: d["iaas"][0].update(modifications=[
         {"id": "P00001", "effective": date(2026, 1, 1), "credit": 100}]),
     ["iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)", "modification 1 has an unknown field 'credit'"]),
    ("duplicate customer id", "customers.yaml",
     lambda d: d["customers"].append({"id": "epa", "name": "EPA again", "tier": "pico",
                                      "orgs": []}),
     ["customers.yaml: entry 5 (epa)", "customer id 'epa' is already used by entry 3"]),
    ("a customer entry copied whole", "customers.yaml",
     lambda d: d["customers"].append(dict(customer(d, "epa"))),
     # found by the fault campaign: reported as the copy claiming the first one's orgs
     ["customers.yaml: entry 5 (epa)", "customer id 'epa' is already used by entry 3"]),
    ("price of an unknown kind", "prices.yaml",
     lambda d: price(d, "aws-rds/micro-psql").update(kind="aws-rds/nano-psql"),
     ["prices.yaml: entry 2 (aws-rds/nano-psql)",
      "kind 'aws-rds/nano-psql' is not in resource_kinds.yaml"]),
    ("valid_to not after valid_from", "prices.yaml",
     lambda d: price(d, "aws-rds/small-psql").update(valid_to=date(2024, 12, 31)),
     ["prices.yaml: entry 3 (aws-rds/small-psql)", "valid_to (2024-12-31 05:00 UTC) is not "
      "after valid_from (2025-01-01 05:00 UTC)"]),
    ("date-time without an offset", "prices.yaml",
     lambda d: price(d, "aws-rds/small-psql").update(valid_from=datetime(2025, 1, 1)),
     ["prices.yaml: entry 3 (aws-rds/small-psql)", "valid_from 2025-01-01T00:00:00 has no UTC "
      "offset"]),
    ("unknown meter", "resource_kinds.yaml",
     lambda d: d["resource_kinds"][1].update(meter="cftasks"),
     ["resource_kinds.yaml: entry 2 (aws-rds/micro-psql)", "meter 'cftasks' is unknown: use "
      "one of cfapps, cfservices, rds_storage"]),
    ("cfapps kind that is not app memory", "resource_kinds.yaml",
     lambda d: d["resource_kinds"][0].update(natural_id="app-disk"),
     ["resource_kinds.yaml: entry 1 (App memory)", "natural_id 'app-disk' is not a cfapps "
      "kind: cfapps has one kind, natural_id app-memory"]),
    ("AWS meter kind that is not its own", "resource_kinds.yaml",
     lambda d: d["resource_kinds"][0].update(meter="s3_storage", natural_id="bucket-count"),
     ["resource_kinds.yaml: entry 1 (App memory)", "natural_id 'bucket-count' is not a "
      "s3_storage kind: s3_storage has the kinds stored-bytes, untagged, unknown-instance"]),
    ("service plan kind named by name, not guid", "resource_kinds.yaml",
     lambda d: d["resource_kinds"][1].update(natural_id="micro-psql"),
     ["resource_kinds.yaml: entry 2 (aws-rds/micro-psql)", "natural_id 'micro-psql' is not a "
      "service plan guid"]),
    ("pop_end before pop_start", "iaas.yaml",
     lambda d: d["iaas"][0].update(pop_end=date(2025, 9, 30)),
     ["iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)", "pop_end 2025-09-30 is before pop_start "
      "2025-10-01"]),
    ("agreement of no credits", "iaas.yaml", lambda d: d["iaas"][1].update(credits=0),
     ["iaas.yaml: entry 2 (IAA-DOI-FY26)", "credits is 0, it must be 1 or more"]),
    ("duplicate agreement id", "iaas.yaml", lambda d: d["iaas"][1].update(id="IAA-GSA-TTS-FY26"),
     ["iaas.yaml: entry 2 (IAA-GSA-TTS-FY26)", "agreement id 'IAA-GSA-TTS-FY26' is already "
      "used by entry 1"]),
]


@pytest.mark.parametrize(("file", "change", "expected"),
                         [case[1:] for case in BAD_EDITS], ids=[case[0] for case in BAD_EDITS])
def test_a_bad_catalog_is_refused_naming_the_file_entry_and_fix(tmp_path, file, change,
                                                                 expected):
    directory = copy_of_example(tmp_path)
    edit(directory, file, change)
    with pytest.raises(CatalogError) as refused:
        read_catalog(directory)
    message = str(refused.value)
    assert len(refused.value.problems) == 1, message
    for part in expected:
        assert part in message


@pytest.mark.parametrize(("damage", "expected"), [
    (_remove_file, ["iaas.yaml: the file is missing from", "create it with a top-level "
                    "`iaas:` list"]),
    (_break_syntax, ["tiers.yaml: line 37, column", "YAML syntax error"]),
    (_impossible_date, ["iaas.yaml: line 27: not a valid date (day is out of range for "
                        "month)"]),
    (_wrong_shape, ["tiers.yaml: no top-level `tiers:` list, found a list: the file must be a "
                    "mapping with the one key `tiers:`"]),
], ids=["missing file", "YAML syntax error", "impossible date", "wrong top-level shape"])
def test_a_catalog_whose_files_are_unusable_is_refused_naming_the_file(tmp_path, damage,
                                                                       expected):
    directory = copy_of_example(tmp_path)
    damage(directory)
    with pytest.raises(CatalogError) as refused:
        read_catalog(directory)
    for part in expected:
        assert part in str(refused.value)


def test_every_problem_is_listed_one_per_line_with_its_line_in_the_file(tmp_path):
    directory = copy_of_example(tmp_path)
    text = (directory / "prices.yaml").read_text()
    (directory / "prices.yaml").write_text(
        text.replace("    unit: 2628000\n", "", 1).replace("microcredits_per_unit: 4000000",
                                                         "microcredits_per_unit: -4000000", 1))
    edit(directory, "iaas.yaml", lambda d: d["iaas"][0].update(customer="nobody"))
    with pytest.raises(CatalogError) as refused:
        read_catalog(directory)
    lines = str(refused.value).splitlines()
    assert lines[0].endswith("rejected: 3 problems (entries are counted from 1)")
    assert lines[1].startswith("prices.yaml: entry 2 (aws-rds/micro-psql), line 35: unit is "
                               "missing")
    assert lines[2].startswith("prices.yaml: entry 4 (aws-rds/medium-psql), line 44: "
                               "microcredits_per_unit is -4000000")
    assert lines[3].startswith("iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)")


# --- a load that fails writes nothing ---------------------------------------------------------

def _changed_catalog(tmp_path: Path, iaa_credits: dict[str, int]) -> Path:
    """The example with a price changed, an org moved and agreements' credits changed."""
    directory = copy_of_example(tmp_path / "changed")
    edit(directory, "prices.yaml",
         lambda d: price(d, "aws-rds/medium-psql").update(microcredits_per_unit=5_000_000))

    def move(data: Data) -> None:
        customer(data, "doi")["orgs"].append(take_org(data, "nasa", "nasa-catalog-7"))

    edit(directory, "customers.yaml", move)
    edit(directory, "iaas.yaml", lambda d: [i.update(credits=iaa_credits[i["id"]])
                                            for i in d["iaas"] if i["id"] in iaa_credits])
    return directory


def test_changing_a_posted_agreement_is_refused_and_nothing_is_written(conn, tmp_path):
    load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
    # October 2025 posted: the FY26 agreements' credits are in the ledger, FY27's are not
    posted = post_month(conn, date(2025, 10, 1), datetime(2025, 10, 1, 4, tzinfo=UTC),
                        datetime(2025, 11, 1, 4, tzinfo=UTC))
    assert len(posted.of_type("iaa_pop_start")) == 4
    before = table_contents(conn)

    directory = _changed_catalog(tmp_path, {"IAA-EPA-FY26": 3100, "IAA-EPA-FY27": 3100})
    with pytest.raises(CatalogError) as refused:
        load_catalog(conn, read_catalog(directory))
    assert refused.value.problems == [
        "iaas.yaml: entry 3 (IAA-EPA-FY26): changes credits from 3000 to 3100, but the "
        "agreement's credits are already posted to the ledger (transaction "
        "iaa_pop_start:IAA-EPA-FY26): restore the posted values and record the change as a new "
        "agreement or an adjustment"]
    assert table_contents(conn) == before  # the price, the org and FY27 were not written

    # the agreement not posted yet can still change
    load = load_catalog(conn, read_catalog(_changed_catalog(tmp_path / "2",
                                                            {"IAA-EPA-FY27": 3100})))
    assert load.changed_orgs == [ORG["nasa-catalog-7"]]
    assert conn.execute("SELECT credits_microcredits FROM billing.iaa WHERE id = 'IAA-EPA-FY27'"
                        ).fetchone() == (3100 * 1_000_000,)


def test_a_database_error_during_the_load_leaves_the_database_as_it_was(conn, db_url):
    before = table_contents(conn)
    conn.execute("SET lock_timeout = '200ms'")
    conn.commit()
    with psycopg.connect(db_url) as blocker:
        # another session holds the agreements table: the load writes tiers, customers, orgs,
        # kinds and prices, then fails on the agreements
        blocker.execute("LOCK TABLE billing.iaa IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
        blocker.rollback()
    assert table_contents(conn) == before
    assert load_catalog(conn, read_catalog(EXAMPLE_CATALOG)).tiers == 13


# --- the asset --------------------------------------------------------------------------------

def test_the_catalog_asset_loads_the_configured_directory_and_fails_on_a_bad_one(db_url,
                                                                                 tmp_path):
    resources = {"db": BillingDatabase(url=db_url)}
    config = {"ops": {"billing_catalog": {"config": {"directory": str(EXAMPLE_CATALOG)}}}}
    result = dg.materialize([billing_catalog], resources=resources, run_config=config)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("billing_catalog")
    assert materialization.metadata["prices"].value == len(read_catalog(EXAMPLE_CATALOG).prices)
    assert materialization.metadata["unchanged"].value is False

    directory = copy_of_example(tmp_path)
    edit(directory, "iaas.yaml", lambda d: d["iaas"][0].update(credits=-5))
    config = {"ops": {"billing_catalog": {"config": {"directory": str(directory)}}}}
    failed = dg.materialize([billing_catalog], resources=resources, run_config=config,
                            raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    assert "iaas.yaml: entry 1 (IAA-GSA-TTS-FY26)" in str(failure.step_failure_data.error)


def test_a_posted_modification_cannot_change_and_an_expired_agreement_takes_none(conn,
                                                                                  tmp_path):
    load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
    # September 2026 posted: EPA's modification P00001 (June 2026) and FY26's expiry are posted
    post_month(conn, date(2026, 9, 1), datetime(2026, 9, 1, 4, tzinfo=UTC),
               datetime(2026, 10, 1, 4, tzinfo=UTC))
    keys = {k for (k,) in conn.execute("SELECT idempotency_key FROM billing.ledger_transaction")}
    assert {"iaa_modification:IAA-EPA-FY26:P00001", "iaa_pop_end:IAA-EPA-FY26"} <= keys
    before = table_contents(conn)

    changed = copy_of_example(tmp_path / "changed")
    edit(changed, "iaas.yaml", lambda d: d["iaas"][2]["modifications"][0].update(credits=600))
    added = copy_of_example(tmp_path / "added")
    edit(added, "iaas.yaml", lambda d: d["iaas"][1].update(modifications=[
        {"id": "P00001", "effective": date(2026, 9, 1), "pop_end": date(2026, 12, 31)}]))
    for directory, problem in (
            (changed, "iaas.yaml: entry 3 (IAA-EPA-FY26): changes modification P00001, but the "
                      "agreement's expiry is already posted to the ledger (transaction "
                      "iaa_pop_end:IAA-EPA-FY26): restore its modifications as they were and "
                      "record the change as a new agreement"),
            (added, "iaas.yaml: entry 2 (IAA-DOI-FY26): adds modification P00001, but the "
                    "agreement's expiry is already posted to the ledger (transaction "
                    "iaa_pop_end:IAA-DOI-FY26): restore its modifications as they were and "
                    "record the change as a new agreement")):
        with pytest.raises(CatalogError) as refused:
            load_catalog(conn, read_catalog(directory))
        assert refused.value.problems == [problem]
        assert table_contents(conn) == before

    # a running agreement takes a new modification; once posted, it cannot change
    fy27 = copy_of_example(tmp_path / "fy27")
    edit(fy27, "iaas.yaml", lambda d: d["iaas"][7].update(modifications=[
        {"id": "P00001", "effective": date(2026, 11, 1), "credits": 300}]))
    load_catalog(conn, read_catalog(fy27))
    post_month(conn, date(2026, 11, 1), datetime(2026, 11, 1, 4, tzinfo=UTC),
               datetime(2026, 12, 1, 5, tzinfo=UTC))
    edit(fy27, "iaas.yaml", lambda d: d["iaas"][7].pop("modifications"))
    with pytest.raises(CatalogError) as refused:
        load_catalog(conn, read_catalog(fy27))
    assert refused.value.problems == [
        "iaas.yaml: entry 8 (IAA-NASA-FY27): removes modification P00001, which is already "
        "posted to the ledger (transaction iaa_modification:IAA-NASA-FY27:P00001): restore it as "
        "posted and record the change as a new modification"]
