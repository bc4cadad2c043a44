"""Monthly statements on real Postgres: the tier of each month, the usage, and each agreement's
credits over the month (opening, added, drawn, expired, closing), overage and credits used,
hand-computed, and the CSV files' contents.

Prices here are 1 credit (1,000,000 microcredits) per MiB-hour and every app has 1 MiB, so an
app running N hours costs exactly N credits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest

from billing_dagster.ledger.assets import monthly_statements
from billing_dagster.ledger.month_to_date import month_to_date
from billing_dagster.ledger.statements import (
    AgreementMonth,
    Statement,
    _agreement,
    build_statements,
)
from billing_dagster.pricing.postings import price_window
from billing_dagster.resources import BillingDatabase, Clock
from billing_dagster.usage.measurements import derive_window
from billing_dagster.web.statements import statements_app
from tests import test_ledger
from tests.support import free_port, served
from tests.test_ledger import add_price, derive_price_post, month, run_app

acme = test_ledger.acme  # the fixture: customer acme (tier micro) owning org-1

CREDIT = 1_000_000  # microcredits
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def priced(acme: psycopg.Connection) -> psycopg.Connection:
    add_price(acme, 1_000_000, 3600, datetime(2025, 1, 1, tzinfo=UTC))
    return acme


def add_agreement(conn, iaa: str, credits: int, first_day: str, day_after_last: str) -> None:
    conn.execute("INSERT INTO billing.iaa (id, customer_id, credits_microcredits, "
                 "period_of_performance) VALUES (%s, 'acme', %s, daterange(%s, %s))",
                 (iaa, credits * CREDIT, first_day, day_after_last))
    conn.commit()


def add_modification(conn, iaa: str, mod: str, effective: str, credits: int) -> None:
    conn.execute("INSERT INTO billing.iaa_modification (iaa_id, id, effective, "
                 "credits_microcredits) VALUES (%s, %s, %s, %s)",
                 (iaa, mod, effective, credits * CREDIT))
    conn.commit()


def run_hours(conn, guid: str, key: str, day: int, hours: int, space: str = "space-1") -> None:
    """A 1 MiB app running `hours` hours from `day - 1` days after the start of month `key`
    (midnight in New York of that day, unless the clocks changed in between)."""
    _, start, _ = month(key)
    first = start + (day - 1) * DAY
    run_app(conn, guid, 1, first, first + hours * HOUR, space=space)


def statements(conn, key: str) -> dict[str, Statement]:
    return {s.customer_id: s for s in build_statements(conn, *month(key))}


def figures(statement: Statement) -> list[tuple[str, int, int, int, int, int]]:
    """Each agreement's (id, opening, added, drawn, expired, closing), in whole credits."""
    def whole(microcredits: int) -> int:
        assert microcredits % CREDIT == 0, microcredits
        return microcredits // CREDIT

    return [(a.iaa_id, whole(a.opening), whole(a.added), whole(a.drawn), whole(a.expired),
             whole(a.closing)) for a in statement.agreements]


