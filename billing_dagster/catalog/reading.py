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
    Modification,
    OrgOwnership,
    PriceEntry,
    ResourceKindEntry,
    Tier,
    TierPeriod,
)
from billing_dagster.meters.units import METER_UNITS, SINGLE_KINDS, UNKNOWN_INSTANCE, UNTAGGED
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

BIGINT_MAX = 2**63 - 1
NEW_YORK = ZoneInfo(BUSINESS_TIMEZONE)
_CUSTOMER_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_T = TypeVar("_T")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)

_UNIT_FIX: dict[str | None, str] = {
    "cfapps": "give the price's unit in MiB-seconds, e.g. 2691072000 for 1 GiB over a "
              "730-hour month",
    "cfservices": "give the price's unit in instance-seconds, e.g. 2628000 for a 730-hour month",
    "rds_storage": "give the price's unit in GiB-seconds, e.g. 262800000 for 100 GiB over a "
                   "730-hour month",
    "opensearch_storage": "give the price's unit in GiB-seconds, e.g. 262800000 for 100 GiB "
                          "over a 730-hour month",
    "s3_storage": "give the price's unit in byte-seconds, e.g. 1128770960179200000 for 400 GiB "
                  "over a 730-hour month",
    "ses_sends": "give the price's unit in sends, e.g. 150000",
    "ses_attachment_bytes": "give the price's unit in bytes, e.g. 128849018880 for 120 GiB",
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

    def integer(self, name: str, minimum: int, fix: str, *, scale: int = 1,
                fields: dict[Any, Any] | None = None, label: str | None = None) -> int | None:
        """A whole number of at least ``minimum`` (``fields``/``label``: of a nested item)."""
        value = (self.fields if fields is None else fields).get(name)
        label = label or name
        if value is None:
            return None
        if type(value) is not int:  # bool is an int subclass: true is not 1 here
            self.fail(f"{label} must be a whole number, found {_describe(value)}", fix)
            return None
        if value < minimum:
            self.fail(f"{label} is {value}, it must be {minimum} or more", fix)
            return None
        if abs(value) * scale > BIGINT_MAX:
            self.fail(f"{label} is {value}, too large to store", fix)
            return None
        return value

    def moment(self, name: str, *, fields: dict[Any, Any] | None = None,
               label: str | None = None) -> datetime | None:
        """A date (its midnight in New York) or an offset-carrying date-time, in UTC."""
        value = (self.fields if fields is None else fields).get(name)
        label = label or name
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                self.fail(f"{label} {value.isoformat()} has no UTC offset", _MOMENT_FIX)
                return None
            return value.astimezone(UTC)
        if isinstance(value, date):
            return datetime.combine(value, time(0), tzinfo=NEW_YORK).astimezone(UTC)
        self.fail(f"{label} must be a date or a date-time, found {_describe(value)}",
                  _MOMENT_FIX)
        return None

    def day(self, name: str, *, fields: dict[Any, Any] | None = None,
            label: str | None = None) -> date | None:
        value = (self.fields if fields is None else fields).get(name)
        label = label or name
        if value is None:
            return None
        if isinstance(value, datetime) or not isinstance(value, date):
            self.fail(f"{label} must be a date, found {_describe(value)}", _DAY_FIX)
            return None
        return value

    def items(self, name: str, fields: dict[str, str], optional: tuple[str, ...],
              what: str, fix: str) -> list[tuple[str, dict[Any, Any]]]:
        """The mappings listed under ``name``, each with its label ('<what> N'), after checking
        their fields (unknown ones, and required ones missing: such an item is reported and
        left out); [] when there are none."""
        value = self.fields.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(f"{name} must be a list, found {_describe(value)}", fix)
            return []
        found = []
        for index, item in enumerate(value, start=1):
            label = f"{what} {index}"
            if not isinstance(item, dict):
                self.fail(f"{label} must be a mapping of fields, found {_describe(item)}", fix)
                continue
            known = [*fields, *optional]
            problems = len(self.problems)
            for key in item:
                if key not in known:
                    self.fail(f"{label} has an unknown field {key!r}",
                              f"the fields of {what} are {', '.join(known)}")
            for key, key_fix in fields.items():
                if item.get(key) is None:
                    self.fail(f"{label} has no {key}", key_fix)
            if len(self.problems) == problems:  # an item with a wrong field is not read on
                found.append((label, item))
        return found

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
             "tier": "give the customer's tier, a name from tiers.yaml (or, when it changes, a "
                     "list of `- name: <tier>` with `valid_from: <first day of a month>`)",
             "orgs": "list the customer's Cloud Foundry orgs as `- guid: <org guid>` with "
                     "`name: <org name>` (or [] for none yet)"}
    customers = []
    claims: dict[str, list[tuple[_Entry, OrgOwnership]]] = {}
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
        periods = _tier_periods(entry, tiers, fixes["tier"])
        orgs = _org_ownerships(entry, fixes["orgs"])
        for org in orgs:
            _claim(claims.setdefault(org.guid, []), entry, org)
        if entry.usable and customer_id and name and periods:
            customers.append((entry, Customer(customer_id, name, periods, tuple(orgs))))
    return _valid(customers)


def _tier_periods(entry: _Entry, tiers: set[str] | None,
                  fix: str) -> tuple[TierPeriod, ...] | None:
    """``tier: <name>`` (the tier throughout) or a list of ``{name, valid_from}``, each valid
    from the first day of a month until the next one's; the first may omit valid_from."""
    value = entry.fields.get("tier")
    if isinstance(value, list):
        periods: list[TierPeriod] = []
        for label, item in entry.items("tier", {"name": "name the tier, e.g. micro"},
                                       ("valid_from",), "tier period", fix):
            name = item.get("name")
            starts = entry.day("valid_from", fields=item, label=f"{label}'s valid_from")
            if not isinstance(name, str) or (tiers is not None and name not in tiers):
                known = f"use one of {', '.join(sorted(tiers))}" if tiers else "use a tier name"
                entry.fail(f"{label}: tier {name!r} is not in tiers.yaml",
                           f"{known} or add the tier to tiers.yaml")
                continue
            if starts is None and periods:
                entry.fail(f"{label} ({name}) has no valid_from", "every tier after the first "
                           "starts on a date: give valid_from, the first day of a month")
            elif starts is not None and starts.day != 1:
                entry.fail(f"{label} ({name}) starts on {starts}, not on the first day of a "
                           "month", "a tier changes with the month: write the first day of "
                           f"the month, e.g. {starts.replace(day=1)}")
            elif periods and starts is not None and (
                    periods[-1].valid_from is not None and starts <= periods[-1].valid_from):
                entry.fail(f"{label} ({name}) starts on {starts}, not after the tier before it "
                           f"({periods[-1].valid_from})", "list the tiers in the order they "
                           "take effect")
            periods.append(TierPeriod(name, starts))
        if not periods and entry.usable:
            entry.fail("tier is an empty list", fix)
        return tuple(periods) if entry.usable else None
    tier = entry.text("tier", fix)
    if tier is not None and tiers is not None and tier not in tiers:
        entry.fail(f"tier {tier!r} is not in tiers.yaml",
                   f"use one of {', '.join(sorted(tiers))} or add the tier to tiers.yaml")
        return None
    return (TierPeriod(tier),) if tier is not None else None


