"""`make bench`: the UI's asset pages after a year of hourly partitions, as a person sees them.

The pages' cost grows with Dagster's own records (one materialization per hour and asset, with
its metadata, and one hour_complete evaluation per hour), not with the billing tables, so a
small foundation (100 apps / 50 service instances) is metered over a year: its usage events
landed day by day, then ``hourly_measurements`` and ``priced_postings`` materialized as one
single-run backfill per business month on a Dagster instance whose storage is the bench
database (as in production). Then the code location is served by the web process's app
without its login (``serve_app``; partitions from the billing start) and headless Debian
chromium opens each page twice in one browser, timed from the request until the page shows its
figures, once as the runs left the database and once after VACUUM ANALYZE (as autovacuum
leaves a production database; the development machine's PostgreSQL runs without it):

- the partitions view of ``hourly_measurements`` and of ``priced_postings`` (until the counts
  "Materialized (N)" and "Missing (N)" are drawn),
- the checks view of ``hourly_measurements`` (until ``hour_complete`` is listed), and the
  GraphQL query of the checks' statuses by itself.

The database is a fresh one on BENCH_ADMIN_URL (see bench.snapshot), dropped at the end
(``--keep-database`` keeps it).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time as clock
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import uvicorn
import yaml
from psycopg.conninfo import conninfo_to_dict
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from bench.backfill import CLIENT, RANGE_END, RANGE_START, as_url, land_history, materialize
from bench.snapshot import admin_url, fresh_database, timed
from bench.year import month_bounds
from billing_dagster.catalog.loading import load_catalog
from billing_dagster.catalog.reading import EXAMPLE_CATALOG, read_catalog
from billing_dagster.database import connect
from billing_dagster.partitions import hourly_keys_between
from billing_dagster.pricing.assets import priced_postings
from billing_dagster.resources import BillingDatabase
from billing_dagster.settings import sqlalchemy_url
from billing_dagster.simulator import Foundation, Simulator
from billing_dagster.usage.assets import hourly_measurements
from billing_dagster.web.app import dagster_app

REPO = Path(__file__).resolve().parent.parent
FIRST_MONTH = date(2025, 2, 1)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PAGE_SECONDS = 300.0


def page_text(driver: WebDriver) -> str:
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except Exception:  # no page yet
        return ""


def partition_counts(driver: WebDriver) -> str | None:
    text = page_text(driver)
    materialized = re.search(r"Materialized \((\d+)\)", text)
    missing = re.search(r"Missing \((\d+)\)", text)
    if materialized and missing:
        return f"{materialized[1]} materialized, {missing[1]} missing"
    return None


def checks_listed(driver: WebDriver) -> str | None:
    return "hour_complete listed" if "hour_complete" in page_text(driver) else None


PAGES: list[tuple[str, str, Callable[[WebDriver], str | None]]] = [
    ("hourly_measurements, partitions", "/assets/hourly_measurements?view=partitions",
     partition_counts),
    ("priced_postings, partitions", "/assets/priced_postings?view=partitions",
     partition_counts),
    ("hourly_measurements, checks", "/assets/hourly_measurements?view=checks", checks_listed),
]


# what the checks view asks the server for each check (the part that grows with partitions)
CHECKS_QUERY = """
{ assetNodeOrError(assetKey: {path: ["hourly_measurements"]}) { ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks {
        name
        executionForLatestMaterialization { id status timestamp }
        partitionStatuses { ... on AssetCheckTimePartitionStatuses {
            ranges { startKey endKey status } } }
} } } } } }
"""


def browser() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1600,1000", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(PAGE_SECONDS)
    return driver


def time_page(driver: WebDriver, url: str, shown: Callable[[WebDriver], str | None]
              ) -> tuple[float, str]:
    """Seconds from the request until ``shown`` finds the page's figures, and what it found."""
    started = clock.monotonic()
    driver.get(url)
    try:
        found = WebDriverWait(driver, PAGE_SECONDS, poll_frequency=0.1).until(shown)
    except TimeoutException as exc:
        raise RuntimeError(f"{url} showed no figures in {PAGE_SECONDS:.0f} s: "
                           f"{page_text(driver)[:500]!r}") from exc
    return clock.monotonic() - started, str(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(port: int) -> None:
    """The web process's app (billing_dagster/web/app.py) without its login, which is not what
    is timed: the webserver's app for the project's workspace on DAGSTER_HOME's instance."""
    with dagster_app() as app:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def serve(home: Path, url: str, start: date, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The web process's app (serve_app) on the bench's instance and the project's workspace,
    in a process of its own; its base URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "DAGSTER", "BILLING")) and k != "DATABASE_URL"}
    env |= {"DAGSTER_HOME": str(home), "DATABASE_URL": as_url(url),
            "BILLING_DAGSTER_PG_URL": sqlalchemy_url(as_url(url)),
            "BILLING_START": start.isoformat()}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ui_pages", "--serve", str(port)],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = clock.monotonic() + 180
    while clock.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/server_info", timeout=5).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        clock.sleep(1)
    process.terminate()
    raise RuntimeError(f"dagster-webserver did not answer in 180 s: {log.read_text()[-2000:]}")


