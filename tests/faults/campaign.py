"""The fault campaign: billing under faults, then recovered, compared with the truth.

A timeline is a few hours of a small simulated foundation run as production runs it: the
install (the first landing, CF's and AWS's, a minute before the first hour), then every hour a
landing and an AWS reading at minute 1, the derivation and the pricing of the hour that ended;
then the posting of its business month. Each scenario runs the timeline of a seed once without
faults and once with its fault at a point chosen from the seed, recovers as an operator would
(a re-run, the next tick), and is then compared twice: with the simulator's oracle
(unit-seconds of every complete hour, and the posted microcredits per customer and price line)
and with the fault-free run of the same seed (measurements, coverage, postings, landed events
and ledger balances, row for row). Everything runs on loopback against a PostgreSQL server the
campaign starts itself, in a database of its own per run, and an embedded AWS (moto) behind a
proxy that can answer with AWS's faults. The scenarios themselves are in scenarios.py; the
processes a scenario can kill are in worker.py and deployment.py.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from billing_dagster.aws.embedded import EmbeddedAws
from billing_dagster.catalog import load_catalog, read_catalog
from billing_dagster.database import connect
from billing_dagster.migrate import migrate
from billing_dagster.partitions import BUSINESS_TIMEZONE
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.aws import AwsFoundation
from billing_dagster.sql import copy_rows, queries_in
from tests.accuracy import harness
from tests.faults.points import FaultPoints
from tests.faults.server import CampaignPostgres
from tests.faults.steps import CLIENT, Step, run_step
from tests.support import AwsFaultProxy

log = logging.getLogger("faults")
SQL = queries_in(Path(__file__).with_name("state.sql"))
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
REPO = Path(__file__).resolve().parents[2]
CONFIG_VARIABLES = ("DATABASE_URL", "VCAP_SERVICES", "CF_API_URL", "CF_CLIENT_ID",
                    "CF_CLIENT_SECRET", "BILLING_CATALOG", "BILLING_DATA_DIR")


@dataclass(frozen=True)
class Timeline:
    """A few hours of one foundation, as production lives them."""

    seed: int
    apps: int = 24
    service_instances: int = 10
    # 07:00 UTC: the day's S3 sample (published at 06:00) is out before the first landing
    start: datetime = datetime(2025, 5, 12, 7, tzinfo=UTC)
    hours: int = 3
    history_days: int = 2
    per_page: int = 7  # several pages in every list and event stream

    @property
    def end(self) -> datetime:
        return self.start + self.hours * HOUR

    @property
    def month(self) -> date:
        return self.start.astimezone(ZoneInfo(BUSINESS_TIMEZONE)).date().replace(day=1)

    def steps(self) -> list[Step]:
        def land(now: datetime) -> list[Step]:
            return [Step("land", now=now, per_page=self.per_page), Step("aws", now=now)]

        # the install, a minute before the first hour so that AWS's gauges are read before it
        # starts: CF then holds two days of events
        steps = land(self.start - MINUTE)
        for i in range(self.hours):
            hour = self.start + i * HOUR
            steps += [*land(hour + HOUR + MINUTE), Step("derive", start=hour, end=hour + HOUR),
                      Step("price", start=hour, end=hour + HOUR)]
        return [*steps, Step("post", month=self.month)]



class Lab:
    """The campaign's own PostgreSQL server and a migrated template to copy databases from,
    and its embedded AWS with the fault proxy in front of it.

    Everything billing does here it does as ``billing_app``, a role that is not a superuser
    and owns what it migrated, as the credentials of a brokered cloud.gov database do.
    """

    APP_ROLE = "billing_app"

    def __init__(self) -> None:
        self.pg = CampaignPostgres.create()
        self.aws = EmbeddedAws().start()
        self.aws_proxy = AwsFaultProxy(self.aws.url).__enter__()
        self._made = 0
        with psycopg.connect(self.pg.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(
                sql.Identifier(self.APP_ROLE)))
            conn.execute(sql.SQL("CREATE DATABASE faults_template OWNER {}").format(
                sql.Identifier(self.APP_ROLE)))
        with psycopg.connect(self.pg.url("faults_template", user=self.APP_ROLE)) as conn:
            migrate(conn)

    def new_database(self, template: str = "faults_template") -> tuple[str, str]:
        self._made += 1
        name = f"faults_run_{self._made}"
        with psycopg.connect(self.pg.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(template), sql.Identifier(self.APP_ROLE)))
        return name, self.pg.url(name, user=self.APP_ROLE)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.pg.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def close(self) -> None:
        self.aws_proxy.__exit__(None, None, None)
        self.aws.stop()
        self.pg.stop()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class WorkerResult:
    returncode: int
    points: int | None
    fired: str | None
    error: str | None

    @property
    def killed(self) -> bool:
        return self.returncode == -9


@dataclass
class World:
    """One run of a timeline: its simulator, its database, its catalog, what happened."""

    lab: Lab
    timeline: Timeline
    sim: Simulator
    aws: AwsFoundation
    database: str
    url: str
    catalog: Path
    runs: int = 0
    errors: list[str] = field(default_factory=list)

    def advance(self, step: Step) -> None:
        if step.now is not None and step.now > self.sim.foundation.now:
            self.sim.advance_to(step.now)

    def run(self, step: Step, points: FaultPoints | None = None) -> Exception | None:
        """The step in this process; an exception it raises is returned (a failed run)."""
        self.runs += 1
        try:
            if points is None:
                run_step(step, self.url, self.sim.url, self.aws_url)
            else:
                with points.installed():
                    run_step(step, self.url, self.sim.url, self.aws_url)
        except Exception as exc:  # the run failed, as a Dagster run would
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return exc
        return None

    def spawn(self, step: Step, *, fire_at: int | None = None,
              action: str = "kill") -> subprocess.Popen[str]:
        """The step in a worker process of its own."""
        self.runs += 1
        spec = {"step": step.to_dict(), "database_url": self.url, "cf_url": self.sim.url,
                "aws_url": self.aws_url, "fire_at": fire_at, "action": action,
                "postgres": self.lab.pg.to_dict()}
        return self._worker(spec, os.environ)

    def spawn_job(self, job: str, env: dict[str, str]) -> subprocess.Popen[str]:
        """A job of the code location, configured only by ``env`` (no inherited database,
        CF or catalog variables), in a worker process of its own."""
        self.runs += 1
        inherited = {k: v for k, v in os.environ.items()
                     if k not in CONFIG_VARIABLES and not k.startswith("PG")}
        return self._worker({"job": job}, {**inherited, **env})

    def _worker(self, spec: dict[str, Any], env: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "tests.faults.worker", json.dumps(spec)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**env, "PYTHONPATH": str(REPO)})

    def collect(self, process: subprocess.Popen[str]) -> WorkerResult:
        out, err = process.communicate(timeout=300)
        report: dict[str, Any] = {}
        lines = out.strip().splitlines()
        if lines:
            try:
                report = json.loads(lines[-1])
            except json.JSONDecodeError:
                report = {}
        result = WorkerResult(process.returncode, report.get("points"), report.get("fired"),
                              report.get("error"))
        if result.error:
            self.errors.append(result.error)
        elif process.returncode not in (0, -9):
            self.errors.append(err.strip().splitlines()[-1] if err.strip() else
                               f"worker exited {process.returncode}")
        return result

    @property
    def aws_url(self) -> str:
        """Where billing reads AWS: the lab's proxy in front of the embedded AWS."""
        return self.lab.aws_proxy.url

    def connect(self) -> Any:
        return connect(self.url)


@contextmanager
def world(lab: Lab, timeline: Timeline) -> Iterator[World]:
    t = timeline
    foundation = Foundation(t.seed, t.apps, t.service_instances,
                            t.start - timedelta(days=t.history_days))
    name, url = lab.new_database()
    lab.aws.reset()
    lab.aws_proxy.clear()
    try:
        with Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim, \
                harness.catalog_directory(foundation) as catalog:
            aws = AwsFoundation(foundation, lab.aws.clients())
            with connect(url) as conn:
                load_catalog(conn, read_catalog(catalog))
            yield World(lab, t, sim, aws, name, url, catalog)
    finally:
        lab.drop_database(name)


# -- what a run left, and how it compares ---------------------------------------------------


@dataclass
class State:
    """What a run left in its database, by natural keys."""

    measurements: list[tuple]
    coverage: list[tuple]
    postings: list[tuple]
    events: list[tuple]
    balances: dict[tuple[str, str], int]
    transactions: int
    unbalanced_transactions: int
    net: int

    @classmethod
    def read(cls, conn: psycopg.Connection) -> State:
        def rows(name: str) -> list[tuple]:
            return [tuple(r) for r in conn.execute(SQL[name]).fetchall()]

        ledger = rows("ledger_rows")
        balances: dict[tuple[str, str], int] = {}
        for _type, _key, customer, _at, _month, account, direction, amount in ledger:
            balances[(customer, account)] = balances.get((customer, account), 0) + \
                direction * amount
        balance = conn.execute(SQL["ledger_balance"]).fetchone()
        assert balance is not None
        return cls(rows("measurement_rows"), rows("coverage_rows"), rows("posting_rows"),
                   rows("event_rows"), balances, len({r[1] for r in ledger}),
                   balance[0], balance[1])

    def differences(self, other: State) -> list[str]:
        """What differs from ``other`` (the fault-free run), one line per kind of row."""
        out = []
        for name in ("measurements", "coverage", "postings", "events"):
            mine, theirs = set(getattr(self, name)), set(getattr(other, name))
            if mine != theirs:
                out.append(f"{name}: {len(theirs - mine)} missing, {len(mine - theirs)} extra, "
                           f"e.g. {sorted(theirs - mine, key=str)[:1]} / "
                           f"{sorted(mine - theirs, key=str)[:1]}")
        if self.balances != other.balances:
            keys = sorted(set(self.balances) | set(other.balances))
            off = [f"{k}: {self.balances.get(k, 0)} vs {other.balances.get(k, 0)}" for k in keys
                   if self.balances.get(k, 0) != other.balances.get(k, 0)]
            out.append("ledger balances: " + "; ".join(off[:3]))
        return out


