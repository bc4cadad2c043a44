"""Pricing and the monthly ledger on real Postgres: month boundaries in New York time,
mid-month price changes, rounding once per line, idempotent posting and adjustments."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import psycopg
import pytest
from psycopg.types.range import Range

from billing_dagster.ledger.posting import post_month
from billing_dagster.ledger.statements import build_statements
from billing_dagster.meters import MeterSnapshot, ObservedResource
from billing_dagster.partitions import hourly_partitions, monthly_partitions, utc_window
from billing_dagster.pricing.postings import price_window
from billing_dagster.sql import query
from billing_dagster.usage.measurements import derive_window
from billing_dagster.usage.snapshot import Inventory, Snapshot, land_snapshot

INVENTORY = Inventory(orgs=[("org-1", "acme-org"), ("org-2", "orphan-org")],
                      spaces=[("space-1", "org-1", "prod"), ("space-2", "org-2", "dev")])
MONTH_HOUR_SECONDS = 730 * 3600


@pytest.fixture
def acme(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("INSERT INTO billing.tier (name, credits_per_month) VALUES ('micro', 250)")
    conn.execute("INSERT INTO billing.customer (id, name, tier) VALUES ('acme', 'Acme', 'micro')")
    conn.execute("INSERT INTO billing.org_ownership (org_guid, customer_id, valid_during) "
                 "VALUES ('org-1', 'acme', '(,)')")
    conn.commit()
    return conn


def add_price(conn, microcredits: int, unit: int, start: datetime, end: datetime | None = None):
    conn.execute(
        "INSERT INTO billing.price (resource_kind_id, microcredits_per_unit, unit, valid_during) "
        "SELECT id, %s, %s, %s FROM billing.resource_kind WHERE natural_id = 'app-memory'",
        (microcredits, unit, Range(start, end, "[)")))
    conn.commit()


def run_app(conn, guid: str, mib: int, start: datetime, end: datetime, space="space-1"):
    """An app process running [start, end) at `mib`, as two complete snapshots would see it."""
    land_snapshot(conn, Snapshot(start, INVENTORY, [MeterSnapshot(
        "cfapps", [ObservedResource(guid, guid, space, "app-memory", mib)], [], complete=False)]))
    land_snapshot(conn, Snapshot(end, INVENTORY, [MeterSnapshot(
        "cfapps", [ObservedResource(guid, guid, space, "app-memory", 0)], [], complete=False)]))


def month(key: str) -> tuple[date, datetime, datetime]:
    start, end = utc_window(monthly_partitions.time_window_for_partition_key(key))
    return date.fromisoformat(f"{key}-01"), start, end


def derive_price_post(conn, key: str):
    business_month, start, end = month(key)
    derive_window(conn, start, end)
    price_window(conn, start, end)
    return post_month(conn, business_month, start, end)


def posted_lines(conn, key: str) -> list[tuple]:
    return conn.execute(
        "SELECT t.transaction_type, l.quantity, l.amount_microcredits, l.microcredits_per_unit "
        "FROM billing.posting_line l JOIN billing.ledger_transaction t ON t.id = l.transaction_id "
        "WHERE t.business_month = %s ORDER BY t.id, l.microcredits_per_unit",
        (date.fromisoformat(f"{key}-01"),)).fetchall()


def balances(conn) -> dict[str, int]:
    """Acme's balance per account type (its agreements' lots summed into credit_pool)."""
    rows = conn.execute("SELECT account_type, sum(balance_microcredits)::bigint "
                        "FROM billing.account_balance WHERE customer_id = 'acme' "
                        "GROUP BY account_type").fetchall()
    return dict(rows)


def assert_ledger_balanced(conn) -> None:
    net = conn.execute("SELECT coalesce(sum(amount_microcredits * direction), 0) "
                       "FROM billing.ledger_entry").fetchone()
    assert net == (0,)
    unbalanced = conn.execute(
        "SELECT transaction_id FROM billing.ledger_entry GROUP BY transaction_id "
        "HAVING sum(amount_microcredits * direction) <> 0").fetchall()
    assert unbalanced == []


@pytest.mark.parametrize(("key", "hours"), [("2025-03", 743), ("2025-11", 721),
                                            ("2025-12", 744), ("2025-02", 672)])
def test_business_months_have_their_new_york_hours(key: str, hours: int):
    window = monthly_partitions.time_window_for_partition_key(key)
    keys = hourly_partitions.get_partition_keys_in_time_window(window)
    start, end = utc_window(window)
    assert len(keys) == hours == (end - start) // timedelta(hours=1)
    # and Dagster maps the month onto exactly those hourly partitions (lineage in the UI)
    mapped = dg.TimeWindowPartitionMapping().get_upstream_mapped_partitions_result_for_partitions(
        monthly_partitions.subset_with_partition_keys([key]), monthly_partitions,
        hourly_partitions).partitions_subset.get_partition_keys()
    assert list(mapped) == keys


def test_hours_belong_to_the_new_york_month_they_fall_in(acme):
    price = 1_000_000  # per MiB-hour, so a MiB-hour costs one credit exactly
    add_price(acme, price, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    hour = timedelta(hours=1)
    for guid, mib, at in [("jan", 1, datetime(2025, 2, 1, 0, tzinfo=UTC)),   # Jan 31 19:00 ET
                          ("feb-a", 2, datetime(2025, 2, 1, 5, tzinfo=UTC)),  # Feb 1 00:00 ET
                          ("feb-b", 4, datetime(2025, 3, 1, 0, tzinfo=UTC)),  # Feb 28 19:00 ET
                          ("mar", 8, datetime(2025, 3, 1, 5, tzinfo=UTC))]:   # Mar 1 00:00 ET
        run_app(acme, guid, mib, at, at + hour)
    posted = {key: derive_price_post(acme, key) for key in ("2025-01", "2025-02", "2025-03")}
    charged = {key: sum(p.amount_microcredits for p in m.posted) for key, m in posted.items()}
    assert charged == {"2025-01": 1 * price, "2025-02": 6 * price, "2025-03": 8 * price}
    assert_ledger_balanced(acme)


def test_rounding_happens_once_per_line_not_per_hour(acme):
    # 1,000,000 microcredits per 730 MiB-hours: each hour is worth 1369.86..., a 730-hour
    # month exactly 1,000,000. Rounding per hour would post 1,000,100.
    add_price(acme, 1_000_000, MONTH_HOUR_SECONDS, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, _ = month("2025-03")
    run_app(acme, "a", 1, start, start + timedelta(hours=730))
    posted = derive_price_post(acme, "2025-03")
    assert [(p.transaction_type, p.amount_microcredits) for p in posted.posted] == [
        ("usage_post", 1_000_000)]
    assert balances(acme) == {"credit_pool": 0, "credits_used": 1_000_000,  # no agreement:
                              "credits_expired": 0, "receivable": 0, "overage": 1_000_000}
    assert_ledger_balanced(acme)


def test_a_price_change_mid_month_charges_each_hour_at_its_own_price(acme):
    change = datetime(2025, 3, 15, 4, tzinfo=UTC)  # Mar 15 00:00 ET
    add_price(acme, 3_600_000, 3600, datetime(2025, 1, 1, tzinfo=UTC), change)
    add_price(acme, 7_200_000, 3600, change)
    _, start, end = month("2025-03")
    run_app(acme, "a", 1, start, end)
    derive_price_post(acme, "2025-03")
    before = int((change - start).total_seconds())
    after = int((end - change).total_seconds())
    assert posted_lines(acme, "2025-03") == [
        ("usage_post", before, before * 1000, 3_600_000),
        ("usage_post", after, after * 2000, 7_200_000)]
    assert_ledger_balanced(acme)


def test_posting_a_month_again_posts_nothing(acme):
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, _ = month("2025-03")
    run_app(acme, "a", 3, start, start + timedelta(hours=10))
    first = derive_price_post(acme, "2025-03")
    second = derive_price_post(acme, "2025-03")
    third = post_month(acme, *month("2025-03"))
    assert len(first.posted) == 1
    assert second.posted == [] and third.posted == []
    assert acme.execute("SELECT count(*) FROM billing.ledger_transaction").fetchone() == (1,)
    assert_ledger_balanced(acme)


def test_late_usage_posts_one_adjustment_of_the_difference(acme):
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, _ = month("2025-03")
    run_app(acme, "a", 2, start, start + timedelta(hours=10))
    derive_price_post(acme, "2025-03")
    # usage that happened in March but was landed after the month was posted
    run_app(acme, "late", 1, start + timedelta(days=3), start + timedelta(days=3, hours=5))
    adjusted = derive_price_post(acme, "2025-03")
    again = derive_price_post(acme, "2025-03")
    assert [(p.transaction_type, p.idempotency_key, p.amount_microcredits)
            for p in adjusted.posted] == [("adjustment", "adjustment:acme:2025-03:1", 5_000_000)]
    assert again.posted == []
    assert balances(acme)["credits_used"] == 25_000_000
    assert_ledger_balanced(acme)


def test_lower_charges_post_a_reversing_adjustment_never_an_edit(acme):
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC), None)
    _, start, _ = month("2025-03")
    run_app(acme, "a", 2, start, start + timedelta(hours=10))
    derive_price_post(acme, "2025-03")
    # the billing team corrects the price of March downwards (a new catalog)
    acme.execute("DELETE FROM billing.price")
    add_price(acme, 500_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    adjusted = derive_price_post(acme, "2025-03")
    assert [p.amount_microcredits for p in adjusted.posted] == [-10_000_000]
    assert balances(acme)["credits_used"] == 10_000_000
    directions = acme.execute(
        "SELECT a.account_type, e.direction FROM billing.ledger_entry e "
        "JOIN billing.account a ON a.id = e.account_id JOIN billing.ledger_transaction t "
        "ON t.id = e.transaction_id WHERE t.transaction_type = 'adjustment' ORDER BY 1").fetchall()
    # acme has no agreement: its usage was overage, and the reduction gives overage back
    assert directions == [("credits_used", 1), ("overage", -1)]
    assert_ledger_balanced(acme)


def test_held_usage_is_kept_and_charged_once_when_the_price_arrives(acme):
    _, start, _ = month("2025-03")
    run_app(acme, "a", 4, start, start + timedelta(hours=2))
    run_app(acme, "orphan", 1, start, start + timedelta(hours=2), space="space-2")
    nothing = derive_price_post(acme, "2025-03")
    held = acme.execute("SELECT price_id IS NULL, customer_id, sum(quantity) "
                        "FROM billing.hourly_posting GROUP BY 1, 2 ORDER BY 2").fetchall()
    assert nothing.posted == []
    assert held == [(True, "acme", 4 * 7200), (True, None, 7200)]
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    charged = derive_price_post(acme, "2025-03")
    assert [(p.transaction_type, p.amount_microcredits) for p in charged.posted] == [
        ("usage_post", 8_000_000)]
    assert derive_price_post(acme, "2025-03").posted == []
    # the orphan org's usage is still held, not dropped
    still_held = acme.execute("SELECT sum(quantity) FROM billing.hourly_posting "
                              "WHERE customer_id IS NULL").fetchone()
    assert still_held == (7200,)
    assert_ledger_balanced(acme)


def test_agreements_load_credits_and_expire_what_is_left(acme):
    acme.execute("INSERT INTO billing.iaa (id, customer_id, credits_microcredits, "
                 "period_of_performance) VALUES ('IAA-1', 'acme', 100000000, "
                 "daterange('2025-03-01', '2025-04-01'))")
    acme.commit()
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, _ = month("2025-03")
    run_app(acme, "a", 3, start, start + timedelta(hours=10))
    posted = derive_price_post(acme, "2025-03")
    assert [(p.transaction_type, p.amount_microcredits) for p in posted.posted] == [
        ("iaa_pop_start", 100_000_000), ("usage_post", 30_000_000), ("iaa_pop_end", 70_000_000)]
    assert balances(acme) == {"credit_pool": 0, "credits_used": 30_000_000,
                              "credits_expired": 70_000_000, "receivable": 100_000_000,
                              "overage": 0}
    assert derive_price_post(acme, "2025-03").posted == []
    assert_ledger_balanced(acme)


def test_statements_break_the_month_down_without_floats(acme):
    add_price(acme, 1_000_000, MONTH_HOUR_SECONDS, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, end = month("2025-03")
    run_app(acme, "a", 1, start, start + timedelta(hours=365))
    run_app(acme, "b", 1, start, start + timedelta(hours=365), space="space-1")
    derive_price_post(acme, "2025-03")
    (statement,) = build_statements(acme, date(2025, 3, 1), start, end)
    assert statement.posted_microcredits == 1_000_000
    assert statement.exact_microcredits == 1_000_000
    assert bool(statement.rows["microcredits"].map(type).eq(Decimal).all())
    assert list(statement.rows[["org", "space", "kind"]].itertuples(index=False, name=None)) == [
        ("acme-org", "prod", "App memory")]


def add_agreement(conn, iaa: str, credits: int, first_day: str, day_after_last: str) -> None:
    conn.execute("INSERT INTO billing.iaa (id, customer_id, credits_microcredits, "
                 "period_of_performance) VALUES (%s, 'acme', %s, daterange(%s, %s))",
                 (iaa, credits * 1_000_000, first_day, day_after_last))
    conn.commit()


def lots(conn) -> dict[str, int]:
    """What is left in each of acme's agreements, in credits."""
    return {iaa: balance // 1_000_000 for iaa, balance in conn.execute(
        "SELECT iaa_id, balance_microcredits FROM billing.account_balance "
        "WHERE customer_id = 'acme' AND iaa_id IS NOT NULL").fetchall()}