def time_pages(base: str, state: str) -> None:
    """Each page twice in one browser, and the checks view's GraphQL query by itself."""
    print(f"the pages {state}:")
    print(f"{'page':<36} | {'first (s)':>9} | {'again (s)':>9} | shown")
    driver = browser()
    try:
        for name, path, shown in PAGES:
            first, found = time_page(driver, base + path, shown)
            again, _ = time_page(driver, base + path, shown)
            print(f"{name:<36} | {first:>9.1f} | {again:>9.1f} | {found}", flush=True)
    finally:
        driver.quit()
    for attempt in ("first", "again"):
        answer, seconds = timed(lambda: httpx.post(base + "/graphql", timeout=PAGE_SECONDS,
                                                   json={"query": CHECKS_QUERY}))
        answer.raise_for_status()
        print(f"the checks' GraphQL query ({attempt}): {seconds:.2f} s", flush=True)


def bench(admin: str, apps: int, months: int, keep: bool) -> None:
    bounds = month_bounds(FIRST_MONTH, months)
    start, end = bounds[0][0], bounds[-1][1]
    foundation = Foundation(seed=7, apps=apps, service_instances=apps // 2,
                            start=start - timedelta(hours=1))
    with fresh_database(admin, keep=keep) as url, \
            tempfile.TemporaryDirectory(prefix="bench_ui_home_") as home_dir:
        home = Path(home_dir)
        config = {"storage": {"postgres": {"postgres_url": sqlalchemy_url(as_url(url))}},
                  "telemetry": {"enabled": False}}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        with connect(url) as conn:
            load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
        with Simulator(foundation, client_id=CLIENT[0], client_secret=CLIENT[1]) as sim:
            (events, _), history_s = timed(lambda: land_history(url, sim, start, end))
        print(f"{apps} apps, {events} usage events landed over {months} months in "
              f"{history_s:.0f} s", flush=True)
        resources = {"db": BillingDatabase(url=url)}
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for month_start, month_end in bounds:
                keys = hourly_keys_between(month_start, month_end)
                seconds = materialize(instance, [hourly_measurements, priced_postings],
                                      resources, tags={RANGE_START: keys[0],
                                                       RANGE_END: keys[-1]})
                print(f"{month_start:%Y-%m}: {len(keys)} partitions x 2 assets in one run, "
                      f"{seconds:.0f} s", flush=True)
        process, base = serve(home, url, FIRST_MONTH, home / "webserver.log")
        try:
            time_pages(base, "as the runs left the database")
            with connect(url) as conn:
                _, analyze_s = timed(lambda: conn.execute("VACUUM ANALYZE"))
            time_pages(base, f"after VACUUM ANALYZE ({analyze_s:.0f} s), as autovacuum would "
                             "leave it")
        finally:
            process.terminate()
            process.wait(timeout=60)
        hours = len(hourly_keys_between(start, end))
        now = datetime.now(UTC)
        print(f"{hours} hours materialized ({months} months); the UI's partitions run from "
              f"{FIRST_MONTH} to now ({now:%Y-%m-%d}), so the rest show as missing")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_pages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--keep-database", action="store_true",
                        help="keep the database (billing tables and Dagster's storage)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_app(args.serve)
        return
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, {os.cpu_count()} CPUs")
    bench(admin, args.apps, args.months, args.keep_database)


if __name__ == "__main__":
    main()