def _org_ownerships(entry: _Entry, fix: str) -> list[OrgOwnership]:
    """The orgs a customer lists, by guid with an optional name (an alias for people) and
    period of ownership; an org given by its name alone is refused (a CF rename would orphan
    its usage)."""
    value = entry.fields.get("orgs")
    if isinstance(value, list):
        for org in value:
            if isinstance(org, str):
                entry.fail(f"org {org!r} is given by name alone",
                           f"give each org by its guid, with the name as an alias: "
                           f"`- guid: <guid>` and `name: {org}` (`cf org {org} --guid` prints "
                           "the guid); a name alone would lose the org's usage when CF "
                           "renames it")
        entry.fields["orgs"] = [org for org in value if not isinstance(org, str)]
    orgs: list[OrgOwnership] = []
    for label, item in entry.items("orgs", {"guid": "give the org's guid (cf org <name> "
                                                     "--guid)"},
                                   ("name", "valid_from", "valid_to"), "org", fix):
        guid, alias = item.get("guid"), item.get("name")
        if alias is not None and (not isinstance(alias, str) or not alias.strip()):
            entry.fail(f"{label}'s name must be a non-empty text, found {_describe(alias)}",
                       "give the org's name as CF lists it, or remove the field")
            alias = None
        if alias:
            label = f"org {alias!r}"
        if not isinstance(guid, str) or not _is_guid(guid):
            entry.fail(f"{label}: guid {guid!r} is not a guid", "give the org's guid as CF "
                       "lists it, e.g. 9531985d-5d9d-49f8-9818-e811892f902b")
            continue
        starts = entry.moment("valid_from", fields=item, label=f"{label}'s valid_from")
        ends = entry.moment("valid_to", fields=item, label=f"{label}'s valid_to")
        for bound, name in ((starts, "valid_from"), (ends, "valid_to")):
            if bound is not None and (bound.minute or bound.second or bound.microsecond):
                entry.fail(f"{label}'s {name} {bound:%Y-%m-%d %H:%M:%S} UTC is not on a whole "
                           "hour", "an org changes owner at the start of an hour: give a date "
                           "(midnight New York) or a whole hour")
        if starts and ends and ends <= starts:
            entry.fail(f"{label}'s valid_to ({ends:%Y-%m-%d %H:%M} UTC) is not after its "
                       f"valid_from ({starts:%Y-%m-%d %H:%M} UTC)", "ownership is "
                       "[valid_from, valid_to): make valid_to later, or remove it")
            continue
        orgs.append(OrgOwnership(guid, alias, starts, ends))
    return orgs


def _claim(claims: list[tuple[_Entry, OrgOwnership]], entry: _Entry, org: OrgOwnership) -> None:
    """Record that ``entry`` owns ``org`` over its period, refusing a period in which another
    entry (or the same one) already owns the org."""
    for other_entry, other in claims:
        starts = max(org.valid_from or _EARLIEST, other.valid_from or _EARLIEST)
        ends = min(org.valid_to or _LATEST, other.valid_to or _LATEST)
        if starts >= ends:
            continue
        during = "" if (starts, ends) == (_EARLIEST, _LATEST) else (
            " from " + ("the start" if starts == _EARLIEST else f"{starts:%Y-%m-%d %H:%M} UTC")
            + " to " + ("open end" if ends == _LATEST else f"{ends:%Y-%m-%d %H:%M} UTC"))
        if other_entry is entry:
            entry.fail(f"org {org.label!r} is listed twice{during}", "list each org once "
                       "per period of ownership")
        else:
            entry.fail(f"org {org.label!r} is already claimed by {other_entry.ref}{during}",
                       "an org belongs to one customer at a time: remove it from one of them, "
                       "or end one's period (valid_to) where the other's begins (valid_from)")
        return
    claims.append((entry, org))


