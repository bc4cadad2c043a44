"""The accuracy suite: a simulated foundation lives through a month while the project runs as
production runs it, and every billed resource-hour is compared with the simulator's oracle.

Production's rhythm, hour by hour: at minute 1 a landing (a snapshot and the new usage events),
then the metering (measure and price) of the hour that just ended, through the same functions
the assets call; one day of it as real Dagster runs of ``landing_job`` and ``metering_job``. On
top of the simulator's own churn (starts, stops, scaling, crashes and restarts, blue-green
deploys, apps and instances living a few seconds or none, re-plans, deletes, user-provided
instances, stopped apps) the scenario scripts what the random churn does not give: the first
install when CF already holds 31 days of events, an org and a space created mid-month, a
controller whose clock is behind, event pages of 1, 3 and 5,000, the snapshot before and after
the events, a landing outage, and a purge of CF's usage events.

Then the month is posted and each customer's posted microcredits per price line are compared
with the oracle's usage priced and rounded once per line, in plain Python from the catalog
files; beside it, the error of cloud-gov/billing's method (the snapshot at minute 1 counted as
the whole hour, amounts truncated per hour) on the same month.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import psycopg
import yaml
from psycopg.rows import dict_row

from billing_dagster.aws.embedded import EmbeddedAws
from billing_dagster.catalog import EXAMPLE_CATALOG, load_catalog, read_catalog
from billing_dagster.cf.client import CloudFoundryClient
from billing_dagster.database import connect
from billing_dagster.definitions import defs
from billing_dagster.jobs import landing_job, metering_job
from billing_dagster.ledger.posting import post_month
from billing_dagster.meters import AWS_METERS, METERS, STREAMS
from billing_dagster.partitions import contiguous, hourly_keys_between
from billing_dagster.pricing.postings import price_window
from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.aws import AwsFoundation
from billing_dagster.simulator.records import Organization
from billing_dagster.sql import copy_rows, queries_in, query
from billing_dagster.usage.aws import read_and_land
from billing_dagster.usage.events import land_events
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import land_snapshot, take_snapshot

log = logging.getLogger("accuracy")
SQL = queries_in(Path(__file__).with_name("comparison.sql"))
NEW_YORK = ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)
CLIENT = ("billing", "billing-secret")
CUSTOMERS = ("agency-a", "agency-b", "agency-c", "agency-d", "agency-e")
NEW_ORG = "accuracy-new-org"
NEW_ORG_GUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "billing-dagster:accuracy-new-org"))
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
NO_RECHECK = datetime(9999, 1, 1, tzinfo=UTC)  # the harness lands one reading at a time


@dataclass(frozen=True)
class Scenario:
    """A month (or the first ``hours`` of it) of one foundation, and when each fault happens,
    in hours from the start of the business month."""

    seed: int = 2025
    apps: int = 2000
    service_instances: int = 800
    month: date = date(2025, 5, 1)  # 744 hours in New York
    hours: int = 744
    history_days: int = 40  # the foundation lives this long before the month starts
    install_at: int = 24  # the first landing: CF then holds 31 days of events
    dagster_hours: tuple[int, int] = (48, 72)  # landed and metered as real Dagster runs
    outage: tuple[int, int] = (200, 206)  # no landing at these hours' ends
    purge_at: int = 400  # CF's usage events purged and reseeded at half past this hour
    skew_at: tuple[int, ...] = (30, 31, 120, 500)
    new_org_at: int = 90
    move_at: int = 300  # an org passes from one customer to another (catalog periods)
    rename_at: int = 320  # an org renamed in CF (its owner keeps its usage)
    page_sizes: tuple[int, ...] = (5000, 1, 3)  # per_page of event reads, hour by hour

    @property
    def month_start(self) -> datetime:
        return datetime.combine(self.month, time(), NEW_YORK).astimezone(UTC)

    @property
    def end(self) -> datetime:
        return self.month_start + self.hours * HOUR

    def hour(self, n: int) -> datetime:
        return self.month_start + n * HOUR

    def scaled(self, hours: int) -> Scenario:
        """The same scenario compressed into the first ``hours`` of the month."""
        def at(n: int) -> int:
            return n * hours // self.hours
        install = max(6, at(self.install_at))
        dagster = max(at(self.dagster_hours[0]), install + 1)  # runs on top of an install
        return Scenario(
            seed=self.seed, apps=self.apps, service_instances=self.service_instances,
            month=self.month, hours=hours, history_days=self.history_days,
            install_at=install,
            dagster_hours=(dagster, dagster + 6),
            outage=(at(self.outage[0]), at(self.outage[0]) + 6),
            purge_at=at(self.purge_at),
            skew_at=tuple(sorted({max(at(h), install + 1) for h in self.skew_at})),
            new_org_at=at(self.new_org_at), move_at=at(self.move_at),
            rename_at=max(at(self.rename_at), install + 1), page_sizes=self.page_sizes)


@dataclass
class StatusRow:
    meter: str
    status: str
    resource_hours: int
    exact: int
    differing: int
    missing: int
    extra: int


@dataclass
class LineRow:
    customer: str
    meter: str
    kind: str
    posted: int
    oracle: int
    off_in_flagged_hours: int  # the part of posted - oracle that flagged resource-hours explain
    cloudgov: int

    @property
    def off(self) -> int:
        return self.posted - self.oracle

    @property
    def unexplained(self) -> int:
        return self.off - self.off_in_flagged_hours


@dataclass
class Report:
    scenario: Scenario
    by_status: list[StatusRow]
    differing_complete: list[dict[str, Any]]
    flagged: list[dict[str, Any]]
    lines: list[LineRow]
    ledger: list[str] = field(default_factory=list)  # agreement rules the draws break
    draws: int = 0
    churn: dict[str, int] = field(default_factory=dict)

    @property
    def complete_differing(self) -> int:
        return sum(r.differing for r in self.by_status if r.status == "complete")

    @property
    def lines_off_by_more_than_one(self) -> list[LineRow]:
        return [line for line in self.lines if abs(line.unexplained) > 1]

    def table(self) -> str:
        s = self.scenario
        out = [f"Accuracy against the oracle: {s.hours} hours of business month "
               f"{s.month:%Y-%m} from {s.month_start:%Y-%m-%d %H:%M} UTC; {s.apps} apps and "
               f"{s.service_instances} service instances at the start, seed {s.seed}",
               "churn: " + ", ".join(f"{k} {v}" for k, v in self.churn.items()), "",
               f"{'meter':<11} {'coverage':<13} {'resource-hours':>14} {'exact':>10} "
               f"{'differing':>9} {'unit-s missing':>16} {'unit-s extra':>14}"]
        for r in self.by_status:
            out.append(f"{r.meter:<11} {r.status:<13} {r.resource_hours:>14,} {r.exact:>10,} "
                       f"{r.differing:>9,} {r.missing:>16,} {r.extra:>14,}")
        total = [sum(getattr(r, f) for r in self.by_status)
                 for f in ("resource_hours", "exact", "differing", "missing", "extra")]
        out.append(f"{'all':<11} {'':<13} {total[0]:>14,} {total[1]:>10,} {total[2]:>9,} "
                   f"{total[3]:>16,} {total[4]:>14,}")
        flagged_by = defaultdict(int)
        for f in self.flagged:
            flagged_by[(f["meter"], f["status"])] += 1
        out += ["", f"Flagged hours (not complete): {len(self.flagged)}"
                + "".join(f"; {m} {st}: {n}" for (m, st), n in sorted(flagged_by.items()))]
        for f in self.flagged[:12]:
            out.append(f"  {f['hour_start']:%Y-%m-%d %H:00} {f['meter']:<10} {f['status']:<9} "
                       f"uncovered {f['uncovered_seconds']:>4} s, uncertain "
                       f"{f['uncertain_resources']} resources "
                       f"({f['uncertain_resource_seconds']} resource-s): {f['reason']}")
        if len(self.flagged) > 12:
            out.append(f"  ... {len(self.flagged) - 12} more")
        if self.differing_complete:
            out += ["", "Differing resource-hours in complete hours (must be none):"]
            out += [f"  {d['hour_start']:%Y-%m-%d %H:00} {d['meter']} {d['resource']} "
                    f"{d['kind']}: oracle {d['truth']:,}, billed {d['billed']:,}"
                    for d in self.differing_complete[:20]]
        out += ["", "Posted microcredits per customer and price line (oracle: its usage priced "
                "and rounded once per line; cloud-gov/billing: the minute-1 snapshot as the "
                "whole hour, truncated per resource-hour):",
                f"{'customer':<10} {'line':<48} {'posted':>16} {'oracle':>16} {'off':>8} "
                f"{'flagged':>8} {'cloud-gov':>16} {'its off':>12}"]
        for line in self.lines:
            if not (line.posted or line.oracle or line.cloudgov):
                continue  # a free plan
            out.append(f"{line.customer:<10} {line.meter + ':' + line.kind:<48} "
                       f"{line.posted:>16,} {line.oracle:>16,} {line.off:>8,} "
                       f"{line.off_in_flagged_hours:>8,} {line.cloudgov:>16,} "
                       f"{line.cloudgov - line.oracle:>12,}")
        posted = sum(line.posted for line in self.lines)
        oracle = sum(line.oracle for line in self.lines)
        cloudgov = sum(line.cloudgov for line in self.lines)
        worst = max((abs(line.unexplained) for line in self.lines), default=0)
        out += [f"{'all':<10} {len(self.lines):>3} lines{'':<38} {posted:>16,} {oracle:>16,} "
                f"{posted - oracle:>8,} {'':>8} {cloudgov:>16,} {cloudgov - oracle:>12,}",
                "",
                f"Posted vs oracle, outside flagged hours: worst line off by {worst} "
                f"microcredit(s) (target <= 1); cloud-gov/billing's method off by "
                f"{sum(abs(line.cloudgov - line.oracle) for line in self.lines):,} microcredits "
                f"in all ({_share(cloudgov - oracle, oracle)} net).",
                "",
                f"Ledger against the catalog's agreements (read independently): {self.draws:,} "
                f"hourly draws checked, {len(self.ledger)} rule(s) broken (must be none)"]
        out += [f"  {problem}" for problem in self.ledger[:20]]
        return "\n".join(out)


def _share(part: int, whole: int) -> str:
    if not whole:
        return "n/a"
    return f"{(Decimal(part * 100) / Decimal(whole)).quantize(Decimal('0.01')):+}%"


# -- running the month ---------------------------------------------------------------------


def run(database_url: str, scenario: Scenario) -> Report:
    """Live through the scenario on a fresh, migrated database; compare; return the report."""
    s = scenario
    foundation = Foundation(s.seed, s.apps, s.service_instances,
                            s.month_start - timedelta(days=s.history_days))
    with Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim, \
            EmbeddedAws() as aws, \
            catalog_directory(foundation, s.hour(s.move_at)) as catalog, \
            connect(database_url) as conn:
        world = AwsFoundation(foundation, aws.clients())
        load_catalog(conn, read_catalog(catalog))
        production = Production(sim, aws, conn, database_url, s)
        try:
            churn = production.live()
        finally:
            production.close()
        report = compare(sim, world, conn, s, catalog)
        report.churn = churn
    return report


class Production:
    """The project run as production runs it, hour by hour, with the scenario's faults."""

    def __init__(self, sim: Simulator, aws: EmbeddedAws, conn: psycopg.Connection,
                 database_url: str, scenario: Scenario) -> None:
        self.sim = sim
        self.aws = aws
        self.conn = conn
        self.s = scenario
        self.database_url = database_url
        self.measured_to = scenario.month_start  # hours before this are measured
        self.reading_cursor = 0  # remeasure_sensor's: the newest reading it has looked at
        self.churn: dict[str, int] = defaultdict(int)
        self._dagster = _DagsterRuns(sim, aws, database_url)

    def close(self) -> None:
        self._dagster.instance.dispose()  # its temporary directory, removed now

    def live(self) -> dict[str, int]:
        s = self.s
        for n in range(s.install_at, s.hours + 1):
            hour_end = s.hour(n)  # the landing at minute 1 after it
            if n > s.install_at:
                self.script(n - 1)
            landing_at = hour_end + timedelta(minutes=1)
            self.sim.advance_to(landing_at)
            if s.outage[0] <= n < s.outage[1]:
                self.churn["landings skipped (outage)"] += 1
                continue
            if s.dagster_hours[0] <= n < s.dagster_hours[1] and self.measured_to == s.hour(n - 1):
                self._dagster.land_and_meter(hour_end - HOUR)
                self.churn["hours as Dagster runs"] += 1
            else:
                self.land(n)
                self.meter(self.measured_to, hour_end)
            self.measured_to = hour_end
            self.remeasure()
            if n % 24 == 0:
                log.info("day %d of %d landed and metered", n // 24, s.hours // 24)
        self.churn["changes applied"] = self.sim.foundation.changes_applied
        return dict(self.churn)

    def land(self, n: int) -> None:
        """The landing job's steps: foundation_snapshot and usage_events in either order, then
        aws_readings."""
        now = self.sim.foundation.now
        per_page = self.s.page_sizes[n % len(self.s.page_sizes)]
        steps = [lambda: self._snapshot(now), lambda: self._events(now, per_page)]
        if n % 2:
            steps.reverse()
            self.churn["landings with events before the snapshot"] += 1
        for step in steps:
            step()
        read_and_land(self.conn, self.aws.clients(), AWS_METERS, now)

    def _snapshot(self, now: datetime) -> None:
        with CloudFoundryClient(self.sim.url, *CLIENT) as client:
            snapshot = take_snapshot(client, METERS, now)
        land_snapshot(self.conn, snapshot)

    def _events(self, now: datetime, per_page: int) -> None:
        with CloudFoundryClient(self.sim.url, *CLIENT, per_page=per_page) as client:
            for stream in STREAMS:
                land_events(self.conn, client, stream, now)

    def remeasure(self) -> None:
        """What remeasure_sensor does after a landing: the hours measured before data that
        changes them landed (late usage events, S3's day sample published hours into the day,
        a landing outage's readings; sql/queries/remeasure.sql) are measured again, one range
        at a time. The cursor alone says what is new (one landing at a time here)."""
        with self.conn.cursor() as cur:
            newest = cur.execute(query("newest_reading")).fetchone()
            stale = [hour for hour, _ in cur.execute(query("hours_to_remeasure"), {
                "after_id": self.reading_cursor, "recheck_since": NO_RECHECK}).fetchall()]
        self.reading_cursor = newest[0] if newest and newest[0] else self.reading_cursor
        for start, end in contiguous(sorted(stale)):
            self.meter(start, end)
            self.churn["ranges measured again (remeasure_sensor's query)"] += 1

    def meter(self, start: datetime, end: datetime) -> None:
        """The metering job's two steps over [start, end) as one range (one hour normally;
        the hours before the install, or those an outage left, as one backfill)."""
        derive_window(self.conn, start, end)
        price_window(self.conn, start, end)

    def script(self, n: int) -> None:
        """Changes inside hour ``n`` that the random churn does not make."""
        s, f = self.s, self.sim.foundation
        start = s.hour(n)
        with self.sim.lock:
            if n in s.skew_at:
                self._skewed_scale(f, start + timedelta(minutes=20))
            if n == s.rename_at:
                org = catalog_orgs(f)[RENAMED_ORG]
                f.rename_organization(org.guid, org.name + "-renamed",
                                      start + timedelta(minutes=5))
                self.churn["orgs renamed in CF"] += 1
            if n == s.new_org_at:
                org = f.create_organization(NEW_ORG, start + timedelta(minutes=10),
                                            guid=NEW_ORG_GUID)
                space = f.create_space(org, "dev", start + timedelta(minutes=12))
                f.create_app(space, start + timedelta(minutes=15), instances=2,
                             memory_in_mb=512, worker=True)
                plan = next(p.guid for p in f.service_plans.values() if p.name == "micro-psql")
                f.create_service_instance(space, plan, start + timedelta(minutes=16))
                f.create_service_instance(space, None, start + timedelta(minutes=17))
                self.churn["orgs created mid-month"] += 1
            if n == s.purge_at:
                f.advance_to(start + timedelta(minutes=30))
                f.purge_and_reseed_app_events()
                f.purge_and_reseed_service_events()
                self.churn["purges of CF's usage events"] += 1

    def _skewed_scale(self, f: Foundation, at: datetime) -> None:
        """A process scaled at ``at``, then again 5 s later by a controller whose clock is
        40 s behind: its event is stamped before the one it follows."""
        f.advance_to(at)
        process = next(p for p in f.processes.values()
                       if f.apps[p.app_guid].state == "STARTED" and p.instances < 4)
        f.scale_process(process.guid, at, instances=process.instances + 1)
        f.scale_process(process.guid, at + timedelta(seconds=5),
                        instances=process.instances + 2, clock_skew_seconds=-40)
        self.churn["events stamped by a skewed clock"] += 1


class _DagsterRuns:
    """``landing_job`` then ``metering_job`` for one hour, as real Dagster runs of the code
    location's own job definitions, against the simulator and the suite's database."""

    def __init__(self, sim: Simulator, aws: EmbeddedAws, database_url: str) -> None:
        self.instance = dg.DagsterInstance.ephemeral()
        resources = {
            "db": BillingDatabase(url=database_url),
            "cf": CloudFoundryApi(api_url=sim.url, client_id=CLIENT[0], client_secret=CLIENT[1]),
            "aws": aws.resource(),
            "clock": Clock(simulator_url=sim.url),
        }
        self.defs = dg.Definitions(assets=list(defs.assets or []),
                                   jobs=[landing_job, metering_job],
                                   resources=resources)

    def land_and_meter(self, hour: datetime) -> None:
        landing = self.defs.resolve_job_def("landing_job").execute_in_process(
            instance=self.instance, run_config=QUIET_RUN)
        assert landing.success, f"landing run {landing.run_id} failed"
        (key,) = hourly_keys_between(hour, hour + HOUR)
        metering = self.defs.resolve_job_def("metering_job").execute_in_process(
            instance=self.instance, partition_key=key, run_config=QUIET_RUN)
        assert metering.success, f"metering run {metering.run_id} of {key} failed"


# -- the catalog the month is priced with --------------------------------------------------


MOVED_ORG, RENAMED_ORG = 2, 1  # positions in catalog_orgs: owned by CUSTOMERS[2] and [1]


def catalog_orgs(foundation: Foundation) -> list[Organization]:
    """The foundation's orgs as the catalog lists them (by name, as first generated, and the
    org the scenario creates mid-month), each owned by CUSTOMERS[position % 5]."""
    generated = [o for o in foundation.organizations.values() if o.guid != NEW_ORG_GUID]
    return sorted(generated, key=lambda o: o.name.removesuffix("-renamed")) + [
        Organization(NEW_ORG_GUID, NEW_ORG, "", "")]


@contextmanager
def catalog_directory(foundation: Foundation, moved_at: datetime | None = None
                      ) -> Iterator[Path]:
    """The example catalog's tiers, kinds and prices, with customers owning every org of the
    foundation (and the org the scenario creates mid-month), by guid; from ``moved_at`` one org
    passes from CUSTOMERS[2] to CUSTOMERS[3]. Each customer has an agreement (two of them a
    second, overlapping one; one of those is modified mid-May)."""
    directory = Path(tempfile.mkdtemp(prefix="accuracy-catalog-"))
    try:
        for name in ("tiers.yaml", "resource_kinds.yaml", "prices.yaml"):
            shutil.copy(EXAMPLE_CATALOG / name, directory / name)
        owned: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for i, org in enumerate(catalog_orgs(foundation)):
            entry: dict[str, Any] = {"guid": org.guid, "name": org.name}
            if i == MOVED_ORG and moved_at is not None:
                owned[CUSTOMERS[3]].append({**entry, "valid_from": moved_at})
                entry["valid_to"] = moved_at
            owned[CUSTOMERS[i % len(CUSTOMERS)]].append(entry)
        (directory / "customers.yaml").write_text(yaml.safe_dump({"customers": [
            {"id": c, "name": f"Agency {c[-1].upper()}", "tier": "giga", "orgs": owned[c]}
            for c in CUSTOMERS]}))
        # Every customer has a large two-year agreement; two also hold a small one that ends
        # mid-May, so May's hours draw from it first, exhaust it or see it expire; the first
        # of those gets 20 credits more from May 7 and runs until May 20.
        bridges = [{"id": f"IAA-{c.upper()}-BRIDGE", "customer": c, "credits": credits,
                    "pop_start": date(2025, 4, 1), "pop_end": date(2025, 5, 14)}
                   for c, credits in ((CUSTOMERS[0], 40), (CUSTOMERS[1], 5000))]
        bridges[0]["modifications"] = [{"id": "P00001", "effective": date(2025, 5, 7),
                                        "credits": 20, "pop_end": date(2025, 5, 20)}]
        (directory / "iaas.yaml").write_text(yaml.safe_dump({"iaas": [
            {"id": f"IAA-{c.upper()}", "customer": c, "credits": 1_000_000,
             "pop_start": date(2024, 10, 1), "pop_end": date(2026, 9, 30)}
            for c in CUSTOMERS] + bridges}))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Price:
    meter: str
    kind: str
    microcredits_per_unit: int
    unit: int
    valid_from: datetime
    valid_to: datetime | None

    def applies(self, hour: datetime) -> bool:
        return self.valid_from <= hour and (self.valid_to is None or hour < self.valid_to)


def read_prices(catalog: Path) -> list[Price]:
    """The catalog's prices, read here with plain YAML (not with the project's reader)."""
    kinds = {k["name"]: (k["meter"], k["natural_id"]) for k in
             yaml.safe_load((catalog / "resource_kinds.yaml").read_text())["resource_kinds"]}

    prices = []
    for p in yaml.safe_load((catalog / "prices.yaml").read_text())["prices"]:
        meter, kind = kinds[p["kind"]]
        prices.append(Price(meter, kind, int(p["microcredits_per_unit"]), int(p["unit"]),
                            moment(p["valid_from"]),
                            moment(p["valid_to"]) if p.get("valid_to") else None))
    return prices


def moment(value: date | datetime) -> datetime:
    """A catalog instant: a date is its midnight in New York."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.combine(value, time(), NEW_YORK).astimezone(UTC)


@dataclass(frozen=True)
class Owners:
    """Who owns each org (by guid) when, read here with plain YAML from customers.yaml."""

    periods: dict[str, list[tuple[str, datetime | None, datetime | None]]]

    def at(self, org_guid: str | None, hour: datetime) -> str | None:
        return next((customer for customer, start, end in self.periods.get(org_guid or "", [])
                     if (start is None or start <= hour) and (end is None or hour < end)), None)


def read_owners(catalog: Path) -> Owners:
    periods: dict[str, list[tuple[str, datetime | None, datetime | None]]] = defaultdict(list)
    for c in yaml.safe_load((catalog / "customers.yaml").read_text())["customers"]:
        for org in c["orgs"]:
            periods[org["guid"]].append(
                (c["id"], moment(org["valid_from"]) if "valid_from" in org else None,
                 moment(org["valid_to"]) if "valid_to" in org else None))
    return Owners(dict(periods))


@dataclass(frozen=True)
class Agreement:
    """An agreement as iaas.yaml says, read here with plain YAML: its period as modified and
    the credits that arrive in its lot (the purchase at its start, then each modification)."""

    id: str
    customer: str
    starts: datetime
    ends: datetime
    arrivals: tuple[tuple[datetime, int], ...]  # (instant, microcredits)

    def active_at(self, hour: datetime) -> bool:
        return self.starts <= hour < self.ends

    def arrived_by(self, hour: datetime) -> int:
        return sum(amount for at, amount in self.arrivals if at <= hour)


def read_agreements(catalog: Path) -> list[Agreement]:
    agreements = []
    for i in yaml.safe_load((catalog / "iaas.yaml").read_text())["iaas"]:
        last_day, arrivals = i["pop_end"], [(moment(i["pop_start"]), i["credits"] * 10**6)]
        for m in i.get("modifications", []):
            if m.get("credits"):
                arrivals.append((moment(m["effective"]), m["credits"] * 10**6))
            last_day = m.get("pop_end", last_day)
        agreements.append(Agreement(i["id"], i["customer"], moment(i["pop_start"]),
                                    moment(last_day + timedelta(days=1)), tuple(arrivals)))
    return agreements


def ledger_violations(draws: list[dict[str, Any]], expiries: dict[str, int],
                      lines: list[LineRow], agreements: list[Agreement],
                      month_end: datetime) -> list[str]:
    """What the month's draws break of the agreement rules, checked hour by hour against the
    catalog read independently: a customer's draws add up to its posted lines; an hour draws
    only from agreements active at it and only credits that had arrived; the one ending first
    is drawn first; no overage while an active agreement holds credits; an agreement that
    ended expires exactly what it did not draw. (The lots start full: no earlier month is
    posted in the scenario.)"""
    found: list[str] = []
    posted: dict[str, int] = defaultdict(int)
    for line in lines:
        posted[line.customer] += line.posted
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in draws:
        by_customer[d["customer_id"]].append(d)
    for customer in sorted(set(by_customer) | {c for c, v in posted.items() if v}):
        rows = by_customer.get(customer, [])
        if sum(d["amount"] for d in rows) != posted[customer]:
            found.append(f"{customer}: draws add up to {sum(d['amount'] for d in rows):,}, "
                         f"its posted lines to {posted[customer]:,}")
        own = sorted((a for a in agreements if a.customer == customer),
                     key=lambda a: (a.ends, a.starts, a.id))
        drawn: dict[str, int] = defaultdict(int)
        hours: dict[datetime, dict[str | None, int]] = defaultdict(dict)
        for d in rows:
            hours[d["hour_start"]][d["iaa_id"]] = d["amount"]
        for hour in sorted(hours):
            for iaa_id, amount in hours[hour].items():
                if iaa_id is not None:
                    drawn[iaa_id] += amount
            active = [a for a in own if a.active_at(hour)]
            for iaa_id in hours[hour]:
                if iaa_id is not None and iaa_id not in {a.id for a in active}:
                    found.append(f"{customer} {hour:%Y-%m-%d %H:00}: drew from {iaa_id} outside "
                                 "its period")
            for i, a in enumerate(active):
                left = a.arrived_by(hour) - drawn[a.id]
                if left < 0:
                    found.append(f"{customer} {hour:%Y-%m-%d %H:00}: {a.id} drew {-left:,} "
                                 "more than had arrived")
                later = [b.id for b in active[i + 1:] if hours[hour].get(b.id)]
                if left > 0 and (None in hours[hour] or later):
                    found.append(f"{customer} {hour:%Y-%m-%d %H:00}: "
                                 + ("overage" if None in hours[hour] else later[0])
                                 + f" drawn while {a.id} held {left:,}")
        for a in own:
            if a.ends <= month_end and a.arrived_by(a.ends) - drawn[a.id] != expiries.get(a.id, 0):
                found.append(f"{a.id}: expired {expiries.get(a.id, 0):,}, "
                             f"left undrawn {a.arrived_by(a.ends) - drawn[a.id]:,}")
    return found


# -- comparing -----------------------------------------------------------------------------


def compare(sim: Simulator, world: AwsFoundation, conn: psycopg.Connection, s: Scenario,
            catalog: Path) -> Report:
    oracle = fetch_oracle(sim.url, s.month_start, s.end) + aws_oracle(
        world, conn, s.month_start, s.end,
        s.hour(s.install_at) - timedelta(days=world.foundation.retention_days))
    month_key = f"{s.month:%Y-%m}"
    month_end = datetime.combine(
        (s.month.replace(day=28) + timedelta(days=4)).replace(day=1), time(),
        NEW_YORK).astimezone(UTC)
    post_month(conn, s.month, s.month_start, month_end)
    window = {"start": s.month_start, "end": s.end, "business_month": s.month}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SQL["create_oracle_usage"])
        copy_rows(cur, "copy_oracle_usage", oracle, found=SQL)
        cur.execute(SQL["create_resource_hour_comparison"], window)
        by_status = [StatusRow(**{**r, "missing": int(r["missing"]), "extra": int(r["extra"])})
                     for r in cur.execute(SQL["compare_by_meter_and_status"])]
        differing = cur.execute(SQL["differing_resource_hours"]).fetchall()
        flagged = cur.execute(SQL["flagged_hours"], window).fetchall()
        posted = cur.execute(SQL["posted_lines"], window).fetchall()
        minute_one = cur.execute(SQL["minute_one_snapshots"], window).fetchall()
        draws = cur.execute(SQL["month_draws"], window).fetchall()
        expiries = {r["iaa_id"]: r["amount"] for r in cur.execute(SQL["expiries"])}
        cur.execute("DROP TABLE oracle_usage, resource_hour_comparison")
    lines = price_lines(posted, oracle, differing, minute_one, read_prices(catalog),
                        read_owners(catalog))
    ledger = ledger_violations(draws, expiries, lines, read_agreements(catalog), month_end)
    log.info("compared %d oracle rows for %s", len(oracle), month_key)
    return Report(s, by_status, [d for d in differing if d["status"] == "complete"],
                  flagged, lines, ledger=ledger, draws=len(draws))


def aws_oracle(world: AwsFoundation, conn: psycopg.Connection, start: datetime, end: datetime,
               cf_forgot_before: datetime) -> list[tuple]:
    """The AWS side's true usage of [start, end). Sampled storage (RDS, OpenSearch) is
    defined at the instants AWS was read, so the oracle is told when the complete readings
    were taken (a fact of the run, not a value the project derived); ``cf_forgot_before`` is
    the first landing minus CF's event retention."""
    readings: dict[str, list[datetime]] = defaultdict(list)
    for meter, taken_at in conn.execute(
            "SELECT meter, taken_at FROM billing.reading WHERE source = 'aws' "
            "AND status = 'complete' ORDER BY taken_at"):
        readings[meter].append(taken_at)
    return [(datetime.fromtimestamp(u.hour_start, UTC), u.meter, u.resource, u.kind,
             u.unit_seconds, u.space_guid or None, u.org_guid or None)
            for u in world.true_usage(start, end, readings, cf_forgot_before)]


def fetch_oracle(url: str, start: datetime, end: datetime) -> list[tuple]:
    """The oracle's rows for [start, end) over HTTP, a day per request."""
    rows: list[tuple] = []
    with httpx.Client(timeout=120) as http:
        day = start
        while day < end:
            upto = min(day + timedelta(days=1), end)
            response = http.get(url + "/_sim/usage", params={"start": day.isoformat(),
                                                             "end": upto.isoformat()})
            response.raise_for_status()
            rows += [(datetime.fromisoformat(r["hour_start"]), r["meter"], r["resource"],
                      r["kind"], r["unit_seconds"], r["space_guid"], r["org_guid"])
                     for r in response.json()["rows"]]
            day = upto
    return rows


def price_lines(posted: list[dict[str, Any]], oracle: list[tuple],
                differing: list[dict[str, Any]], minute_one: list[dict[str, Any]],
                prices: list[Price], owners: Owners) -> list[LineRow]:
    """Per customer and price line: what was posted, the oracle priced exactly and rounded
    once (half-even), the part of the difference from flagged resource-hours, and
    cloud-gov/billing's method (truncated per resource-hour)."""
    by_kind: dict[tuple[str, str], list[Price]] = defaultdict(list)
    for p in prices:
        by_kind[(p.meter, p.kind)].append(p)

    def price(meter: str, kind: str, hour: datetime) -> Price | None:
        return next((p for p in by_kind.get((meter, kind), []) if p.applies(hour)), None)

    def line_of(meter: str, kind: str, hour: datetime, org_guid: str | None
                ) -> tuple[tuple, Price] | None:
        customer = owners.at(org_guid, hour)
        p = price(meter, kind, hour)
        if customer is None or p is None:
            return None
        return (customer, meter, kind, p.microcredits_per_unit, p.unit), p

    exact: dict[tuple, Fraction] = defaultdict(Fraction)
    for hour, meter, _resource, kind, value, _space, org in oracle:
        found = line_of(meter, kind, hour, org)
        if found:
            exact[found[0]] += Fraction(value * found[1].microcredits_per_unit, found[1].unit)
    flagged: dict[tuple, Fraction] = defaultdict(Fraction)
    for d in differing:
        if d["status"] == "complete":
            continue
        found = line_of(d["meter"], d["kind"], d["hour_start"], d["org_guid"])
        if found:
            flagged[found[0]] += Fraction((d["billed"] - d["truth"])
                                          * found[1].microcredits_per_unit, found[1].unit)
    cloudgov: dict[tuple, int] = defaultdict(int)
    for m in minute_one:
        found = line_of(m["meter"], m["kind"], m["hour_start"], m["org_guid"])
        if found:
            cloudgov[found[0]] += m["value"] * found[1].microcredits_per_unit // found[1].unit
    posted_by = {(r["customer_id"], r["meter"], r["kind"], r["microcredits_per_unit"],
                  r["unit"]): int(r["amount"]) for r in posted}
    rows = []
    for key in sorted(set(exact) | set(posted_by) | set(cloudgov)):
        oracle_amount = round(exact.get(key, Fraction(0)))
        rounded_with_flagged = round(exact.get(key, Fraction(0)) + flagged.get(key, Fraction(0)))
        rows.append(LineRow(key[0], key[1], key[2], posted_by.get(key, 0), oracle_amount,
                            rounded_with_flagged - oracle_amount, cloudgov.get(key, 0)))
    return rows
