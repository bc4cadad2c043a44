"""``make accuracy``: a month of a 2,000-app foundation, compared with the oracle.

    python -m tests.accuracy [--hours 744] [--apps 2000] [--service-instances 800] [--seed N]
                             [--first-hours N] [--keep-database]

Runs on a fresh database of the local PostgreSQL 15 (BILLING_TEST_ADMIN_URL picks another
server), prints the comparison table, drops the database (``--keep-database`` keeps it, to
look into a difference, and prints its name), and exits 1 when a complete hour
differs from the oracle or a posted line is off by more than one microcredit.
"""

import argparse
import dataclasses
import logging
import os
import sys
import uuid

import psycopg
from psycopg import sql

from billing_dagster.migrate import migrate
from tests.accuracy.harness import Scenario, run
from tests.conftest import LOCAL_ADMIN_URL, database_url


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=744)
    parser.add_argument("--apps", type=int, default=2000)
    parser.add_argument("--service-instances", type=int, default=800)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--first-hours", type=int, default=None,
                        help="live only the first N hours of the month's scenario, its faults "
                             "at the month's times (--hours compresses the faults instead): "
                             "reproduces a month's difference sooner")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("billing_dagster", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scenario = Scenario(seed=args.seed, apps=args.apps,
                        service_instances=args.service_instances)
    if args.hours != scenario.hours:
        scenario = scenario.scaled(args.hours)
    if args.first_hours is not None:
        scenario = dataclasses.replace(scenario, hours=args.first_hours)
    admin = os.environ.get("BILLING_TEST_ADMIN_URL", LOCAL_ADMIN_URL)
    name = f"billing_accuracy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = database_url(admin, name)
        with psycopg.connect(url) as conn:
            migrate(conn)
        report = run(url, scenario)
    finally:
        if args.keep_database:
            logging.getLogger("accuracy").info("kept the database %s", name)
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
    print(report.table())
    failed = report.complete_differing or report.lines_off_by_more_than_one or report.ledger
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