def _kinds(entries: list[_Entry]) -> list[tuple[_Entry, ResourceKindEntry]]:
    fixes = {"meter": f"give the meter: one of {', '.join(METER_UNITS)}",
             "natural_id": "give the kind's id in its meter: app-memory for cfapps, the "
                           "service plan guid for cfservices, the meter's one kind for an "
                           "AWS meter (allocated-storage, ebs-storage, stored-bytes, sends, "
                           "attachment-bytes)",
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
            entry.fail(f"meter {meter!r} is unknown", f"use one of {', '.join(METER_UNITS)}")
        elif meter in SINGLE_KINDS and natural_id is not None and natural_id not in (
                allowed := _single_kind_ids(meter)):
            entry.fail(f"natural_id {natural_id!r} is not a {meter} kind",
                       f"{meter} has one kind, natural_id {allowed[0]}" if len(allowed) == 1
                       else f"{meter} has the kinds {', '.join(allowed)}")
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


def _single_kind_ids(meter: str) -> tuple[str, ...]:
    """The natural ids a kind of a single-kind meter may have: its own, and for AWS meters the
    stubs that hold unattributed usage (the billing team may name and price those too)."""
    if meter == "cfapps":
        return (SINGLE_KINDS[meter],)
    return (SINGLE_KINDS[meter], UNTAGGED, UNKNOWN_INSTANCE)


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
        entry.check_fields(fixes, optional=("modifications",))
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
        modifications = (_modifications(entry, credits, pop_start, pop_end)
                         if credits and pop_start and pop_end and entry.usable else ())
        if entry.usable and iaa_id and customer and credits and pop_start and pop_end:
            iaas.append((entry, Iaa(iaa_id, customer, credits, pop_start, pop_end,
                                    modifications)))
    _unique(iaas, lambda i: i.id, "agreement id", "agreement ids must be unique: rename one")
    return _valid(iaas)


def _modifications(entry: _Entry, credits: int, pop_start: date,
                   pop_end: date) -> tuple[Modification, ...]:
    """An agreement's modifications, in the order they take effect: each effective on a day of
    the period as it stands by then, adding or removing credits (never more than the agreement
    holds) and/or moving the period's last day (to its effective day or later)."""
    fix = ("list modifications as `- id: <number>`, `effective: <date>`, and `credits: <added, "
           "or negative: removed>` and/or `pop_end: <new last day>`")
    fields = {"id": "give the modification's number, e.g. P00001",
              "effective": f"give the day the modification takes effect: {_DAY_FIX}"}
    found: list[Modification] = []
    seen: set[str] = set()
    for label, item in entry.items("modifications", fields, ("credits", "pop_end", "note"),
                                   "modification", fix):
        mod_id, effective = item.get("id"), entry.day("effective", fields=item,
                                                      label=f"{label}'s effective")
        if not isinstance(mod_id, str) or not mod_id.strip() or re.search(r"\s", mod_id):
            entry.fail(f"{label}'s id must be a text without spaces, found "
                       f"{_describe(mod_id)}", fields["id"])
            continue
        label = f"modification {mod_id}"
        if mod_id in seen:
            entry.fail(f"{label} is listed twice", "give each modification its own number")
        seen.add(mod_id)
        added = entry.integer("credits", -BIGINT_MAX, "give the whole credits added, or a "
                              "negative number for credits removed", scale=MICROCREDITS_PER_CREDIT,
                              fields=item, label=f"{label}'s credits") or 0
        new_end = entry.day("pop_end", fields=item, label=f"{label}'s pop_end")
        if effective is None:
            continue
        if not added and new_end is None:
            entry.fail(f"{label} changes nothing", "give credits (added, or negative: removed) "
                       "and/or pop_end (the new last day of the period)")
        end = next((m.pop_end for m in reversed(found) if m.pop_end), pop_end)
        if found and effective < found[-1].effective:
            entry.fail(f"{label} takes effect on {effective}, before modification "
                       f"{found[-1].id} ({found[-1].effective})", "list modifications in the "
                       "order they take effect")
        elif not pop_start <= effective <= end:
            entry.fail(f"{label} takes effect on {effective}, outside the agreement's period "
                       f"({pop_start} to {end})", "a modification changes an agreement while "
                       "it runs: give a day within its period, or record a new agreement")
        if new_end is not None and new_end < effective:
            entry.fail(f"{label}'s pop_end {new_end} is before its effective day {effective}",
                       "the period cannot end before the modification takes effect")
        holds = credits + sum(m.credits for m in found) + added
        if holds < 0:
            entry.fail(f"{label} removes {-added} credits, more than the agreement holds "
                       f"({holds - added})", "remove at most what the agreement holds")
        found.append(Modification(mod_id, effective, added, new_end))
    return tuple(found)


def _is_guid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False