def test_overlapping_agreements_each_show_their_own_credits_month_by_month(priced):
    # A: 1,000 credits for January-June. B: 500 credits from June 16 (mid-year) for a year.
    add_agreement(priced, "A", 1000, "2025-01-01", "2025-07-01")
    add_agreement(priced, "B", 500, "2025-06-16", "2026-06-16")
    # B is modified on July 15: 100 credits removed
    add_modification(priced, "B", "M1", "2025-07-15", -100)
    run_hours(priced, "mar", "2025-03", day=2, hours=100)     # only A is active
    run_hours(priced, "jun-a", "2025-06", day=5, hours=30)    # only A (B starts on the 16th)
    run_hours(priced, "jun-b", "2025-06", day=20, hours=50)   # both: A ends first, A pays
    run_hours(priced, "jul", "2025-07", day=2, hours=40)      # only B
    for key in ("2025-03", "2025-06", "2025-07"):
        derive_price_post(priced, key)

    by_month = {key: statements(priced, key)["acme"]
                for key in [f"2025-{m:02d}" for m in range(1, 9)]}
    # January: A's credits arrive (iaa_pop_start effective Jan 1); B has not begun, no row
    assert figures(by_month["2025-01"]) == [("A", 0, 1000, 0, 0, 1000)]
    # March: 1000 - 100 drawn = 900
    assert figures(by_month["2025-03"]) == [("A", 1000, 0, 100, 0, 900)]
    # June: A 900 - (30 + 50) = 820 left when its period ends on June 30, all of it expired
    # (the expiry is effective July 1 00:00 New York, the instant after its last day, and
    # belongs to June, whose posting posts it); B opens with its 500 (June 16), draws nothing
    assert figures(by_month["2025-06"]) == [("A", 900, 0, 80, 820, 0),
                                            ("B", 0, 500, 0, 0, 500)]
    # July: A neither active nor moved: no row. B: 500 - 100 removed (a negative "added")
    # - 40 drawn = 360
    assert figures(by_month["2025-07"]) == [("B", 500, -100, 40, 0, 360)]
    # August: A neither active nor moved: no row; B unchanged
    assert figures(by_month["2025-08"]) == [("B", 360, 0, 0, 0, 360)]
    # every lot's closing is the next month's opening
    for before, after in zip(list(by_month.values()), list(by_month.values())[1:], strict=False):
        closing = {a.iaa_id: a.closing for a in before.agreements}
        opening = {a.iaa_id: a.opening for a in after.agreements}
        assert all(closing.get(iaa, 0) == amount for iaa, amount in opening.items())
    # credits used (the ledger's credits_used in the month) = posted for the month, no overage
    used = {key: (s.used_microcredits // CREDIT, s.posted_microcredits // CREDIT,
                  s.overage_microcredits) for key, s in by_month.items()}
    assert used == {"2025-01": (0, 0, 0), "2025-02": (0, 0, 0), "2025-03": (100, 100, 0),
                    "2025-04": (0, 0, 0), "2025-05": (0, 0, 0), "2025-06": (80, 80, 0),
                    "2025-07": (40, 40, 0), "2025-08": (0, 0, 0)}
    assert [a.last_day.isoformat() for a in by_month["2025-06"].agreements] == [
        "2025-06-30", "2026-06-15"]


def test_a_modified_lot_drawn_then_expired_mid_month_with_overage_after_it(priced, tmp_path):
    # D: 200 credits, March 1 - April 20; modification M1 adds 50 credits on April 10
    add_agreement(priced, "D", 200, "2025-03-01", "2025-04-21")
    add_modification(priced, "D", "M1", "2025-04-10", 50)
    run_hours(priced, "mar", "2025-03", day=2, hours=120)  # March 2-6: 120 credits from D
    # April 18 00:00 to April 23 00:00 (New York, EDT throughout): 120 hours, of which April
    # 18, 19 and 20 (72 hours) fall in D's period and April 21-22 (48 hours) after it
    run_hours(priced, "apr", "2025-04", day=18, hours=120)
    derive_price_post(priced, "2025-03")
    derive_price_post(priced, "2025-04")

    march = statements(priced, "2025-03")["acme"]
    # 0 + 200 (its start) - 120 drawn = 80 left
    assert figures(march) == [("D", 0, 200, 120, 0, 80)]
    assert (march.overage_microcredits, march.used_microcredits) == (0, 120 * CREDIT)

    april = statements(priced, "2025-04")["acme"]
    # opens with 80, M1 adds 50 (130), 72 hours draw 72 (58 left), which expire at the end of
    # April 20: 80 + 50 - 72 - 58 = 0. The 48 hours after it are overage; 72 + 48 = 120 used.
    assert figures(april) == [("D", 80, 50, 72, 58, 0)]
    assert april.overage_microcredits == 48 * CREDIT
    assert april.used_microcredits == april.posted_microcredits == 120 * CREDIT
    assert april.exact_microcredits == 120 * CREDIT
    assert [(a.first_day.isoformat(), a.last_day.isoformat()) for a in april.agreements] == [
        ("2025-03-01", "2025-04-20")]

    usage, agreements = april.write_csv(tmp_path)
    assert (usage, agreements) == (tmp_path / "2025-04" / "acme.csv",
                                   tmp_path / "2025-04" / "acme-agreements.csv")
    # 120 hours x 3,600 s x 1 MiB = 432,000 MiB-seconds; x 1,000,000 / 3,600 = 120,000,000
    assert usage.read_text().splitlines() == [
        "customer_id,month,org,space,meter,kind,unit_seconds,microcredits,credits",
        "acme,2025-04,acme-org,prod,cfapps,App memory,432000,120000000.000000,120.000000000000"]
    assert agreements.read_text().splitlines() == [
        "customer_id,month,line,agreement,first_day,last_day,"
        "opening_microcredits,opening_credits,added_microcredits,added_credits,"
        "drawn_microcredits,drawn_credits,expired_microcredits,expired_credits,"
        "closing_microcredits,closing_credits",
        "acme,2025-04,agreement,D,2025-03-01,2025-04-20,80000000,80.000000,50000000,50.000000,"
        "72000000,72.000000,58000000,58.000000,0,0.000000",
        "acme,2025-04,overage,,,,,,,,48000000,48.000000,,,,",
        "acme,2025-04,total,,,,,,,,120000000,120.000000,,,,"]

    markdown = april.to_markdown()
    assert "### Acme (acme), 2025-04" in markdown
    assert "| acme | Acme | 2025-04 | none | none | 120.000000 | 120,000,000 |" in markdown
    assert "| D | 2025-03-01 to 2025-04-20 | 80.000000 | 50.000000 | 72.000000 | 58.000000 " \
           "| 0.000000 |" in markdown
    assert "Overage (usage no agreement covered): 48.000000 credits" in markdown
    assert "Credits used: 120.000000" in markdown


