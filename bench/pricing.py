"""`make bench`: a business month of measurements priced, beside what it cannot go below,
measured in the same run.

The month is March 2025 in New York (743 hours: DST starts on the 9th). 10,000 resources (two
thirds app memory, a third service instances on the example catalog's priced plans) in 100
spaces of the example catalog's orgs (and one org no customer owns) measure every hour: 7.43M
rows of ``billing.hourly_measurement``, written with set-based SQL. Then:

a. ``price_window`` over the month, as a pricing run of 743 hours does it (the postings
   replaced, then the window's charges per customer and held usage read for metadata), on the
   project's sessions (JIT off, see billing_dagster/database.py);
b. the same with PostgreSQL's JIT on (the server default), to show what the setting costs or
   gains on the one statement that reads millions of rows;
c. floor 1, scanning and grouping: the month's measurements summed per hour and resource kind,
   nothing joined, nothing written (what any pricing must at least read);
d. floor 2, writing: the postings (a) wrote, inserted again into a bare table of theirs
   (WAL-logged like the real one, without its indexes and checks).

Each pricing starts from a table without postings, as the first pricing of a month does. (a)
and the floors are timed ``--runs`` times (3) and their medians compared: one run on a 2-core
machine varies by about a second.

The database is a fresh one on BENCH_ADMIN_URL (see bench.snapshot), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
from datetime import UTC, datetime

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.snapshot import admin_url, fresh_database, timed
from billing_dagster.catalog.loading import load_catalog
from billing_dagster.catalog.reading import EXAMPLE_CATALOG, read_catalog
from billing_dagster.database import connect, ensure_month_partitions
from billing_dagster.pricing.postings import price_window

MONTH = (datetime(2025, 3, 1, 5, tzinfo=UTC), datetime(2025, 4, 1, 4, tzinfo=UTC))  # 743 h
TARGET_S = 8.0  # issue 12
SPACES = 100

SEED_SQL = """
INSERT INTO billing.cf_org (guid, name, first_seen_at, last_seen_at)
SELECT org_guid, 'org-' || row_number() OVER (ORDER BY org_guid), %(start)s, %(end)s
  FROM (SELECT DISTINCT org_guid FROM billing.org_ownership
        UNION SELECT 'no-customer-org') o;
INSERT INTO billing.cf_space (guid, org_guid, name, first_seen_at, last_seen_at)
SELECT 'space-' || s, o.guid, 'space-' || s, %(start)s, %(end)s
  FROM generate_series(1, %(spaces)s) s
  JOIN (SELECT guid, row_number() OVER (ORDER BY guid) - 1 AS n,
               count(*) OVER () AS orgs FROM billing.cf_org) o ON o.n = s %% o.orgs;
INSERT INTO billing.resource (meter, natural_id, name, space_guid, first_seen_at)
SELECT CASE WHEN i %% 3 = 0 THEN 'cfservices' ELSE 'cfapps' END, 'resource-' || i,
       'resource-' || i, 'space-' || (1 + i %% %(spaces)s), %(start)s
  FROM generate_series(1, %(resources)s) i;
CREATE TEMP TABLE bench_resource_kind AS
WITH priced AS (
    SELECT k.meter, array_agg(DISTINCT k.id ORDER BY k.id) AS kinds
      FROM billing.resource_kind k JOIN billing.price p ON p.resource_kind_id = k.id
     GROUP BY k.meter
)
SELECT r.id AS resource_id, pr.kinds[1 + r.id %% cardinality(pr.kinds)] AS resource_kind_id,
       CASE WHEN r.meter = 'cfapps' THEN 64 * (1 + r.id %% 32) ELSE 1 END AS rate
  FROM billing.resource r JOIN priced pr USING (meter);
INSERT INTO billing.hourly_measurement (hour_start, resource_id, resource_kind_id, value)
SELECT h, b.resource_id, b.resource_kind_id,
       b.rate * CASE WHEN (b.resource_id + extract(epoch FROM h)::bigint / 3600) %% 11 = 0
                     THEN 1800 ELSE 3600 END
  FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',
                       interval '1 hour') h
 CROSS JOIN bench_resource_kind b;