@dataclass
class Truth:
    """The run against the oracle: complete hours' unit-seconds and posted microcredits."""

    missing: int
    extra: int
    flagged_hours: int
    microcredits_off: int


def against_oracle(w: World) -> Truth:
    t = w.timeline
    with w.connect() as conn:
        aws = harness.aws_oracle(w.aws, conn, t.start, t.end,
                                 t.start - timedelta(days=w.sim.foundation.retention_days))
    oracle = harness.fetch_oracle(w.sim.url, t.start, t.end) + aws
    window = {"start": t.start, "end": t.end, "business_month": t.month}
    with w.connect() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(harness.SQL["create_oracle_usage"])
        copy_rows(cur, "copy_oracle_usage", oracle, found=harness.SQL)
        cur.execute(harness.SQL["create_resource_hour_comparison"], window)
        by_status = list(cur.execute(harness.SQL["compare_by_meter_and_status"]))
        posted = cur.execute(harness.SQL["posted_lines"], window).fetchall()
        cur.execute("DROP TABLE oracle_usage, resource_hour_comparison")
    lines = harness.price_lines(posted, oracle, [], [], harness.read_prices(w.catalog),
                                harness.read_owners(w.catalog))
    counted = [r for r in by_status if r["status"] in ("complete", "not measured")]
    return Truth(missing=int(sum(r["missing"] for r in counted)),
                 extra=int(sum(r["extra"] for r in counted)),
                 flagged_hours=sum(1 for r in by_status
                                   if r["status"] not in ("complete", "not measured")),
                 microcredits_off=sum(abs(line.off) for line in lines))


# -- the fault-free run of a seed ----------------------------------------------------------


@dataclass
class Baseline:
    """The fault-free run of a timeline: its end state and each step's fault points."""

    timeline: Timeline
    state: State
    truth: Truth
    points: list[int]
    labels: list[list[str]]
    requests: list[list[str]]  # the CF and UAA paths each step asked for, in order


