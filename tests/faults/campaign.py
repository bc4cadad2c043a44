"""The fault campaign: billing under faults, then recovered, compared with the truth.

A timeline is a few hours of a small simulated foundation run as production runs it: the
install (the first landing), then every hour a landing at minute 1, the derivation and the
pricing of the hour that ended; then the operator's backfill of the whole window and the
posting of its business month. Each scenario runs the timeline of a seed once without faults
and once with its fault at a point chosen from the seed, recovers as an operator would (a
re-run, the next tick), and is then compared twice: with the simulator's oracle (unit-seconds
of every complete hour, and the posted microcredits per customer and price line) and with the
fault-free run of the same seed (measurements, coverage, postings, landed events and ledger
balances, row for row). Everything runs on loopback against a PostgreSQL server the campaign
starts itself, in a database of its own per run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from billing_dagster.catalog import CatalogError, load_catalog, read_catalog
from billing_dagster.database import connect
from billing_dagster.jobs import hours_to_meter
from billing_dagster.migrate import migrate
from billing_dagster.partitions import hourly_keys_between, hourly_partitions, utc_window
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.sql import copy_rows, queries_in
from tests.accuracy import harness
from tests.faults.deployment import Deployment
from tests.faults.points import FaultPoints
from tests.faults.server import CampaignPostgres
from tests.faults.steps import CLIENT, NEW_YORK, Step, run_step

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
    start: datetime = datetime(2025, 5, 12, 4, tzinfo=UTC)
    hours: int = 3
    history_days: int = 2
    per_page: int = 7  # several pages in every list and event stream

    @property
    def end(self) -> datetime:
        return self.start + self.hours * HOUR

    @property
    def month(self) -> date:
        return self.start.astimezone(NEW_YORK).date().replace(day=1)

    def steps(self) -> list[Step]:
        def land(at: datetime) -> Step:
            return Step("land", now=at + MINUTE, per_page=self.per_page)

        steps = [land(self.start)]  # the install: CF then holds two days of events
        for i in range(self.hours):
            hour = self.start + i * HOUR
            steps += [land(hour + HOUR), Step("derive", start=hour, end=hour + HOUR),
                      Step("price", start=hour, end=hour + HOUR)]
        return [*steps, Step("post", month=self.month)]



class Lab:
    """The campaign's own PostgreSQL server and a migrated template to copy databases from.

    Everything billing does here it does as ``billing_app``, a role that is not a superuser
    and owns what it migrated, as the credentials of a brokered cloud.gov database do.
    """

    APP_ROLE = "billing_app"

    def __init__(self) -> None:
        self.pg = CampaignPostgres.create()
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
                run_step(step, self.url, self.sim.url)
            else:
                with points.installed():
                    run_step(step, self.url, self.sim.url)
        except Exception as exc:  # the run failed, as a Dagster run would
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return exc
        return None

    def spawn(self, step: Step, *, fire_at: int | None = None,
              action: str = "kill") -> subprocess.Popen[str]:
        """The step in a worker process of its own."""
        self.runs += 1
        spec = {"step": step.to_dict(), "database_url": self.url, "cf_url": self.sim.url,
                "fire_at": fire_at, "action": action, "postgres": self.lab.pg.to_dict()}
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

    def connect(self) -> Any:
        return connect(self.url)


@contextmanager
def world(lab: Lab, timeline: Timeline) -> Iterator[World]:
    t = timeline
    foundation = Foundation(t.seed, t.apps, t.service_instances,
                            t.start - timedelta(days=t.history_days))
    name, url = lab.new_database()
    try:
        with Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim, \
                harness.catalog_directory(foundation) as catalog:
            with connect(url) as conn:
                load_catalog(conn, read_catalog(catalog))
            yield World(lab, t, sim, name, url, catalog)
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
    oracle = harness.fetch_oracle(w.sim.url, t.start, t.end)
    window = {"start": t.start, "end": t.end, "business_month": t.month}
    with w.connect() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(harness.SQL["create_oracle_usage"])
        copy_rows(cur, "copy_oracle_usage", oracle, found=harness.SQL)
        cur.execute(harness.SQL["create_resource_hour_comparison"], window)
        by_status = list(cur.execute(harness.SQL["compare_by_meter_and_status"]))
        posted = cur.execute(harness.SQL["posted_lines"], window).fetchall()
        cur.execute("DROP TABLE oracle_usage, resource_hour_comparison")
    with w.sim.lock:
        org_names = {guid: org.name for guid, org in w.sim.foundation.organizations.items()}
    lines = harness.price_lines(posted, oracle, [], [], harness.read_prices(w.catalog),
                                harness.read_owners(w.catalog), org_names)
    counted = [r for r in by_status if r["status"] in ("complete", "not measured")]
    return Truth(missing=sum(r["missing"] for r in counted),
                 extra=sum(r["extra"] for r in counted),
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
    kind: str  # the table's group: process, postgres, concurrency, cloud foundry
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


def _indices(timeline: Timeline, kind: str) -> list[int]:
    return [i for i, s in enumerate(timeline.steps()) if s.kind == kind]


def killed_in(kind: str, action: str, recovery: str = "rerun", where: str = "") -> Play:
    """A step of ``kind`` dies at a seeded fault point: SIGKILL of its process (``kill``) or
    the database server restarted under it (``pg_restart``). Then the operator re-runs it
    (``rerun``); or, for a landing, nobody does (``next_tick``): no metering follows the
    failed landing, and the next landing that succeeds meters every hour since the previous
    successful one, as ``metering_after_landing_sensor`` does; or, to show that the campaign
    sees what a fault loses, nothing at all happens (``none``). ``where`` narrows the points
    to those whose label starts with it (``inside a COPY``: while a page is being copied in;
    ``commit``: just before a page, or the snapshot, commits)."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        steps = w.timeline.steps()
        choices = _indices(w.timeline, kind)
        if recovery == "next_tick":  # a later landing must exist to catch up
            choices = [i for i in choices if any(j > i for j in _indices(w.timeline, "land"))]
        target = rng.choice(choices)
        points = [n for n, label in enumerate(baseline.labels[target], start=1)
                  if label.startswith(where)]
        fire_at = rng.choice(points)
        clear: bool | None = None
        detail = ""
        landed: datetime | None = None  # the last landing that succeeded
        metering = "hourly"  # after a failed landing: "held", then "caught up" for an hour
        for i, step in enumerate(steps):
            w.advance(step)
            if step.kind in ("derive", "price") and metering != "hourly":
                continue  # the sensor meters only after a landing that succeeded
            if i != target:
                w.run(step)
                if step.kind == "land":
                    if metering == "held":
                        detail += "; next landing meters " + _catch_up(w, landed, step)
                    metering = "caught up" if metering == "held" else "hourly"
                    landed = step.now
                continue
            result = w.collect(w.spawn(step, fire_at=fire_at, action=action))
            detail = (f"{step.label()}, point {fire_at} of {baseline.points[target]} "
                      f"({baseline.labels[target][fire_at - 1]})")
            if action == "kill":
                if not result.killed:
                    raise AssertionError(f"the worker was not killed at {detail}: {result}")
            else:
                clear = _names_the_lost_connection(result.error)
                detail += f": {_first_line(result.error)}"
            if recovery == "rerun":
                w.run(step)
            elif recovery == "next_tick":
                metering = "held"
        return 1, clear, detail

    return play


def _catch_up(w: World, landed: datetime | None, landing: Step) -> str:
    """What the metering sensor requests after ``landing`` succeeded, run."""
    assert landing.now is not None
    first, last = hours_to_meter(landed, landing.now)
    start = utc_window(hourly_partitions.time_window_for_partition_key(first))[0]
    end = utc_window(hourly_partitions.time_window_for_partition_key(last))[1]
    for kind in ("derive", "price"):
        w.run(Step(kind, start=start, end=end))
    return f"{start:%H:00}-{end:%H:00}"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _names_the_lost_connection(error: str | None) -> bool:
    if not error:
        return False
    words = ("server closed the connection", "terminating connection", "connection failed",
             "connection refused", "the database system is")
    return any(w in error for w in words)


# A racing pick: for a timeline and a seeded random source, the index of the step to replace
# and the steps to run at once in its place (each in a worker process of its own).
Racing = Callable[[Timeline, random.Random], tuple[int, list[Step]]]


def at_once(pick: Racing) -> Play:
    """Steps started together in separate processes; each must succeed, and together they
    must leave what the one step leaves."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        target, racing = pick(w.timeline, rng)
        detail = " | ".join(s.label() for s in racing)
        for i, step in enumerate(w.timeline.steps()):
            w.advance(step)
            if i != target:
                w.run(step)
                continue
            processes = [w.spawn(s) for s in racing]
            results = [w.collect(p) for p in processes]
            failed = [r for r in results if r.returncode != 0]
            if failed:
                detail += "; failed: " + "; ".join(_first_line(r.error) for r in failed)
                w.run(step)  # the operator re-runs the one that failed
        return len(racing) - 1, None, detail

    return play


def _hourly(timeline: Timeline, kind: str, rng: random.Random) -> tuple[int, Step]:
    index = rng.choice(_indices(timeline, kind))
    return index, timeline.steps()[index]


def same_step_twice(kind: str) -> Racing:
    def pick(timeline: Timeline, rng: random.Random) -> tuple[int, list[Step]]:
        index, step = _hourly(timeline, kind, rng)
        return index, [step, step]
    return pick


def overlapping(kind: str) -> Racing:
    """The hourly step and a backfill of every hour up to it, at once."""
    def pick(timeline: Timeline, rng: random.Random) -> tuple[int, list[Step]]:
        index, step = _hourly(timeline, kind, rng)
        return index, [step, replace(step, start=timeline.start)]
    return pick


def racing_landing(kind: str) -> Racing:
    """A landing and, at the same time, a re-run of ``kind`` over the hours before it."""
    def pick(timeline: Timeline, rng: random.Random) -> tuple[int, list[Step]]:
        steps = timeline.steps()
        lands = [i for i in _indices(timeline, "land")
                 if (steps[i].now or timeline.start) > timeline.start + HOUR]
        index = rng.choice(lands)
        landing = steps[index]
        assert landing.now is not None
        upto = landing.now.replace(minute=0) - HOUR
        return index, [landing, Step(kind, start=timeline.start, end=upto)]
    return pick


def cf_fault(kind: str, *, count: int = 1, prefix: str = "/v3/", expect: str | None = None,
             **options: Any) -> Play:
    """The simulator answers a seeded request of a landing with a fault (``count`` times in
    a row). The landing either absorbs it (retries) or fails with an error that contains
    ``expect``; a failed landing is re-run by the operator."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        target = rng.choice(_indices(w.timeline, "land"))
        asked = baseline.requests[target]
        k = rng.choice([k for k, path in enumerate(asked) if path.startswith(prefix)])
        path = asked[k]
        skip = sum(1 for earlier in asked[:k] if earlier.startswith(path))
        clear: bool | None = None
        served = 0
        detail = ""
        for i, step in enumerate(w.timeline.steps()):
            w.advance(step)
            if i != target:
                w.run(step)
                continue
            before = w.sim.faults_served
            w.sim.inject_fault(kind, count=count, path_prefix=path, skip=skip, **options)
            failure = w.run(step)
            served = w.sim.faults_served - before
            w.sim.clear_faults()
            detail = f"{step.label()}, {kind} x{served} at {path} #{skip + 1}"
            # A failed snapshot meter is recorded as a failed or partial reading and the
            # landing goes on (its events still land); a failed event read fails the run.
            error = str(failure) if failure is not None else _reading_errors(w, step)
            if error:
                detail += f": {_first_line(error)}"
            if expect is not None:
                clear = expect in error and (kind == "drop_guid" or "127.0.0.1" in error)
                if not error:
                    detail += ": landed without a word"
            if failure is not None:
                w.run(step)  # the operator re-runs the failed landing
        return served, clear, detail

    return play