"""

SCAN_FLOOR_SQL = """
SELECT count(*) FROM (
    SELECT hour_start, resource_kind_id, sum(value)
      FROM billing.hourly_measurement
     WHERE hour_start >= %(window_start)s AND hour_start < %(window_end)s
     GROUP BY 1, 2) g
"""


def seed(url: str, resources: int) -> int:
    with connect(url) as conn:
        load_catalog(conn, read_catalog(EXAMPLE_CATALOG))
        ensure_month_partitions(conn, *MONTH)
        with conn.transaction(), conn.cursor() as cur:
            params = {"start": MONTH[0], "end": MONTH[1], "spaces": SPACES,
                      "resources": resources}
            for statement in filter(str.strip, SEED_SQL.split(";\n")):
                cur.execute(statement, params)
        conn.execute("VACUUM ANALYZE billing.hourly_measurement")
        conn.execute("VACUUM ANALYZE billing.resource")
        row = conn.execute("SELECT count(*) FROM billing.hourly_measurement").fetchone()
        return row[0] if row else 0


def price(url: str, jit: bool) -> tuple[int, float]:
    """The month priced on a table without postings (as a first pricing finds it)."""
    with connect(url) as conn:
        conn.execute("DELETE FROM billing.hourly_posting")
        conn.execute("VACUUM billing.hourly_posting")
        if jit:
            conn.execute("SET jit = on")
        priced, seconds = timed(lambda: price_window(conn, *MONTH))
        return priced.rows, seconds


def floors(url: str, n: int) -> tuple[float, float]:
    window = {"window_start": MONTH[0], "window_end": MONTH[1]}
    with connect(url) as conn:
        _, scan_s = timed(lambda: conn.execute(SCAN_FLOOR_SQL, window).fetchone())
        # a plain (WAL-logged) table with the same columns and no index or constraint
        copy = sql.Identifier("public", f"posting_copy_{n}")
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE billing.hourly_posting)").format(copy))

        def write() -> None:
            with conn.transaction():
                conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM billing.hourly_posting")
                             .format(copy))

        _, write_s = timed(write)
        return scan_s, write_s


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pricing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3,
                        help="pricings and floors timed; the medians are printed")
    args = parser.parse_args()
    admin = admin_url()
    print(f"database server: {conninfo_to_dict(admin).get('host')}, {os.cpu_count()} CPUs")
    with fresh_database(admin) as url:
        measurements, seed_s = timed(lambda: seed(url, args.resources))
        print(f"seeded {measurements:,} measurements of {args.resources:,} resources over "
              f"743 hours in {seed_s:.1f} s")
        runs = [price(url, jit=False) for _ in range(args.runs)]
        rows, price_s = runs[0][0], statistics.median(s for _, s in runs)
        _, jit_s = price(url, jit=True)
        floor_runs = [floors(url, n) for n in range(args.runs)]
        scan_s = statistics.median(f[0] for f in floor_runs)
        write_s = statistics.median(f[1] for f in floor_runs)
    floor = scan_s + write_s
    print(f"{'pricing the month':<44} {price_s:8.2f} s   ({rows:,} posting rows; median of "
          f"{args.runs}: {', '.join(f'{s:.2f}' for _, s in runs)})")
    print(f"{'  the same with JIT on':<44} {jit_s:8.2f} s")
    print(f"{'floor 1: scan and group the measurements':<44} {scan_s:8.2f} s")
    print(f"{'floor 2: write the posting rows':<44} {write_s:8.2f} s")
    print(f"{'pricing / (floor 1 + floor 2)':<44} {price_s / floor:8.2f} x")
    print(f"{'target':<44} {TARGET_S:8.2f} s   "
          f"({'met' if price_s <= TARGET_S else 'NOT met'})")


if __name__ == "__main__":
    main()
