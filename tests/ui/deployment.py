"""The deployment the browser tests talk to, set up as `make dev` runs it (launch.dev): the UI
(``python -m billing_dagster.web``, dagster-webserver's app behind the UAA login) and the
daemon (``dagster-daemon run -w workspace.yaml``) as subprocesses, each in its own process
group, run from a DAGSTER_HOME holding the repository's dagster.yaml, against a migrated
Postgres database, the CF simulator (following the wall clock; its UAA logs in the demo users)
and the embedded AWS.

Before they start, the database is given a history, as `make run` gives it: the example
catalog loaded and a landing run (snapshot, usage events, AWS readings) as Dagster runs, hours
measured and priced outside Dagster and recorded as materializations (record_measured_hours),
the previous business month posted with its statements, balances and runway refreshed. The
newest 30 hours are left unmeasured: the UI shows them missing, and the tests backfill 24. AWS
was not read for five hours of the first day (AWS_OUTAGE): those hours are flagged. The three
hours before the unmeasured ones were measured before CF's events were first landed, so they
are flagged too until remeasure_sensor (in the daemon) measures them again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest

from billing_dagster.aws.embedded import EmbeddedAws
from billing_dagster.catalog import EXAMPLE_CATALOG
from billing_dagster.catalog.assets import billing_catalog
from billing_dagster.database import connect
from billing_dagster.ledger.assets import customer_balances, ledger_entries, monthly_statements
from billing_dagster.ledger.month_to_date import month_to_date
from billing_dagster.ledger.runway import customer_runway
from billing_dagster.meters import AWS_METERS
from billing_dagster.partitions import BUSINESS_TIMEZONE, hourly_keys_between
from billing_dagster.pricing.assets import held_usage
from billing_dagster.pricing.postings import price_window
from billing_dagster.resources import BillingDatabase, Clock, CloudFoundryApi
from billing_dagster.settings import sqlalchemy_url
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.simulator.aws import AwsFoundation
from billing_dagster.simulator.uaa_login import UI_CLIENT
from billing_dagster.usage.assets import aws_readings, foundation_snapshot, usage_events
from billing_dagster.usage.aws import read_and_land
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.recorded import record_measured_hours
from tests.support import SIM_CLIENT, conninfo_as_url, free_port, log_in, wait_until

REPO = Path(__file__).resolve().parents[2]
HOUR = timedelta(hours=1)
NEW_YORK = ZoneInfo(BUSINESS_TIMEZONE)
UNMEASURED_HOURS = 30  # the newest hours left missing
EARLY_HOURS = 3  # the hours before those, measured before CF's events landed
BACKFILL_HOURS = 24  # of which the tests backfill these (the oldest of them)
AWS_READING_EVERY = timedelta(minutes=110)  # rds/opensearch need readings <= 2 h apart
# no AWS reading lands in these hours of the first measured day (an outage): the gauges' hours
# in it are not determined by the landed data, so hour_complete fails there
AWS_OUTAGE = (timedelta(hours=6), timedelta(hours=11))
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
LOCATION = """{ workspaceOrError { __typename ... on Workspace {
  locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"""
NEEDED_DAEMONS = {"SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"}


@dataclass(frozen=True)
class Deployment:
    url: str  # the UI, e.g. http://127.0.0.1:41234
    database_url: str  # libpq conninfo of the billing database (and Dagster's storage)
    home: Path  # DAGSTER_HOME
    logs: Path  # web.log, daemon.log
    statements_dir: Path
    billing_start: date  # the first day of the hourly partitions (New York)
    start: datetime  # its first instant (midnight in New York), UTC
    partitions: list[str]  # every hourly partition key up to the last complete hour
    measured: list[str]  # the keys recorded as measured outside Dagster
    measured_early: list[str]  # of which these were measured before CF's events landed
    to_backfill: list[str]  # the 24 missing keys the tests backfill from the UI
    month: str  # the business month posted (monthly partition key)

    def log_tails(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {path.name} (last {chars} characters)\n"
                         f"{path.read_text(errors='replace')[-chars:]}"
                         for path in sorted(self.logs.glob("*.log")))


def billing_start_for(now: datetime) -> date:
    """Two days before today (New York), or the last day of the previous month if that is
    earlier: the hourly partitions start close to the data, and the previous business month is
    a monthly partition the fixture can post."""
    today = now.astimezone(NEW_YORK).date()
    last_of_previous_month = today.replace(day=1) - timedelta(days=1)
    return min(today - timedelta(days=2), last_of_previous_month)


@contextmanager
def deployed(database_url: str, aws: EmbeddedAws, workdir: Path) -> Iterator[Deployment]:
    """The deployment on ``database_url`` (migrated, empty) and ``aws`` (reset here), its files
    under ``workdir``; everything it started is stopped on leaving."""
    aws.reset()
    now = datetime.now(UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    start_day = billing_start_for(now)
    start = datetime.combine(start_day, clock_time(0), tzinfo=NEW_YORK).astimezone(UTC)
    cutoff = this_hour - UNMEASURED_HOURS * HOUR
    month = f"{start_day.replace(day=1):%Y-%m}"
    # measured outside Dagster: the first day (in the posted month) and up to two days before
    # the cutoff (the two meet in the first days of a month)
    early = (cutoff - EARLY_HOURS * HOUR, cutoff)
    windows = [(start, min(start + 24 * HOUR, early[0]))]
    if early[0] > start + 24 * HOUR:
        windows.append((max(start + 24 * HOUR, early[0] - 48 * HOUR), early[0]))
    home, logs, statements = workdir / "dagster_home", workdir / "logs", workdir / "statements"
    for directory in (home, logs, statements):
        directory.mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    url = conninfo_as_url(database_url)

    # seed 7: the example catalog's customers own its orgs (epa and gsa-tts at this size)
    foundation = Foundation(seed=7, apps=50, service_instances=16, start=start - 2 * HOUR,
                            retention_days=45)
    with Simulator(foundation, client_id=SIM_CLIENT[0], client_secret=SIM_CLIENT[1],
                   follow_wall_clock=True) as sim:
        AwsFoundation(foundation, aws.clients())  # follows the foundation as time advances
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BILLING_DAGSTER_PG_URL", sqlalchemy_url(url))  # read by dagster.yaml
            instance = dg.DagsterInstance.from_config(str(home))
        with instance:
            _history(instance, sim, aws, database_url, statements, windows, early, month, now)
        env = _environment(url, home, statements, start_day, sim, aws)
        port = free_port()
        children: list[subprocess.Popen[bytes]] = []
        try:
            web = [sys.executable, "-m", "billing_dagster.web", "--host", "127.0.0.1",
                   "--port", str(port)]
            daemon = [shutil.which("dagster-daemon", path=str(Path(sys.executable).parent))
                      or "dagster-daemon", "run", "-w", str(REPO / "workspace.yaml")]
            for name, command in (("web", web), ("daemon", daemon)):
                with (logs / f"{name}.log").open("wb") as log:  # the child keeps its copy
                    children.append(subprocess.Popen(
                        command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True))
            partitions = hourly_keys_between(start, this_hour)
            measured_early = hourly_keys_between(*early)
            measured = [key for window in windows for key in hourly_keys_between(*window)]
            deployment = Deployment(
                url=f"http://127.0.0.1:{port}", database_url=database_url, home=home, logs=logs,
                statements_dir=statements, billing_start=start_day, start=start,
                partitions=partitions,
                measured=measured + measured_early, measured_early=measured_early,
                to_backfill=hourly_keys_between(cutoff, cutoff + BACKFILL_HOURS * HOUR),
                month=month)
            _wait_until_ready(deployment, children)
            yield deployment
        finally:
            _stop(children)


def _history(instance: dg.DagsterInstance, sim: Simulator, aws: EmbeddedAws,
             database_url: str, statements: Path, windows: list[tuple[datetime, datetime]],
             early: tuple[datetime, datetime], month: str, now: datetime) -> None:
    resources: dict[str, Any] = {
        "db": BillingDatabase(url=database_url),
        "cf": CloudFoundryApi(api_url=sim.url, client_id=SIM_CLIENT[0],
                              client_secret=SIM_CLIENT[1]),
        "aws": aws.resource(),
        "clock": Clock(),  # the wall clock, as the deployment's runs use
    }

    def run(assets: list[Any], **options: Any) -> None:
        result = dg.materialize(assets, resources=resources, instance=instance,
                                tags={"billing/launched_by": "tests/ui"}, **options)
        assert result.success, f"run {result.run_id} of {assets} failed"

    run([billing_catalog], run_config={
        **QUIET, "ops": {"billing_catalog": {"config": {"directory": str(EXAMPLE_CATALOG)}}}})
    # AWS read every 110 minutes over the measured windows and on to now, in virtual time,
    # before anything asks the simulator (which then catches up with the wall clock)
    clients = aws.clients()
    readings: list[datetime] = []
    for first, last in [(windows[0][0], windows[0][1] + 2 * HOUR), (windows[-1][0], now)]:
        at = first - HOUR + timedelta(minutes=1)
        if readings:
            at = max(at, readings[-1] + AWS_READING_EVERY)
        while at < last:
            if not windows[0][0] + AWS_OUTAGE[0] <= at < windows[0][0] + AWS_OUTAGE[1]:
                readings.append(at)
            at += AWS_READING_EVERY
    with connect(database_url) as conn:
        for at in readings:
            sim.advance_to(at)
            read_and_land(conn, clients, AWS_METERS, at)
        # measured before any of CF's events landed: CF's meters are a gap in these hours
        derive_window(conn, *early)
        price_window(conn, *early)
        record_measured_hours(instance, conn, *early, "tests-ui-history",
                              "measured before CF's usage events were landed")
    # the landing, as the hourly landing_job does it: CF's events since the foundation began
    # (the first read rebuilds the history from them), a snapshot, and AWS now
    run([foundation_snapshot, usage_events, aws_readings], run_config=QUIET)
    with connect(database_url) as conn:
        for first, last in windows:
            derive_window(conn, first, last)
            price_window(conn, first, last)
            record_measured_hours(instance, conn, first, last, "tests-ui-history",
                                  "the browser tests' history, measured outside Dagster")
    run([ledger_entries, monthly_statements], partition_key=month, run_config={
        **QUIET, "ops": {"monthly_statements": {"config": {"output_dir": str(statements)}}}})
    run([customer_balances, customer_runway, held_usage, month_to_date], run_config=QUIET)


def _environment(url: str, home: Path, statements: Path, start_day: date, sim: Simulator,
                 aws: EmbeddedAws) -> dict[str, str]:
    """What launch.prepare and launch.dev set, on top of this process's environment without
    its database, Cloud Foundry, AWS, Dagster and billing settings."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("PG", "CF_", "UI_", "AWS_", "DAGSTER", "BILLING"))
                 and k != "DATABASE_URL"}
    return {**inherited, **aws.environment(),
            "DAGSTER_HOME": str(home), "DATABASE_URL": url,
            "BILLING_DAGSTER_PG_URL": sqlalchemy_url(url),
            "BILLING_CATALOG": str(EXAMPLE_CATALOG), "BILLING_STATEMENTS_DIR": str(statements),
            "BILLING_START": start_day.isoformat(),
            "CF_API_URL": sim.url, "CF_CLIENT_ID": SIM_CLIENT[0],
            "CF_CLIENT_SECRET": SIM_CLIENT[1],
            "UI_CLIENT_ID": UI_CLIENT[0], "UI_CLIENT_SECRET": UI_CLIENT[1]}


def _wait_until_ready(deployment: Deployment, children: list[subprocess.Popen[bytes]]) -> None:
    base = deployment.url

    def alive_and(check: Callable[[], Any]) -> Callable[[], Any]:
        def checked() -> Any:
            dead = [c.args for c in children if c.poll() is not None]
            if dead:
                raise AssertionError(f"exited early: {dead}\n{deployment.log_tails()}")
            return check()
        return checked

    wait_until(alive_and(lambda: httpx.get(base + "/healthz", timeout=5).status_code == 200),
               180, "the web process's health check", deployment.log_tails)
    with httpx.Client(follow_redirects=False, timeout=60) as operator:
        log_in(operator, base, "operator")

        def location_loaded() -> bool:
            answer = operator.post(base + "/graphql", json={"query": LOCATION}).json()
            entries = answer["data"]["workspaceOrError"]["locationEntries"]
            return bool(entries) and all(
                e["loadStatus"] == "LOADED"
                and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries)

        def daemons_healthy() -> bool:
            answer = operator.post(base + "/graphql", json={"query": DAEMONS}).json()
            statuses = answer["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
            return NEEDED_DAEMONS <= {s["daemonType"] for s in statuses if s["healthy"]}

        wait_until(alive_and(location_loaded), 180, "the code location to load in the UI",
                   deployment.log_tails)
        wait_until(alive_and(daemons_healthy), 180, "the daemon to report healthy",
                   deployment.log_tails)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each process group (the web process, its code server, the daemon and the
    runs it launched), SIGKILL to what is left after 30 s."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()
        _signal_group(child, signal.SIGKILL)  # a code server or run worker left behind


def _signal_group(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass
