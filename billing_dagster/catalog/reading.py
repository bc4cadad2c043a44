"""Reading the catalog files and validating them, with no database.

Every problem is collected before anything is refused, so one run of the validation tells the
billing team everything to fix: each line names the file, the entry (counted from 1, with its id
or name and its line in the file) and the problem with the fix.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import yaml

from billing_dagster.catalog.model import (
    MICROCREDITS_PER_CREDIT,
    Catalog,
    CatalogError,
    Customer,
    Iaa,
    PriceEntry,
    ResourceKindEntry,
    Tier,
)
from billing_dagster.partitions import BUSINESS_TIMEZONE

EXAMPLE_CATALOG = Path(__file__).resolve().parent / "example"
"""The example catalog shipped with the project (prices the CF simulator's foundation)."""

CATALOG_FILES: dict[str, str] = {
    "tiers.yaml": "tiers",
    "customers.yaml": "customers",
    "resource_kinds.yaml": "resource_kinds",
    "prices.yaml": "prices",
    "iaas.yaml": "iaas",
}
"""Each catalog file and the top-level key holding its list of entries."""

METER_UNITS: dict[str, str] = {"cfapps": "MiB-seconds", "cfservices": "instance-seconds"}
APP_MEMORY = "app-memory"
BIGINT_MAX = 2**63 - 1
NEW_YORK = ZoneInfo(BUSINESS_TIMEZONE)
_CUSTOMER_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_T = TypeVar("_T")

_UNIT_FIX: dict[str | None, str] = {
    "cfapps": "give the price's unit in MiB-seconds, e.g. 2691072000 for 1 GiB over a "
              "730-hour month",
    "cfservices": "give the price's unit in instance-seconds, e.g. 2628000 for a 730-hour month",
    None: "give the price's unit in the meter's unit-seconds (MiB-seconds for cfapps, "
          "instance-seconds for cfservices), e.g. 2628000 for one instance over a 730-hour month",
}
_MOMENT_FIX = ("write a date (midnight America/New_York), e.g. 2025-01-01, or a date-time with "
               "its UTC offset, e.g. 2025-01-01T00:00:00-05:00, unquoted")
_DAY_FIX = "write a date, e.g. 2025-10-01, unquoted and without a time"


def read_catalog(directory: Path) -> Catalog:
    """Read and validate the catalog files in ``directory``; CatalogError lists every problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogError([f"{directory}: no such catalog directory: set BILLING_CATALOG to a "
                            f"directory holding {', '.join(CATALOG_FILES)}"],
                           heading=f"catalog {directory} rejected")
    contents: dict[str, bytes] = {}
    files: dict[str, list[_Entry] | None] = {}
    file_problems: dict[str, list[str]] = {file: [] for file in CATALOG_FILES}
    for file, key in CATALOG_FILES.items():
        try:
            contents[file] = (directory / file).read_bytes()
        except FileNotFoundError:
            file_problems[file].append(
                f"{file}: the file is missing from {directory}: create it with a top-level "
                f"`{key}:` list (see {EXAMPLE_CATALOG / file})")
            files[file] = None
            continue
        files[file] = _entries(file, key, contents[file], file_problems[file])

    tiers = _tiers(files["tiers.yaml"] or [])
    known_tiers = _names(files["tiers.yaml"], "name")
    customers = _customers(files["customers.yaml"] or [], known_tiers)
    kinds = _kinds(files["resource_kinds.yaml"] or [])
    kind_meters = {kind.name: kind.meter for _, kind in kinds}
    prices = _prices(files["prices.yaml"] or [], _names(files["resource_kinds.yaml"], "name"),
                     kind_meters)
    iaas = _iaas(files["iaas.yaml"] or [], _names(files["customers.yaml"], "id"))
    problems = [problem for file, entries in files.items()
                for problem in [*file_problems[file],
                                *(p for entry in entries or [] for p in entry.problems)]]
    if problems:
        raise CatalogError(problems, heading=f"catalog {directory} rejected")
    return Catalog(
        tiers=tuple(tier for _, tier in tiers),
        customers=tuple(customer for _, customer in customers),
        resource_kinds=tuple(kind for _, kind in kinds),
        prices=tuple(price for _, price in prices),
        iaas=tuple(iaa for _, iaa in iaas),
        source=str(directory.resolve()),
        checksum=catalog_checksum(contents),
    )


def catalog_checksum(contents: dict[str, bytes]) -> str:
    """SHA-256 over each file's name and bytes, files in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(contents):
        data = contents[name]
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


# --- one file: YAML syntax and shape ----------------------------------------------------------

def _entries(file: str, key: str, data: bytes, problems: list[str]) -> list[_Entry] | None:
    """The file's entries, each with its position; None when the file itself is unusable."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{file}: not UTF-8 text (byte {exc.start}): save the file as UTF-8")
        return None
    root = None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        problems.append(f"{file}: {where}YAML syntax error ({problem}): fix the syntax there "
                        "(indentation, a missing colon or an unclosed quote or bracket)")
        return None
    except ValueError as exc:  # a well-formed value that is no date, e.g. 2025-02-30
        problems.append(f"{file}: {_bad_timestamp(root)}not a valid date ({exc}): write a real "
                        "date or date-time")
        return None
    shape = (f"the file must be a mapping with the one key `{key}:` holding a list of "
             f"entries (see {EXAMPLE_CATALOG / file})")
    if not isinstance(document, dict) or key not in document:
        found = f"found {_describe(document)}" if not isinstance(document, dict) else (
            f"found the keys {', '.join(map(str, document)) or 'none'}")
        problems.append(f"{file}: no top-level `{key}:` list, {found}: {shape}")
        return None
    duplicated = list(_duplicate_keys(root))
    problems.extend(f"{file}: line {line}: the key '{name}' appears twice in one mapping: keep "
                    "one (YAML would silently use the last)" for line, name in duplicated)
    extra = [str(k) for k in document if k != key]
    if extra:
        problems.append(f"{file}: unknown top-level key {', '.join(map(repr, extra))}: the file "
                        f"holds only `{key}:`; remove it or move its entries under `{key}:`")
    items = document[key]
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append(f"{file}: `{key}:` must be a list of entries (each starting with '- '), "
                        f"found {_describe(items)}: {shape}")
        return None
    lines = _item_lines(root, key)
    entries = []
    for index, item in enumerate(items, start=1):
        line = lines[index - 1] if index - 1 < len(lines) else None
        entry = _Entry(file, index, line, item if isinstance(item, dict) else {})
        if not isinstance(item, dict):
            entry.fail(f"an entry must be a mapping of fields, found {_describe(item)}",
                       "write each entry as `- field: value` lines")
            entry.usable = False
        entries.append(entry)
    return entries


def _bad_timestamp(root: yaml.Node | None) -> str:
    """'line N: ' of the first date or date-time in the tree that cannot be constructed."""
    constructor = yaml.SafeLoader("")
    pending = [root]
    while pending:
        node = pending.pop(0)
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
            try:
                constructor.construct_yaml_timestamp(node)
            except ValueError:
                return f"line {node.start_mark.line + 1}: "
        elif isinstance(node, yaml.MappingNode):
            pending.extend(value for pair in node.value for value in pair)
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return ""


def _duplicate_keys(node: yaml.Node | None) -> Iterator[tuple[int, str]]:
    seen: set[int] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        yield key.start_mark.line + 1, key.value
                    keys.add(key.value)
                pending.append(value)
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)


def _item_lines(root: yaml.Node | None, key: str) -> list[int]:
    if not isinstance(root, yaml.MappingNode):
        return []
    for key_node, value in root.value:
        if getattr(key_node, "value", None) == key and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


# --- one entry: fields and their types --------------------------------------------------------

_LABELS = {"tiers.yaml": "name", "customers.yaml": "id", "resource_kinds.yaml": "name",
           "prices.yaml": "kind", "iaas.yaml": "id"}


class _Entry:
    """One entry of a file, the problems found in it, and typed access to its fields."""

    def __init__(self, file: str, index: int, line: int | None, fields: dict[Any, Any]) -> None:
        self.file, self.index, self.fields = file, index, fields
        label = fields.get(_LABELS[file])
        self.label = label if isinstance(label, str) and label.strip() else None
        self.number = f"entry {index}"
        details = [part for part in (self.label, line and f"line {line}") if part]
        self.ref = f"{self.number} ({', '.join(details)})" if details else self.number
        self.where = (f"{file}: entry {index}" + (f" ({self.label})" if self.label else "")
                      + (f", line {line}" if line else ""))
        self.problems: list[str] = []
        self.usable = True

    def fail(self, problem: str, fix: str) -> None:
        self.problems.append(f"{self.where}: {problem}: {fix}")
        self.usable = False

    def check_fields(self, fixes: dict[str, str], optional: tuple[str, ...] = ()) -> None:
        """Unknown fields, and required fields missing (absent or empty)."""
        known = [*fixes, *optional]
        for name in self.fields:
            if name not in known:
                self.fail(f"unknown field {name!r}", f"the fields here are {', '.join(known)} "
                          "(check the spelling, or remove it)")
        for name, fix in fixes.items():
            if self.fields.get(name) is None:
                self.fail(f"{name} is missing", fix)

    def text(self, name: str, fix: str) -> str | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            self.fail(f"{name} must be a non-empty text without surrounding spaces, found "
                      f"{_describe(value)}", fix)
            return None
        return value

    def integer(self, name: str, minimum: int, fix: str, *, scale: int = 1) -> int | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if type(value) is not int:  # bool is an int subclass: true is not 1 here
            self.fail(f"{name} must be a whole number, found {_describe(value)}", fix)
            return None
        if value < minimum:
            self.fail(f"{name} is {value}, it must be {minimum} or more", fix)
            return None
        if value * scale > BIGINT_MAX:
            self.fail(f"{name} is {value}, too large to store", fix)
            return None
        return value

    def moment(self, name: str) -> datetime | None:
        """A date (its midnight in New York) or an offset-carrying date-time, in UTC."""
        value = self.fields.get(name)
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                self.fail(f"{name} {value.isoformat()} has no UTC offset", _MOMENT_FIX)
                return None
            return value.astimezone(UTC)
        if isinstance(value, date):
            return datetime.combine(value, time(0), tzinfo=NEW_YORK).astimezone(UTC)
        self.fail(f"{name} must be a date or a date-time, found {_describe(value)}", _MOMENT_FIX)
        return None

    def day(self, name: str) -> date | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if isinstance(value, datetime) or not isinstance(value, date):
            self.fail(f"{name} must be a date, found {_describe(value)}", _DAY_FIX)
            return None
        return value

    def texts(self, name: str, fix: str) -> list[str] | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(item, str) and item.strip() and item == item.strip()
                for item in value):
            self.fail(f"{name} must be a list of non-empty names, found {_describe(value)}", fix)
            return None
        return value


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, str):
        return f"{value!r} (text)" if value.strip() else "empty text"
    if isinstance(value, float):
        return f"{value} (a decimal number)"
    if isinstance(value, datetime):
        return f"{value.isoformat()} (a date-time)"
    if isinstance(value, date):
        return f"{value.isoformat()} (a date)"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"


def _names(entries: list[_Entry] | None, field: str) -> set[str] | None:
    """Names that an entry gives, whatever else is wrong with it; None if the file is
    unusable (references to it are then not checked, to avoid an avalanche of errors)."""
    if entries is None:
        return None
    return {e.fields[field] for e in entries if isinstance(e.fields.get(field), str)}


def _unique(entries: list[tuple[_Entry, _T]], key: Callable[[_T], object], what: str,
            fix: str) -> None:
    first: dict[object, _Entry] = {}
    for entry, item in entries:
        value = key(item)
        if value in first:
            entry.fail(f"{what} {value!r} is already used by {first[value].ref}", fix)
        else:
            first[value] = entry


def _valid(entries: list[tuple[_Entry, _T]]) -> list[tuple[_Entry, _T]]:
    return [(entry, item) for entry, item in entries if entry.usable]


# --- the five files ---------------------------------------------------------------------------

def _tiers(entries: list[_Entry]) -> list[tuple[_Entry, Tier]]:
    fixes = {"name": "name the tier, e.g. micro",
             "credits_per_month": "give the credits the tier buys per month, e.g. 250"}
    tiers = []
    for entry in entries:
        if not entry.usable:
            continue
        entry.check_fields(fixes)
        name = entry.text("name", fixes["name"])
        credits = entry.integer("credits_per_month", 0, fixes["credits_per_month"],
                                scale=MICROCREDITS_PER_CREDIT)
        if entry.usable and name is not None and credits is not None:
            tiers.append((entry, Tier(name, credits)))
    _unique(tiers, lambda t: t.name, "tier name", "tier names must be unique: rename or "
            "remove one")
    return _valid(tiers)


def _customers(entries: list[_Entry], tiers: set[str] | None) -> list[tuple[_Entry, Customer]]:
    fixes = {"id": "give the customer a stable id, e.g. gsa-tts",
             "name": "give the customer's name, e.g. General Services Administration",
             "tier": "give the customer's tier, a name from tiers.yaml",
             "orgs": "list the customer's Cloud Foundry org names, e.g. [gsa-tts-prod] "
                     "(or [] for none yet)"}
    customers = []
    org_owner: dict[str, _Entry] = {}
    first_with_id: dict[str, _Entry] = {}
    for entry in entries:
        if not entry.usable:
            continue
        entry.check_fields(fixes)
        customer_id = entry.text("id", fixes["id"])
        if customer_id is not None and customer_id in first_with_id:
            # checked first: a copied entry would otherwise be reported as claiming the
            # first one's orgs, which is not the mistake
            entry.fail(f"customer id {customer_id!r} is already used by "
                       f"{first_with_id[customer_id].ref}",
                       "customer ids must be unique: rename one or merge the two entries")
            continue
        if customer_id is not None:
            first_with_id[customer_id] = entry
        if customer_id is not None and not _CUSTOMER_ID.fullmatch(customer_id):
            entry.fail(f"id {customer_id!r} is not a lower-case slug", "use lower-case "
                       "letters, digits and hyphens (it appears in ledger keys), e.g. gsa-tts")
        name = entry.text("name", fixes["name"])
        tier = entry.text("tier", fixes["tier"])
        if tier is not None and tiers is not None and tier not in tiers:
            entry.fail(f"tier {tier!r} is not in tiers.yaml",
                       f"use one of {', '.join(sorted(tiers))} or add the tier to tiers.yaml")
        orgs = entry.texts("orgs", fixes["orgs"]) or []
        for org in orgs:
            owner = org_owner.get(org)
            if owner is entry:
                entry.fail(f"org {org!r} is listed twice", "list each org once")
            elif owner is not None:
                entry.fail(f"org {org!r} is already claimed by {owner.ref}",
                           "an org belongs to one customer: remove it from one of them")
            else:
                org_owner[org] = entry
        if entry.usable and customer_id and name and tier:
            customers.append((entry, Customer(customer_id, name, tier, tuple(orgs))))
    return _valid(customers)


def _kinds(entries: list[_Entry]) -> list[tuple[_Entry, ResourceKindEntry]]:
    fixes = {"meter": "give the meter: cfapps (app memory) or cfservices (a service plan)",
             "natural_id": "give the kind's id in its meter: app-memory for cfapps, the "
                           "service plan guid for cfservices",
             "name": "name the kind: <offering>/<plan> for a service plan, e.g. "
                     "aws-rds/micro-psql"}
    kinds = []
    for entry in entries:
        if not entry.usable:
            continue
        entry.check_fields(fixes, optional=("description",))
        meter = entry.text("meter", fixes["meter"])
        natural_id = entry.text("natural_id", fixes["natural_id"])
        name = entry.text("name", fixes["name"])
        description = entry.text("description", "describe the kind in a line, or remove the "
                                 "field")
        if meter is not None and meter not in METER_UNITS:
            entry.fail(f"meter {meter!r} is unknown", "use cfapps (app memory) or cfservices "
                       "(service plans)")
        elif meter == "cfapps" and natural_id is not None and natural_id != APP_MEMORY:
            entry.fail(f"natural_id {natural_id!r} is not a cfapps kind",
                       f"cfapps has one kind, natural_id {APP_MEMORY}")
        elif meter == "cfservices":
            if natural_id is not None and not _is_guid(natural_id):
                entry.fail(f"natural_id {natural_id!r} is not a service plan guid",
                           "give the plan's guid as CF lists it (cf curl /v3/service_plans)")
            if name is not None and not re.fullmatch(r"[^/\s]+/[^/\s]+", name):
                entry.fail(f"name {name!r} is not <offering>/<plan>",
                           "name a service plan after its offering and plan, e.g. "
                           "aws-rds/micro-psql")
        if entry.usable and meter and natural_id and name:
            kinds.append((entry, ResourceKindEntry(meter, natural_id, name, description)))
    _unique(kinds, lambda k: k.name, "kind name", "prices name their kind, so kind names must "
            "be unique: rename one")
    _unique(kinds, lambda k: (k.meter, k.natural_id), "meter and natural_id",
            "a kind is listed once: merge the two entries")
    return _valid(kinds)


def _prices(entries: list[_Entry], kinds: set[str] | None,
            kind_meters: dict[str, str]) -> list[tuple[_Entry, PriceEntry]]:
    prices = []
    for entry in entries:
        if not entry.usable:
            continue
        kind_fix = "give the name of a kind from resource_kinds.yaml, e.g. aws-rds/micro-psql"
        fixes = {"kind": kind_fix,
                 "microcredits_per_unit": "give the price in microcredits per unit (1 credit "
                                          "= 1000000 microcredits), 0 for a free plan",
                 "unit": _UNIT_FIX[kind_meters.get(entry.label or "")],
                 "valid_from": f"give the first instant the price applies: {_MOMENT_FIX}"}
        entry.check_fields(fixes, optional=("valid_to", "note"))
        kind = entry.text("kind", kind_fix)
        if kind is not None and kinds is not None and kind not in kinds:
            entry.fail(f"kind {kind!r} is not in resource_kinds.yaml",
                       "add the kind there (meter, natural_id, name) or correct the name")
        per_unit = entry.integer("microcredits_per_unit", 0, fixes["microcredits_per_unit"])
        unit = entry.integer("unit", 1, fixes["unit"])
        valid_from = entry.moment("valid_from")
        valid_to = entry.moment("valid_to")
        entry.text("note", "say in a line why the price is what it is, or remove the field")
        if valid_from and valid_to and valid_to <= valid_from:
            entry.fail(f"valid_to ({valid_to:%Y-%m-%d %H:%M} UTC) is not after valid_from "
                       f"({valid_from:%Y-%m-%d %H:%M} UTC)", "the range is [valid_from, "
                       "valid_to): make valid_to later, or remove it for an open-ended price")
        if entry.usable and kind and per_unit is not None and unit and valid_from:
            note = entry.fields.get("note")
            prices.append((entry, PriceEntry(kind, per_unit, unit, valid_from, valid_to,
                                             note if isinstance(note, str) else None)))
    _overlaps(prices)
    return _valid(prices)


def _overlaps(prices: list[tuple[_Entry, PriceEntry]]) -> None:
    """Two prices of one kind valid at the same instant: name both entries."""
    by_kind: dict[str, list[tuple[_Entry, PriceEntry]]] = {}
    for entry, price in prices:
        by_kind.setdefault(price.kind, []).append((entry, price))
    for same_kind in by_kind.values():
        same_kind.sort(key=lambda pair: pair[1].valid_from)
        for i, (entry, price) in enumerate(same_kind):
            for other_entry, other in same_kind[i + 1:]:
                if price.valid_to is not None and price.valid_to <= other.valid_from:
                    break
                end = min(_upper(price), _upper(other))
                entry.fail(
                    f"its validity overlaps {other_entry.ref} of the same kind from "
                    f"{other.valid_from:%Y-%m-%d %H:%M} UTC to "
                    + (f"{end:%Y-%m-%d %H:%M} UTC" if end != datetime.max.replace(tzinfo=UTC)
                       else "open end"),
                    f"a kind has one price at a time: set this entry's valid_to to "
                    f"{other_entry.number}'s valid_from, or correct one of the two")


def _upper(price: PriceEntry) -> datetime:
    return price.valid_to or datetime.max.replace(tzinfo=UTC)


def _iaas(entries: list[_Entry], customers: set[str] | None) -> list[tuple[_Entry, Iaa]]:
    fixes = {"id": "give the agreement's number, e.g. IAA-GSA-TTS-FY26",
             "customer": "give the id of a customer from customers.yaml",
             "credits": "give the credits the agreement buys for its whole period, e.g. 3000",
             "pop_start": f"give the first day of the period of performance: {_DAY_FIX}",
             "pop_end": f"give the last day of the period of performance (inclusive): {_DAY_FIX}"}
    iaas = []
    for entry in entries:
        if not entry.usable:
            continue
        entry.check_fields(fixes)
        iaa_id = entry.text("id", fixes["id"])
        if iaa_id is not None and re.search(r"\s", iaa_id):
            entry.fail(f"id {iaa_id!r} contains spaces", "write the agreement number without "
                       "spaces, e.g. IAA-GSA-TTS-FY26")
        customer = entry.text("customer", fixes["customer"])
        if customer is not None and customers is not None and customer not in customers:
            entry.fail(f"customer {customer!r} is not in customers.yaml",
                       "use the id of a customer there, or add the customer")
        credits = entry.integer("credits", 1, fixes["credits"], scale=MICROCREDITS_PER_CREDIT)
        pop_start, pop_end = entry.day("pop_start"), entry.day("pop_end")
        if pop_start and pop_end and pop_end < pop_start:
            entry.fail(f"pop_end {pop_end} is before pop_start {pop_start}", "pop_end is the "
                       "last day of the period (inclusive): make it pop_start or later")
        if entry.usable and iaa_id and customer and credits and pop_start and pop_end:
            iaas.append((entry, Iaa(iaa_id, customer, credits, pop_start, pop_end)))
    _unique(iaas, lambda i: i.id, "agreement id", "agreement ids must be unique: rename one")
    return _valid(iaas)


def _is_guid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False