def _reading_errors(w: World, step: Step) -> str:
    with w.connect() as conn:
        rows = conn.execute(SQL["reading_errors"], {"taken_at": step.now}).fetchall()
    return "; ".join(f"{meter} {status}: {error}" for meter, status, error in rows)


def tampering(statement: str, expect: str) -> Play:
    """Once the month is posted, the application's own role tries to change the ledger
    behind its back; the database must refuse, and say what to do instead."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        for step in w.timeline.steps():
            w.advance(step)
            w.run(step)
        with w.connect() as conn:
            try:
                with conn.transaction():
                    conn.execute(SQL[statement])
            except psycopg.Error as exc:
                message = _first_line(str(exc))
                return 1, expect in message, f"{statement}: refused: {message}"
        return 1, False, f"{statement}: ACCEPTED by the database"

    return play


def bad_catalog(change: Callable[[Path], None], *expect: str) -> Play:
    """Once the month is posted, someone loads a catalog with a mistake in it. The load must
    be refused with a message holding every part of ``expect`` (the file, the entry, the fix),
    and leave the catalog in the database exactly as it was."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        for step in w.timeline.steps():
            w.advance(step)
            w.run(step)
        broken = Path(tempfile.mkdtemp(prefix="faults-catalog-"))
        try:
            shutil.copytree(w.catalog, broken, dirs_exist_ok=True)
            change(broken)
            with w.connect() as conn:
                before = _catalog_rows(conn)
                w.runs += 1
                try:
                    load_catalog(conn, read_catalog(broken))
                except CatalogError as exc:
                    message = str(exc)
                else:
                    return 1, False, "loaded without a word"
                unchanged = _catalog_rows(conn) == before
        finally:
            shutil.rmtree(broken, ignore_errors=True)
        missing = [part for part in expect if part not in message]
        detail = " / ".join(message.splitlines()[1:3] or [message])
        if missing:
            detail += f"; the message lacks {missing}"
        if not unchanged:
            detail += "; the catalog in the database CHANGED"
        return 1, not missing and unchanged, detail

    return play