def in_credits(conn) -> dict[str, int]:
    return {k: v // 1_000_000 for k, v in balances(conn).items()}


def test_overlapping_agreements_draw_the_one_ending_first_and_expire_only_its_rest(acme):
    # The case: A 1,000 credits for January-June, B 1,000 from March for a year, 100
    # credits used each month. A single pool expired 1,400 at the end of June.
    add_agreement(acme, "A", 1000, "2025-01-01", "2025-07-01")
    add_agreement(acme, "B", 1000, "2025-03-01", "2026-03-01")
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))  # 1 credit a MiB-hour
    for m in range(1, 9):
        key = f"2025-{m:02d}"
        _, start, _ = month(key)
        run_app(acme, f"app-{m}", 1, start + timedelta(days=1),
                start + timedelta(days=1, hours=100))
        derive_price_post(acme, key)
        if m == 6:
            assert lots(acme) == {"A": 0, "B": 1000}
    assert lots(acme) == {"A": 0, "B": 800}
    assert in_credits(acme) == {"credit_pool": 800, "credits_used": 800,
                                "credits_expired": 400, "receivable": 2000, "overage": 0}
    assert_ledger_balanced(acme)


def test_usage_after_an_agreement_ends_mid_month_is_overage(acme):
    # A covers March 1-15 (359 hours: clocks spring forward on the 9th) of March's 743
    add_agreement(acme, "A", 1000, "2025-03-01", "2025-03-16")
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, end = month("2025-03")
    run_app(acme, "a", 1, start, end)
    derive_price_post(acme, "2025-03")
    assert in_credits(acme) == {"credit_pool": 0, "credits_used": 743, "credits_expired": 641,
                                "receivable": 1000, "overage": 384}
    drawn = acme.execute("SELECT coalesce(iaa_id, 'overage'), sum(amount_microcredits) "
                         "/ 1000000 FROM billing.ledger_draw GROUP BY 1 ORDER BY 1").fetchall()
    assert drawn == [("A", 359), ("overage", 384)]
    assert_ledger_balanced(acme)