def test_a_late_adjustment_counts_in_the_month_it_corrects(priced):
    # E: 100 credits, March 1 - December 31
    add_agreement(priced, "E", 100, "2025-03-01", "2026-01-01")
    run_hours(priced, "mar", "2025-03", day=2, hours=10)
    run_hours(priced, "apr", "2025-04", day=2, hours=5)
    derive_price_post(priced, "2025-03")
    derive_price_post(priced, "2025-04")
    assert figures(statements(priced, "2025-04")["acme"]) == [("E", 90, 0, 5, 0, 85)]
    # 3 more March hours land after April was posted: an adjustment of March, effective at
    # March's start, drawn from E (active then, with credits)
    run_hours(priced, "late", "2025-03", day=10, hours=3)
    derive_price_post(priced, "2025-03")
    march, april = (statements(priced, key)["acme"] for key in ("2025-03", "2025-04"))
    assert figures(march) == [("E", 0, 100, 13, 0, 87)]  # 10 + 3 drawn
    assert figures(april) == [("E", 87, 0, 5, 0, 82)]    # opens with what March left
    assert (march.used_microcredits, march.posted_microcredits) == (13 * CREDIT, 13 * CREDIT)


def test_each_month_shows_the_tier_in_effect_on_its_first_day(priced, tmp_path: Path):
    priced.execute("INSERT INTO billing.tier (name, credits_per_month) VALUES ('small', 1000)")
    # acme: no tier in January, micro (250) in February and March, small (1000) from April
    priced.execute("INSERT INTO billing.customer_tier (customer_id, tier, valid_during) VALUES "
                   "('acme', 'micro', '[2025-02-01,2025-04-01)'), "
                   "('acme', 'small', '[2025-04-01,)')")
    # beta owns the other org, small tier throughout
    priced.execute("INSERT INTO billing.customer (id, name, tier) VALUES ('beta', 'Beta', "
                   "'small')")
    priced.execute("INSERT INTO billing.customer_tier (customer_id, tier, valid_during) VALUES "
                   "('beta', 'small', '(,)')")
    priced.execute("INSERT INTO billing.org_ownership (org_guid, customer_id, valid_during) "
                   "VALUES ('org-2', 'beta', '(,)')")
    priced.commit()
    run_hours(priced, "jan", "2025-01", day=2, hours=5)
    run_hours(priced, "mar", "2025-03", day=2, hours=10)
    run_hours(priced, "beta-mar", "2025-03", day=3, hours=7, space="space-2")
    run_hours(priced, "apr", "2025-04", day=2, hours=12)
    for key in ("2025-01", "2025-03", "2025-04"):
        derive_price_post(priced, key)

    headers = {key: [(s.customer_id, s.customer_name, s.tier, s.tier_credits_per_month,
                      s.posted_microcredits // CREDIT) for s in statements(priced, key).values()]
               for key in ("2025-01", "2025-02", "2025-03", "2025-04")}
    assert headers == {
        "2025-01": [("acme", "Acme", None, None, 5)],
        "2025-02": [],  # nothing used, posted or active: no statement
        "2025-03": [("acme", "Acme", "micro", 250, 10), ("beta", "Beta", "small", 1000, 7)],
        "2025-04": [("acme", "Acme", "small", 1000, 12)]}

    january = statements(priced, "2025-01")["acme"]
    assert "| acme | Acme | 2025-01 | none | none | 5.000000 | 5,000,000 |" in \
        january.to_markdown()
    assert "No agreement this month." in january.to_markdown()
    march = statements(priced, "2025-03")
    assert "| acme | Acme | 2025-03 | micro | 250 | 10.000000 | 10,000,000 |" in \
        march["acme"].to_markdown()
    assert "| acme | Acme | 2025-04 | small | 1,000 | 12.000000 | 12,000,000 |" in \
        statements(priced, "2025-04")["acme"].to_markdown()
    # no agreement: all of it is overage
    assert (march["beta"].overage_microcredits, march["beta"].used_microcredits) == (
        7 * CREDIT, 7 * CREDIT)
    # each customer's rows are its own, and say whose they are
    assert [list(s.rows[["customer_id", "org", "space", "unit_seconds"]].itertuples(
        index=False, name=None)) for s in march.values()] == [
        [("acme", "acme-org", "prod", 10 * 3600)], [("beta", "orphan-org", "dev", 7 * 3600)]]
    usage, agreements = march["beta"].write_csv(tmp_path)
    # 7 hours x 3,600 s = 25,200 MiB-seconds, 7,000,000 microcredits
    assert usage.read_text().splitlines()[1:] == [
        "beta,2025-03,orphan-org,dev,cfapps,App memory,25200,7000000.000000,7.000000000000"]
    assert agreements.read_text().splitlines()[1:] == [
        "beta,2025-03,overage,,,,,,,,7000000,7.000000,,,,",
        "beta,2025-03,total,,,,,,,,7000000,7.000000,,,,"]


def march_statements(priced, db_url: str, tmp_path: Path) -> dg.ExecuteInProcessResult:
    """F: 10 credits for March; 15 hours used in March: 10 from F, 5 overage; posted, and the
    month's statements written under ``tmp_path``."""
    add_agreement(priced, "F", 10, "2025-03-01", "2025-04-01")
    run_hours(priced, "a", "2025-03", day=2, hours=15)
    derive_price_post(priced, "2025-03")
    return dg.materialize(
        [monthly_statements], partition_key="2025-03",
        resources={"db": BillingDatabase(url=db_url)},
        run_config={"ops": {"monthly_statements": {"config": {"output_dir": str(tmp_path)}}}})


def test_the_asset_writes_both_files_and_shows_the_statement(priced, db_url, tmp_path: Path):
    result = march_statements(priced, db_url, tmp_path)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("monthly_statements")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["customers"] == 1
    assert metadata["files"] == [str(tmp_path / "2025-03" / "acme.csv"),
                                 str(tmp_path / "2025-03" / "acme-agreements.csv")]
    assert metadata["customers_with_overage"] == ["acme"]
    assert (metadata["used_microcredits"], metadata["overage_microcredits"]) == (
        15 * CREDIT, 5 * CREDIT)
    # F is all drawn by the end of its period (March 31): nothing is left to expire
    assert "| F | 2025-03-01 to 2025-03-31 | 0.000000 | 10.000000 | 10.000000 | 0.000000 " \
           "| 0.000000 |" in str(metadata["statements"])
    assert (tmp_path / "2025-03" / "acme-agreements.csv").read_text().splitlines()[1:] == [
        "acme,2025-03,agreement,F,2025-03-01,2025-03-31,0,0.000000,10000000,10.000000,"
        "10000000,10.000000,0,0.000000,0,0.000000",
        "acme,2025-03,overage,,,,,,,,5000000,5.000000,,,,",
        "acme,2025-03,total,,,,,,,,15000000,15.000000,,,,"]


def test_amounts_are_exact_decimals_in_fixed_point(acme, tmp_path: Path):
    # 1 credit per 730 MiB-hours: 1 hour is 1,000,000 / 730 = 1369.863013698630... microcredits
    add_price(acme, 1_000_000, 730 * 3600, datetime(2025, 1, 1, tzinfo=UTC))
    run_hours(acme, "a", "2025-03", day=2, hours=1)
    derive_price_post(acme, "2025-03")
    statement = statements(acme, "2025-03")["acme"]
    assert statement.rows["microcredits"].tolist() == [Decimal("1369.863014")]
    assert statement.rows["credits"].tolist() == [Decimal("0.001369863014")]
    assert statement.posted_microcredits == 1370  # rounded once, half-even
    assert bool(statement.rows["microcredits"].map(type).eq(Decimal).all())
    usage, _ = statement.write_csv(tmp_path)
    assert usage.read_text().splitlines()[1].endswith(",3600,1369.863014,0.001369863014")


def test_a_lot_moved_by_an_unknown_transaction_type_is_refused():
    row = {"customer_id": "acme", "iaa_id": "A", "first_day": date(2025, 1, 1),
           "last_day": date(2025, 12, 31),
           "opening_microcredits": 10, "added_microcredits": 5, "drawn_microcredits": 3,
           "expired_microcredits": 0, "balance_at_end_microcredits": 11}
    with pytest.raises(ValueError, match="opening 10 \\+ added 5 - drawn 3 - expired 0 = 12"):
        _agreement(row, "2025-03")
    assert _agreement({**row, "balance_at_end_microcredits": 12}, "2025-03") == AgreementMonth(
        "A", date(2025, 1, 1), date(2025, 12, 31), 10, 5, 3, 0)


def test_each_customers_statement_downloads_from_the_ui_as_the_asset_wrote_it(
        priced, db_url, tmp_path: Path):
    result = march_statements(priced, db_url, tmp_path)
    (materialization,) = result.asset_materializations_for_node("monthly_statements")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    links = ["/statements/2025-03/acme.csv", "/statements/2025-03/acme-agreements.csv"]
    assert all(f"]({link})" in str(metadata["downloads"]) for link in links)
    assert str(metadata["statement/acme"]).count("](/statements/2025-03/acme") == 2
    assert "### Acme (acme), 2025-03" in str(metadata["statement/acme"])
    with served(statements_app(BillingDatabase(url=db_url)), free_port()) as base, \
            httpx.Client(base_url=base) as client:
        for link, written in zip(links, ("acme.csv", "acme-agreements.csv"), strict=True):
            reply = client.get(link)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(
                "text/csv")
            assert reply.headers["content-disposition"] == \
                f'attachment; filename="2025-03-{written}"'
            assert reply.text == (tmp_path / "2025-03" / written).read_text()
            assert all(line.startswith("acme,2025-03,") for line in reply.text.splitlines()[1:])
        missing = client.get("/statements/2025-03/nobody.csv")
        assert missing.status_code == 404 and "'nobody' has no statement for 2025-03" in \
            missing.text
        wrong = client.get("/statements/March/acme.csv")
        assert wrong.status_code == 404 and "<YYYY-MM>/<customer>.csv" in wrong.text


def test_month_to_date_shows_the_charge_so_far_and_how_much_of_the_month_is_measured(
        priced, db_url, simulator):
    # 2025-03-03 12:30 UTC: 55 hours of March (New York) have ended; acme ran 15 of them
    # (day 2), and the first 40 hours were measured and priced, every one of them carried
    _, start, _ = month("2025-03")
    run_hours(priced, "a", "2025-03", day=2, hours=15)
    derive_window(priced, start, start + 40 * HOUR)
    price_window(priced, start, start + 40 * HOUR)
    simulator.advance_to(datetime(2025, 3, 3, 12, 30, tzinfo=UTC))
    result = dg.materialize([month_to_date], resources={
        "db": BillingDatabase(url=db_url), "clock": Clock(simulator_url=simulator.url)})
    (materialization,) = result.asset_materializations_for_node("month_to_date")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert (metadata["business_month"], metadata["as_of_utc"]) == (
        "2025-03", "2025-03-03T12:00:00+00:00")
    assert (metadata["hours_elapsed"], metadata["hours_measured"], metadata["hours_complete"],
            metadata["measured_share"], metadata["complete_share"]) == (55, 40, 0, "72.7%",
                                                                        "0.0%")
    assert Decimal(str(metadata["charge_so_far_microcredits_exact"])) == 15 * CREDIT
    assert "| acme | Acme | 15.000000 | 15,000,000.000000 | 2025-03-02 19:00 " \
           "| [2025-03-acme.csv](/statements/2025-03/acme.csv) |" in str(metadata["by_customer"])