def fault_free(lab: Lab, timeline: Timeline) -> Baseline:
    points: list[int] = []
    labels: list[list[str]] = []
    requests: list[list[str]] = []
    with world(lab, timeline) as w:
        for step in timeline.steps():
            w.advance(step)
            counter = FaultPoints()
            asked = len(w.sim.requests)
            failure = w.run(step, counter)
            if failure is not None:
                raise RuntimeError(f"the fault-free run failed at {step.label()}") from failure
            points.append(counter.reached)
            labels.append(counter.labels)
            requests.append([target.split("?")[0] for _, target in w.sim.requests[asked:]])
        with w.connect() as conn:
            state = State.read(conn)
        truth = against_oracle(w)
    return Baseline(timeline, state, truth, points, labels, requests)


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """One faulted run of one seed, recovered and compared."""

    scenario: str
    seed: int
    runs: int
    faults: int
    truth: Truth
    same_as_fault_free: list[str]  # what differs (empty: the same)
    balanced: bool
    error_clear: bool | None  # None: the fault gives no error to read (a SIGKILL)
    detail: str

    @property
    def passed(self) -> bool:
        t = self.truth
        return (not (t.missing or t.extra or t.microcredits_off or t.flagged_hours)
                and not self.same_as_fault_free and self.balanced
                and self.error_clear is not False)


# A scenario plays the faulted timeline in a world: it gets the world, the fault-free run
# (for its fault points) and a seeded random source, runs every step (its fault included,
# then its recovery), and returns (faults injected, error clear or None, what it did).
Play = Callable[[World, Baseline, random.Random], tuple[int, bool | None, str]]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # the table's group: process, postgres, concurrency, cloud foundry, aws, ...
    play: Play


def run_scenario(lab: Lab, scenario: Scenario, baseline: Baseline) -> Outcome:
    rng = random.Random(f"{baseline.timeline.seed}:{scenario.name}")
    started = time.monotonic()
    with world(lab, baseline.timeline) as w:
        faults, clear, detail = scenario.play(w, baseline, rng)
        with w.connect() as conn:
            state = State.read(conn)
        truth = against_oracle(w)
        outcome = Outcome(scenario.name, baseline.timeline.seed, w.runs, faults, truth,
                          state.differences(baseline.state),
                          state.unbalanced_transactions == 0 and state.net == 0,
                          clear, detail)
    log.info("%s seed %d: %s in %.1fs (%s)", scenario.name, baseline.timeline.seed,
             "ok" if outcome.passed else "FAILED", time.monotonic() - started, detail)
    return outcome


# -- the campaign --------------------------------------------------------------------------


@dataclass
class Campaign:
    outcomes: list[Outcome]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def table(self) -> str:
        by_name: dict[str, list[Outcome]] = {}
        for o in self.outcomes:
            by_name.setdefault(o.scenario, []).append(o)
        head = (f"{'scenario':<44} {'runs':>5} {'faults':>6} {'unit-s missing':>14} "
                f"{'unit-s extra':>12} {'µcr off':>8} {'balanced':>8} {'= fault-free':>12} "
                f"{'error clear':>11}")
        out = [head, "-" * len(head)]
        for name, group in by_name.items():
            clear = [o.error_clear for o in group if o.error_clear is not None]
            out.append(
                f"{name:<44} {sum(o.runs for o in group):>5} {sum(o.faults for o in group):>6} "
                f"{sum(o.truth.missing for o in group):>14,} "
                f"{sum(o.truth.extra for o in group):>12,} "
                f"{sum(o.truth.microcredits_off for o in group):>8,} "
                f"{'yes' if all(o.balanced for o in group) else 'NO':>8} "
                f"{'yes' if all(not o.same_as_fault_free for o in group) else 'NO':>12} "
                f"{('yes' if all(clear) else 'NO') if clear else '-':>11}")
        failed = [o for o in self.outcomes if not o.passed]
        out += ["", f"{len(self.outcomes)} runs of {len(by_name)} scenarios, "
                f"{len(failed)} failed"]
        for o in failed:
            out.append(f"  {o.scenario} seed {o.seed}: {o.detail}; {o.truth}; "
                       + "; ".join(o.same_as_fault_free))
        return "\n".join(out)


def run_campaign(seeds: list[int], scenarios: list[Scenario],
                 timeline: Timeline | None = None) -> Campaign:
    outcomes = []
    with Lab() as lab:
        for seed in seeds:
            base = fault_free(lab, replace(timeline or Timeline(seed=seed), seed=seed))
            if base.truth.missing or base.truth.extra or base.truth.flagged_hours:
                raise AssertionError(f"the fault-free run of seed {seed} is not exact: "
                                     f"{base.truth}")
            for scenario in scenarios:
                outcomes.append(run_scenario(lab, scenario, base))
    return Campaign(outcomes)