def test_late_usage_for_a_month_whose_agreement_has_ended_is_overage(acme):
    add_agreement(acme, "A", 1000, "2025-01-01", "2025-03-01")
    add_agreement(acme, "B", 1000, "2025-03-01", "2026-03-01")
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, january, _ = month("2025-01")
    run_app(acme, "a", 1, january, january + timedelta(hours=10))
    for key in ("2025-01", "2025-02", "2025-03"):
        derive_price_post(acme, key)
    assert lots(acme) == {"A": 0, "B": 1000} and in_credits(acme)["credits_expired"] == 990
    run_app(acme, "late", 1, january + timedelta(days=3), january + timedelta(days=3, hours=5))
    late = derive_price_post(acme, "2025-01")
    assert [(p.transaction_type, p.amount_microcredits) for p in late.posted] == [
        ("adjustment", 5_000_000)]
    assert lots(acme) == {"A": 0, "B": 1000}  # never a later agreement
    assert in_credits(acme)["overage"] == 5
    assert derive_price_post(acme, "2025-01").posted == []
    assert_ledger_balanced(acme)


def test_a_modification_adding_credits_mid_period_is_drawn_from_its_day(acme):
    # A: 100 credits for March-December 2025; modification M1 adds 500 from March 16. A 1 MiB
    # app runs all of March (743 hours) at 1 credit a MiB-hour. March 1-15 is 359 hours (the
    # clocks spring forward on the 9th): they can draw only A's first 100 credits, the other
    # 259 are overage; the 384 hours from March 16 draw 384 of the 500 added, leaving 116.
    add_agreement(acme, "A", 100, "2025-03-01", "2026-01-01")
    acme.execute("INSERT INTO billing.iaa_modification (iaa_id, id, effective, "
                 "credits_microcredits) VALUES ('A', 'M1', '2025-03-16', 500000000)")
    acme.commit()
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, end = month("2025-03")
    run_app(acme, "a", 1, start, end)
    posted = derive_price_post(acme, "2025-03")
    assert [(p.transaction_type, p.idempotency_key, p.amount_microcredits // 1_000_000)
            for p in posted.posted] == [
        ("iaa_pop_start", "iaa_pop_start:A", 100),
        ("iaa_modification", "iaa_modification:A:M1", 500),
        ("usage_post", "usage_post:acme:2025-03", 743)]
    effective = acme.execute("SELECT effective_at FROM billing.ledger_transaction "
                             "WHERE idempotency_key = 'iaa_modification:A:M1'").fetchone()
    assert effective == (datetime(2025, 3, 16, 4, tzinfo=UTC),)  # midnight in New York (EDT)
    drawn = acme.execute("SELECT coalesce(iaa_id, 'overage'), hour_start < %s, "
                         "sum(amount_microcredits) / 1000000 FROM billing.ledger_draw "
                         "GROUP BY 1, 2 ORDER BY 1, 2 DESC",
                         (datetime(2025, 3, 16, 4, tzinfo=UTC),)).fetchall()
    assert drawn == [("A", True, 100), ("A", False, 384), ("overage", True, 259)]
    assert in_credits(acme) == {"credit_pool": 116, "credits_used": 743, "credits_expired": 0,
                                "receivable": 600, "overage": 259}
    assert derive_price_post(acme, "2025-03").posted == []  # posted once
    assert_ledger_balanced(acme)


def add_beta(conn) -> None:
    """A second customer, Beta, with an agreement of 1,000 credits for 2025."""
    conn.execute("INSERT INTO billing.customer (id, name) VALUES ('beta', 'Beta')")
    conn.execute("INSERT INTO billing.iaa (id, customer_id, credits_microcredits, "
                 "period_of_performance) VALUES ('BETA', 'beta', 1000000000, "
                 "daterange('2025-01-01', '2026-01-01'))")
    conn.commit()


def set_owners(conn, *periods: tuple[str, datetime | None, datetime | None]) -> None:
    """org-1's owners, as a catalog load writes them (all of them replaced)."""
    conn.execute("DELETE FROM billing.org_ownership")
    for customer_id, start, end in periods:
        conn.execute("INSERT INTO billing.org_ownership (org_guid, customer_id, valid_during) "
                     "VALUES ('org-1', %s, tstzrange(%s, %s))", (customer_id, start, end))
    conn.commit()


def charged(conn, key: str) -> dict[str, int]:
    """Posted credits per customer for a month, usage posts and adjustments together."""
    return {c: amount // 1_000_000 for c, amount in conn.execute(
        "SELECT t.customer_id, sum(l.amount_microcredits)::bigint FROM billing.posting_line l "
        "JOIN billing.ledger_transaction t ON t.id = l.transaction_id "
        "WHERE t.business_month = %s GROUP BY 1", (date.fromisoformat(f"{key}-01"),))}