def _catalog_rows(conn: psycopg.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute(SQL["catalog_rows"]).fetchall()]


def _edit_yaml(file: str, change: Callable[[Any], None]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        data = yaml.safe_load((directory / file).read_text())
        change(data)
        (directory / file).write_text(yaml.safe_dump(data, sort_keys=False))
    return edit


def _append_text(file: str, text: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        with (directory / file).open("a") as f:
            f.write(text)
    return edit


def _remove(file: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        (directory / file).unlink()
    return edit


def bad_config(env: Callable[[World], dict[str, str]], *expect: str) -> Play:
    """The landing job started the way the code location starts it, with one setting wrong.
    The run must fail with an error holding every part of ``expect`` (the variable and the
    fix), and nothing may change in the billing database."""

    def play(w: World, baseline: Baseline, rng: random.Random) -> tuple[int, bool | None, str]:
        steps = w.timeline.steps()
        target = rng.choice(_indices(w.timeline, "land")[1:])
        clear: bool | None = None
        detail = ""
        for i, step in enumerate(steps):
            w.advance(step)
            if i == target:
                with w.connect() as conn:
                    before = State.read(conn)
                result = w.collect(w.spawn_job("landing_job", env(w)))
                with w.connect() as conn:
                    untouched = not State.read(conn).differences(before)
                error = result.error or ""
                missing = [part for part in expect if part not in error]
                clear = result.returncode != 0 and not missing and untouched
                # the run page shows Dagster's wrapper first; quote the error under it
                chain = [e for e in error.split(" | ") if not e.startswith("dagster._core.errors")]
                detail = _first_line((chain or [error])[0]) if error else "the run succeeded"
                if missing:
                    detail += f"; the error lacks {missing}"
                if not untouched:
                    detail += "; the billing database CHANGED"
            w.run(step)  # the operator fixes the setting and runs the landing again
        return 1, clear, detail

    return play


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _good_env(w: World) -> dict[str, str]:
    return {"DATABASE_URL": _as_url(w.url), "CF_API_URL": w.sim.url, "CF_CLIENT_ID": CLIENT[0],
            "CF_CLIENT_SECRET": CLIENT[1], "BILLING_CATALOG": str(w.catalog)}


def _as_url(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    return (f"postgresql://{params['user']}@{params['host']}:{params['port']}/"
            f"{params['dbname']}")


DAEMON_PHASES = ("run created", "run started", "measured, pricing next")


def daemon_killed_mid_backfill(w: World, baseline: Baseline,
                               rng: random.Random) -> tuple[int, bool | None, str]:
    """Every landing as usual; then, instead of the hourly meterings, the operator backfills
    the window from the UI, and the machine of the Dagster daemon dies (daemon, code server
    and run worker SIGKILLed together) at a seeded phase. The operator starts the daemon
    again, marks a run left with no process as canceled, and launches the backfill again."""
    phase = DAEMON_PHASES[(w.timeline.seed - 1) % len(DAEMON_PHASES)]  # seeds 1-3: each once
    t = w.timeline
    for step in t.steps():
        w.advance(step)
        if step.kind == "land":
            w.run(step)
    storage, storage_url = w.lab.new_database(template="template0")
    params = conninfo_to_dict(storage_url)
    deployment = Deployment(_good_env(w), f"postgresql+psycopg2://{params['user']}@"
                                          f"{params['host']}:{params['port']}/{params['dbname']}")
    keys = hourly_keys_between(t.start, t.end)
    detail = f"killed at '{phase}'"
    try:
        deployment.start_webserver()
        backfill = deployment.launch_backfill(["hourly_measurements", "priced_postings"],
                                              keys[0], keys[-1])
        w.runs += 1
        deployment.start_daemon()
        runs = deployment.wait_for(lambda: _phase_reached(deployment, backfill, phase), 240,
                                   f"the backfill to reach '{phase}'")
        deployment.kill_daemon()
        detail += " (run " + ", ".join(r["status"] for r in runs) + ")"
        deployment.start_daemon()
        orphans = [r["runId"] for r in runs if r["status"] in ("STARTING", "STARTED")]
        for run_id in orphans:  # no process is left to finish them: the operator says so
            deployment.mark_canceled(run_id)
        status = deployment.wait_for(lambda: _settled(deployment, backfill), 300,
                                     "the backfill to finish")
        if status != "COMPLETED_SUCCESS":
            again = deployment.launch_backfill(["hourly_measurements", "priced_postings"],
                                               keys[0], keys[-1])
            w.runs += 1
            status = deployment.wait_for(lambda: _settled(deployment, again), 300,
                                         "the second backfill to finish")
            detail += f"; {len(orphans)} run(s) marked canceled, backfill launched again"
        detail += f"; backfill {status.lower()}"
        if status != "COMPLETED_SUCCESS":
            raise AssertionError(f"{detail}\n{deployment.logs()}")
    finally:
        deployment.stop()
        w.lab.drop_database(storage)
    w.run(t.steps()[-1])  # the month's posting
    return 1, None, detail


def _phase_reached(deployment: Deployment, backfill: str, phase: str
                   ) -> list[dict[str, Any]] | None:
    runs = deployment.backfill_runs(backfill)
    if phase == "run created":
        return runs or None
    if phase == "run started":
        return runs if any(r["status"] == "STARTED" for r in runs) else None
    done = {s["stepKey"] for r in runs for s in (r["stepStats"] or [])
            if s["status"] == "SUCCESS"}
    return runs if "hourly_measurements" in done else None


def _settled(deployment: Deployment, backfill: str) -> str | None:
    status = deployment.backfill_status(backfill)
    return status if status not in ("REQUESTED", "CANCELING", "FAILING") else None


SCENARIOS: list[Scenario] = [
    Scenario("SIGKILL mid-landing, re-run", "process", killed_in("land", "kill")),
    Scenario("SIGKILL mid-landing, next tick", "process",
             killed_in("land", "kill", "next_tick")),
    Scenario("SIGKILL inside a page's COPY", "process",
             killed_in("land", "kill", where="inside a COPY")),
    Scenario("SIGKILL between pages", "process", killed_in("land", "kill", where="commit")),
    Scenario("SIGKILL mid-derivation", "process", killed_in("derive", "kill")),
    Scenario("SIGKILL mid-pricing", "process", killed_in("price", "kill")),
    Scenario("SIGKILL mid-posting", "process", killed_in("post", "kill")),
    Scenario("Dagster daemon killed mid-backfill", "process", daemon_killed_mid_backfill),
    Scenario("Postgres restart mid-landing", "postgres", killed_in("land", "pg_restart")),
    Scenario("Postgres restart mid-derivation", "postgres", killed_in("derive", "pg_restart")),
    Scenario("Postgres restart mid-pricing", "postgres", killed_in("price", "pg_restart")),
    Scenario("Postgres restart mid-posting", "postgres", killed_in("post", "pg_restart")),
    Scenario("two derivations of one hour at once", "concurrency",
             at_once(same_step_twice("derive"))),
    Scenario("two pricings of one hour at once", "concurrency",
             at_once(same_step_twice("price"))),
    Scenario("overlapping derivations at once", "concurrency", at_once(overlapping("derive"))),
    Scenario("overlapping pricings at once", "concurrency", at_once(overlapping("price"))),
    Scenario("two postings of a month at once", "concurrency",
             at_once(same_step_twice("post"))),
    Scenario("two landings at once", "concurrency", at_once(same_step_twice("land"))),
    Scenario("re-pricing racing a landing", "concurrency", at_once(racing_landing("price"))),
    Scenario("re-derivation racing a landing", "concurrency",
             at_once(racing_landing("derive"))),
    Scenario("CF 429 with Retry-After", "cloud foundry", cf_fault("429", count=2)),
    Scenario("CF burst of 500s", "cloud foundry", cf_fault("500", count=3)),
    Scenario("CF 502s beyond the retries", "cloud foundry",
             cf_fault("502", count=4, expect="failed 4 times")),
    Scenario("CF 503s", "cloud foundry", cf_fault("503", count=2, retry_after=0)),
    Scenario("CF reply slower than the timeout", "cloud foundry",
             cf_fault("slow", delay_seconds=2.5)),
    Scenario("CF truncated JSON", "cloud foundry", cf_fault("truncate")),
    Scenario("CF malformed JSON", "cloud foundry", cf_fault("malformed", count=2)),
    Scenario("CF record without its guid", "cloud foundry",
             cf_fault("drop_guid", expect="guid")),
    Scenario("CF next link repeats its page", "cloud foundry",
             cf_fault("repeat_next", count=3, expect="already read")),
    Scenario("CF token expires mid-read", "cloud foundry", cf_fault("401")),
    Scenario("UAA down", "cloud foundry",
             cf_fault("503", count=50, prefix="/uaa/", expect="oauth/token")),
    Scenario("UPDATE of a posted ledger entry", "tampering",
             tampering("tamper_update_entry", "append-only")),
    Scenario("DELETE of a posted ledger entry", "tampering",
             tampering("tamper_delete_entry", "append-only")),
    Scenario("UPDATE of a ledger transaction", "tampering",
             tampering("tamper_update_transaction", "append-only")),
    Scenario("DELETE of a ledger transaction", "tampering",
             tampering("tamper_delete_transaction", "append-only")),
    Scenario("TRUNCATE of the ledger", "tampering",
             tampering("tamper_truncate_ledger", "append-only")),
    Scenario("UPDATE of a posted price line", "tampering",
             tampering("tamper_update_posting_line", "append-only")),
    Scenario("TRUNCATE of the posted price lines", "tampering",
             tampering("tamper_truncate_posting_lines", "append-only")),
    Scenario("DELETE of a landed usage event", "tampering",
             tampering("tamper_delete_usage_event", "append-only")),
    Scenario("UPDATE of a landed usage event", "tampering",
             tampering("tamper_update_usage_event", "append-only")),
    Scenario("TRUNCATE of the observations", "tampering",
             tampering("tamper_truncate_observations", "append-only")),
    Scenario("an unbalanced transaction", "tampering",
             tampering("tamper_unbalanced_transaction", "needs at least a debit and a credit")),
    Scenario("triggers switched off (replica role)", "tampering",
             tampering("tamper_replication_role", "permission denied")),
    Scenario("catalog: overlapping prices", "bad input", bad_catalog(
        _edit_yaml("prices.yaml", lambda d: d["prices"].append(
            {**d["prices"][0], "valid_from": date(2025, 6, 1), "microcredits_per_unit": 9})),
        "prices.yaml: entry 1 (App memory)", "overlaps entry 33", "set this entry's valid_to")),
    Scenario("catalog: negative unit", "bad input", bad_catalog(
        _edit_yaml("prices.yaml", lambda d: d["prices"][1].update(unit=-3600)),
        "prices.yaml: entry 2", "unit is -3600, it must be 1 or more")),
    Scenario("catalog: zero unit", "bad input", bad_catalog(
        _edit_yaml("prices.yaml", lambda d: d["prices"][0].update(unit=0)),
        "prices.yaml: entry 1", "unit is 0, it must be 1 or more")),
    Scenario("catalog: a number as a string", "bad input", bad_catalog(
        _edit_yaml("iaas.yaml", lambda d: d["iaas"][0].update(credits="1000000")),
        "iaas.yaml: entry 1 (IAA-AGENCY-A)", "credits must be a whole number")),
    Scenario("catalog: unknown tier", "bad input", bad_catalog(
        _edit_yaml("customers.yaml", lambda d: d["customers"][0].update(tier="ultra")),
        "customers.yaml: entry 1 (agency-a)", "tier 'ultra' is not in tiers.yaml")),
    Scenario("catalog: unknown meter", "bad input", bad_catalog(
        _edit_yaml("resource_kinds.yaml", lambda d: d["resource_kinds"][1].update(
            meter="cftasks")),
        "resource_kinds.yaml: entry 2", "meter 'cftasks' is unknown: use")),
    Scenario("catalog: an org owned by two customers", "bad input", bad_catalog(
        _edit_yaml("customers.yaml", lambda d: d["customers"][1]["orgs"].append(
            d["customers"][0]["orgs"][0])),
        "customers.yaml: entry 2 (agency-b)", "is already claimed by entry 1",
        "an org belongs to one customer")),
    Scenario("catalog: a date that is not a date", "bad input", bad_catalog(
        _edit_yaml("iaas.yaml", lambda d: d["iaas"][0].update(pop_end="end of June")),
        "iaas.yaml: entry 1 (IAA-AGENCY-A)", "pop_end", "date")),
    Scenario("catalog: duplicate ids", "bad input", bad_catalog(
        _edit_yaml("customers.yaml", lambda d: d["customers"].append(dict(d["customers"][0]))),
        "customers.yaml: entry 6 (agency-a)", "customer id 'agency-a' is already used")),
    Scenario("catalog: malformed YAML", "bad input", bad_catalog(
        _append_text("tiers.yaml", "  - name: [unclosed\n"), "tiers.yaml: line",
        "YAML syntax error")),
    Scenario("catalog: a missing file", "bad input", bad_catalog(
        _remove("prices.yaml"), "prices.yaml: the file is missing", "create it")),
    Scenario("config: DATABASE_URL pointing nowhere", "bad input", bad_config(
        lambda w: {**_good_env(w), "DATABASE_URL":
                   f"postgresql://billing@127.0.0.1:{_closed_port()}/billing"},
        "DATABASE_URL")),
    Scenario("config: wrong CF credentials", "bad input", bad_config(
        lambda w: {**_good_env(w), "CF_CLIENT_SECRET": "not-the-secret"},
        "CF_CLIENT_ID and CF_CLIENT_SECRET")),
    Scenario("config: unreachable CF_API_URL", "bad input", bad_config(
        lambda w: {**_good_env(w), "CF_API_URL": f"http://127.0.0.1:{_closed_port()}"},
        "CF_API_URL")),
    Scenario("config: VCAP_SERVICES without the database", "bad input", bad_config(
        lambda w: {k: v for k, v in {**_good_env(w), "VCAP_SERVICES": json.dumps(
            {"user-provided": [{"name": "cf-creds", "credentials": {"client": "x"}}]})}.items()
            if k != "DATABASE_URL"},
        "VCAP_SERVICES", "bind an aws-rds PostgreSQL instance")),
]


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


def run_campaign(seeds: list[int], scenarios: list[Scenario] | None = None,
                 timeline: Timeline | None = None) -> Campaign:
    outcomes = []
    with Lab() as lab:
        for seed in seeds:
            base = fault_free(lab, replace(timeline or Timeline(seed=seed), seed=seed))
            if base.truth.missing or base.truth.extra or base.truth.flagged_hours:
                raise AssertionError(f"the fault-free run of seed {seed} is not exact: "
                                     f"{base.truth}")
            for scenario in scenarios or SCENARIOS:
                outcomes.append(run_scenario(lab, scenario, base))
    return Campaign(outcomes)