@pytest.fixture
def march_of_org_1(acme: psycopg.Connection) -> psycopg.Connection:
    """A 1 MiB app in org-1 runs all of March 2025 (743 hours) at a credit a MiB-hour; Acme has
    agreement A (1,000 credits for 2025) and Beta agreement BETA (the same)."""
    add_beta(acme)
    add_agreement(acme, "A", 1000, "2025-01-01", "2026-01-01")
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, end = month("2025-03")
    run_app(acme, "a", 1, start, end)
    return acme


def test_an_org_moved_mid_month_charges_each_hour_to_its_owner_at_that_hour(march_of_org_1):
    # org-1 passes from Acme to Beta on March 10 (midnight New York, 04:00 UTC: EDT since the
    # 9th). March 1 00:00 EST to March 10 00:00 EDT is 9 days less the hour skipped: 215 hours;
    # the other 743 - 215 = 528 are Beta's.
    acme = march_of_org_1
    moved = datetime(2025, 3, 10, 4, tzinfo=UTC)
    set_owners(acme, ("acme", None, moved), ("beta", moved, None))
    derive_price_post(acme, "2025-03")
    assert charged(acme, "2025-03") == {"acme": 215, "beta": 528}
    assert lots(acme) == {"A": 785}
    assert_ledger_balanced(acme)


def test_a_move_found_after_posting_reprices_only_its_hours_and_adjusts(march_of_org_1):
    # March was posted with Acme owning org-1 all month; then the catalog says Beta has owned it
    # since March 10 (04:00 UTC). Re-pricing touches the 528 hours from then on; the posted
    # month changes only by adjustments: Acme gives back 528, Beta is charged 528.
    acme = march_of_org_1
    _, _, end = month("2025-03")
    set_owners(acme, ("acme", None, None))
    derive_price_post(acme, "2025-03")
    assert charged(acme, "2025-03") == {"acme": 743}

    moved = datetime(2025, 3, 10, 4, tzinfo=UTC)
    set_owners(acme, ("acme", None, moved), ("beta", moved, None))
    load = acme.execute(
        "INSERT INTO billing.catalog_load (source, checksum, summary, changed_prices, "
        "changed_orgs) VALUES ('test', 'x', '{}', '{}', '{org-1}') RETURNING id").fetchone()
    acme.execute("INSERT INTO billing.ownership_change VALUES (%s, 'org-1', "
                 "tstzmultirange(tstzrange(%s, NULL)))", (load[0], moved))
    acme.commit()
    hours = [h for (h,) in acme.execute(query("hours_to_reprice"),
                                        {"after_id": load[0] - 1, "up_to_id": load[0]})]
    assert len(hours) == 528 and hours[0] == moved and hours[-1] == end - timedelta(hours=1)
    price_window(acme, hours[0], hours[-1] + timedelta(hours=1))
    business_month, start, end = month("2025-03")
    again = post_month(acme, business_month, start, end)
    assert sorted((p.customer_id, p.transaction_type, p.amount_microcredits // 1_000_000)
                  for p in again.posted) == [("acme", "adjustment", -528),
                                             ("beta", "usage_post", 528)]
    assert charged(acme, "2025-03") == {"acme": 215, "beta": 528}
    assert lots(acme) == {"A": 785}
    assert post_month(acme, business_month, start, end).posted == []
    assert_ledger_balanced(acme)


def test_an_org_renamed_in_cf_keeps_its_owner_and_its_usage(acme):
    # Ownership is by guid: org-1 renamed from acme-org to acme-platform halfway through
    # March 3 still charges all 24 hours to Acme.
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, _ = month("2025-03")
    day = start + timedelta(days=2)
    run_app(acme, "a", 1, day, day + timedelta(hours=12))
    renamed = Inventory(orgs=[("org-1", "acme-platform")], spaces=INVENTORY.spaces[:1])
    land_snapshot(acme, Snapshot(day + timedelta(hours=12), renamed, [MeterSnapshot(
        "cfapps", [ObservedResource("b", "b", "space-1", "app-memory", 1)], [],
        complete=False)]))
    land_snapshot(acme, Snapshot(day + timedelta(hours=24), renamed, [MeterSnapshot(
        "cfapps", [ObservedResource("b", "b", "space-1", "app-memory", 0)], [],
        complete=False)]))
    derive_price_post(acme, "2025-03")
    assert acme.execute("SELECT name FROM billing.cf_org WHERE guid = 'org-1'").fetchone() == (
        "acme-platform",)
    assert charged(acme, "2025-03") == {"acme": 24}
    held = acme.execute("SELECT count(*) FROM billing.hourly_posting WHERE customer_id IS NULL"
                        ).fetchone()
    assert held == (0,)


def test_a_renewal_starting_the_day_after_the_old_agreement_ends_takes_over_that_hour(acme):
    # A: 500 credits for March 1-15; its renewal B: 1,000 from March 16. A 1 MiB app runs all
    # of March at a credit a MiB-hour: A's 359 hours (the clocks spring forward on the 9th)
    # draw 359 from A, which expires its other 141; the 384 hours from March 16 00:00 New York
    # draw B, which keeps 616. Nothing is overage.
    add_agreement(acme, "A", 500, "2025-03-01", "2025-03-16")
    add_agreement(acme, "B", 1000, "2025-03-16", "2026-03-16")
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    _, start, end = month("2025-03")
    run_app(acme, "a", 1, start, end)
    derive_price_post(acme, "2025-03")
    renewal = datetime(2025, 3, 16, 4, tzinfo=UTC)
    drawn = acme.execute("SELECT iaa_id, min(hour_start), max(hour_start), "
                         "sum(amount_microcredits) / 1000000 FROM billing.ledger_draw "
                         "GROUP BY 1 ORDER BY 1").fetchall()
    assert drawn == [("A", start, renewal - timedelta(hours=1), 359),
                     ("B", renewal, end - timedelta(hours=1), 384)]
    assert lots(acme) == {"A": 0, "B": 616}
    assert in_credits(acme) == {"credit_pool": 616, "credits_used": 743,
                                "credits_expired": 141, "receivable": 1500, "overage": 0}
    assert_ledger_balanced(acme)
