"""Burn rate and runway on real Postgres: every figure computed by hand (in the comments), the
usage not posted yet drawn as the posting will draw it, and the alerts raised once each (to a
real webhook on loopback), through the sensor and the asset as Dagster runs them.

The price makes one GiB-hour of app memory cost exactly one credit (1,000,000 microcredits per
1024 MiB x 3600 s). Times are New York wall clock (``ny``); June 2025 has no DST change.
"""

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from billing_dagster.database import connect
from billing_dagster.ledger.agreements import Lot
from billing_dagster.ledger.posting import post_month
from billing_dagster.ledger.runway import (
    AgreementRunway,
    CustomerRunway,
    RunwayAlert,
    customer_runway,
    daily_burn,
    project_run_out,
    prorated,
    record_alerts,
    runway_alerts,
    runway_alerts_sensor,
    runway_report,
    runway_text,
    sparkline,
)
from billing_dagster.pricing.postings import price_window
from billing_dagster.resources import BillingDatabase
from billing_dagster.usage.measurements import derive_window
from tests.test_ledger import add_agreement, add_price, derive_price_post, month, run_app

CREDIT = 1_000_000  # microcredits
GIB = 1024  # MiB
NEW_YORK = ZoneInfo("America/New_York")


def ny(*parts: int) -> datetime:
    """A New York wall-clock instant, in UTC (June: UTC-4)."""
    return datetime(*parts, tzinfo=NEW_YORK).astimezone(UTC)


AS_OF = ny(2025, 6, 6)  # the end of the newest priced hour in every scenario: 04:00 UTC


@pytest.fixture
def acme(conn: psycopg.Connection) -> psycopg.Connection:
    """Acme owns org-1, one GiB-hour costs one credit, and app "a" (1 GiB) has run for 10
    days, May 27 00:00 to June 6 00:00 New York: 240 hours, 240 credits, 120 in May (posted)
    and 120 in June (not posted yet)."""
    conn.execute("INSERT INTO billing.tier (name, credits_per_month) VALUES ('micro', 250)")
    conn.execute("INSERT INTO billing.customer (id, name, tier) VALUES ('acme', 'Acme', 'micro')")
    conn.execute("INSERT INTO billing.org_ownership (org_guid, customer_id, valid_during) "
                 "VALUES ('org-1', 'acme', '(,)')")
    conn.commit()
    add_price(conn, CREDIT, GIB * 3600, datetime(2025, 1, 1, tzinfo=UTC))
    run_app(conn, "a", GIB, ny(2025, 5, 27), AS_OF)
    return conn


def post_may_and_meter_june(conn: psycopg.Connection) -> None:
    """May posted; June metered (measured and priced) up to as_of, not posted."""
    derive_price_post(conn, "2025-05")
    derive_window(conn, ny(2025, 6, 1), AS_OF)
    price_window(conn, ny(2025, 6, 1), AS_OF)


def alerts_in(conn: psycopg.Connection) -> list[tuple[str | None, str]]:
    return conn.execute("SELECT iaa_id, alert FROM billing.runway_alert "
                        "ORDER BY iaa_id NULLS LAST, alert").fetchall()


@pytest.fixture
def two_agreements(acme: psycopg.Connection) -> psycopg.Connection:
    """A: 300 credits, May 1 - June 7 (ends June 8 00:00). B: 100 credits, June 1 - December
    31, plus a modification (not posted yet) adding 50 credits from June 10. Acme is on the
    micro tier (250 credits a month) from June."""
    acme.execute("INSERT INTO billing.customer_tier (customer_id, tier, valid_during) "
                 "VALUES ('acme', 'micro', '[2025-06-01,)')")
    add_agreement(acme, "A", 300, "2025-05-01", "2025-06-08")
    add_agreement(acme, "B", 100, "2025-06-01", "2026-01-01")
    acme.execute("INSERT INTO billing.iaa_modification (iaa_id, id, effective, "
                 "credits_microcredits) VALUES ('B', 'mod-1', '2025-06-10', 50000000)")
    acme.commit()
    post_may_and_meter_june(acme)
    return acme


def test_the_report_draws_unposted_usage_and_projects_the_run_out(two_agreements):
    (acme,) = runway_report(two_agreements)
    assert acme == CustomerRunway(
        customer_id="acme", name="Acme",
        as_of=AS_OF,  # the newest priced hour is June 5 23:00 New York
        business_month=date(2025, 6, 1),
        # June 1 00:00 - June 6 00:00: 120 hours at 1 credit
        used_this_month_microcredits=120 * CREDIT,
        # 7-day burn 24 credits/day over the 600 hours left in June's 720: 120 + 24 x 600 / 24
        projected_month_microcredits=720 * CREDIT,
        # the last 168 hours all ran: 168 credits / 7 days
        daily_burn_7d_microcredits=24 * CREDIT,
        # the last 720 hours hold the 240 hours that ran: 240 credits / 30 days
        daily_burn_30d_microcredits=8 * CREDIT,
        # 30 days of 24 hours, oldest first: May 7 - May 26 nothing, May 27 - June 5 24 each
        daily_usage_microcredits=(0,) * 20 + (24 * CREDIT,) * 10,
        # May posted 120 from A (B had not begun); June's 120 unposted hours draw A too (it
        # ends first): A 60 left, B 100 (+50 on June 10). At 1 credit an hour: A covers June
        # 6 00:00 - June 8 00:00 (48 hours) and expires its last 12; B covers 100 hours to June
        # 10 00:00 (48 hours, 52 left), gets 50 (102 left), covers 102 more: the first hour no
        # agreement covers is 48 + 150 = 198 hours after as_of, June 14 06:00
        runs_out_at=ny(2025, 6, 14, 6),
        last_agreement_ends_at=ny(2026, 1, 1),
        agreements=(
            # A: 300 credited; 120 posted + 120 estimated drawn = 240 (80%); 60 left
            AgreementRunway("A", ny(2025, 5, 1), ny(2025, 6, 8), 300 * CREDIT, 240 * CREDIT,
                            60 * CREDIT, runs_short=False),
            # B: 100 + 50 still to be credited (its start and the modification post later)
            AgreementRunway("B", ny(2025, 6, 1), ny(2026, 1, 1), 150 * CREDIT, 0,
                            150 * CREDIT, runs_short=True),
        ),
        overage_by_month=(),
        tier="micro", allotment_microcredits=250 * CREDIT,  # June's tier
    )
    assert acme.runway_days == 8  # 198 hours
    assert [a.percent_used for a in acme.agreements] == [Decimal("80.0"), Decimal("0.0")]
    # 80% of A raises its 75% alert; B is active when the credits run out, before it ends
    assert [(a.iaa_id, a.alert) for a in runway_alerts([acme])] == [("A", "75%"), ("B", "runway")]


def test_the_plain_text_report_is_in_credits_and_new_york_time(two_agreements):
    text = runway_text(runway_report(two_agreements))
    lines = text.splitlines()
    assert lines[0] == ("Runway as of 2025-06-06 00:00 New York (business month 2025-06), "
                        "in credits:")
    assert lines[2].split() == ["acme", "micro", "(250/month)", "120.000000", "720.000000",
                                "24.000000", "8.000000", "2025-06-14", "06:00", "8", "days"]
    assert lines[5].split() == ["acme", "A", "2025-05-01", "..", "2025-06-07", "300.000000",
                                "240.000000", "60.000000", "80.0%"]
    assert lines[6].split() == ["acme", "B", "2025-06-01", "..", "2025-12-31", "150.000000",
                                "0.000000", "150.000000", "0.0%"]
    assert runway_text([]) == "Runway: no priced usage yet"


def markdown(value: object) -> str:
    assert isinstance(value, dg.MarkdownMetadataValue) and value.md_str is not None
    return value.md_str


def test_the_asset_shows_tables_a_burn_plot_and_numbers_to_chart(two_agreements, db_url):
    result = dg.materialize([customer_runway], resources={"db": BillingDatabase(url=db_url)})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("customer_runway")
    metadata = materialization.metadata
    assert metadata["as_of"] == dg.TextMetadataValue("2025-06-06T04:00:00+00:00")
    assert metadata["daily_burn_7d_microcredits/acme"] == dg.IntMetadataValue(24 * CREDIT)
    assert metadata["daily_burn_30d_microcredits/acme"] == dg.IntMetadataValue(8 * CREDIT)
    assert metadata["projected_month_microcredits/acme"] == dg.IntMetadataValue(720 * CREDIT)
    assert metadata["runway_days/acme"] == dg.IntMetadataValue(8)
    agreements, plot, runway = (markdown(metadata[key]) for key in (
        "agreements", "daily_burn_last_30_days", "runway"))
    assert ("| acme | A | 2025-05-01 .. 2025-06-07 | 300.000000 | 240.000000 | 60.000000 "
            "| 80.0% |  |") in agreements
    assert ("| acme | B | 2025-06-01 .. 2025-12-31 | 150.000000 | 0.000000 | 150.000000 "
            "| 0.0% | yes |") in agreements
    # 20 days without usage, then 10 days at the maximum
    assert f"| acme | `{'▁' * 20}{'█' * 10}` | 0.000000 | 24.000000 |" in plot
    assert ("| acme | micro (250/month) | 120.000000 | 720.000000 | 24.000000 | 8.000000 "
            "| 2025-06-14 06:00 "
            "| 8 |") in runway


def tick(db_url: str) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(resources={"db": BillingDatabase(url=db_url)})
    result = runway_alerts_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def raised(result: dg.SensorResult | dg.SkipReason) -> list[tuple[str | None, str]]:
    """The alerts a tick raised, from the observation it reports on customer_runway."""
    if isinstance(result, dg.SkipReason):
        return []
    (observation,) = result.asset_events
    assert isinstance(observation, dg.AssetObservation)
    assert observation.asset_key == dg.AssetKey("customer_runway")
    listed = observation.metadata["new_runway_alerts"]
    assert isinstance(listed, dg.JsonMetadataValue) and isinstance(listed.data, list)
    return [(a["iaa_id"], a["alert"]) for a in listed.data]


def meter_june(conn: psycopg.Connection) -> None:
    derive_window(conn, ny(2025, 6, 1), AS_OF)
    price_window(conn, ny(2025, 6, 1), AS_OF)


def test_alerts_are_raised_once_each_as_thresholds_are_crossed(acme, db_url, webhook):
    # A: 300 credits, May 1 - June 30; May posted (120 drawn), June's 120 not posted yet
    add_agreement(acme, "A", 300, "2025-05-01", "2025-07-01")
    post_may_and_meter_june(acme)

    # 240 of 300 drawn (80%): 75%. At 24 credits a day the 60 left last 60 hours, to June 8
    # 12:00, before A ends: runway.
    first = tick(db_url)
    assert raised(first) == [("A", "75%"), ("A", "runway")]
    assert isinstance(first, dg.SensorResult) and first.skip_reason is not None
    assert "acme A: credits projected to run out 2025-06-08 12:00 New York (2 days)" in (
        first.skip_reason.skip_message or "")
    assert isinstance(tick(db_url), dg.SkipReason)  # nothing new: nothing raised again
    (report,) = runway_report(acme)
    assert report.runs_out_at == ny(2025, 6, 8, 12)

    # app "b", 1 GiB, June 4 18:00 - June 6 00:00: 30 credits more, 270 of 300 (exactly 90%)
    run_app(acme, "b", GIB, ny(2025, 6, 4, 18), AS_OF)
    meter_june(acme)
    (report,) = runway_report(acme)
    # burn: (168 + 30) / 7 = 28.285714285... credits: 28,285,714 microcredits a day. The 30
    # credits left cover 25 hours (cumulative round(28,285,714 x 25 / 24) = 29,464,285), not
    # 26 (30,642,857): the 26th hour after as_of (June 7 01:00) is short
    assert report.daily_burn_7d_microcredits == 28_285_714
    assert report.runs_out_at == ny(2025, 6, 7, 1) and report.runway_days == 1
    assert raised(tick(db_url)) == [("A", "90%")]

    # app "c", 1 GiB, June 4 08:00 - June 6 00:00: 40 credits more. June's hours: 80 at 1
    # credit (to June 4 08:00), 10 at 2, 30 at 3 = 190; A has 180 after May, so 10 credits of
    # June are overage
    run_app(acme, "c", GIB, ny(2025, 6, 4, 8), AS_OF)
    meter_june(acme)
    assert raised(tick(db_url)) == [("A", "100%"), (None, "overage:2025-06")]
    assert isinstance(tick(db_url), dg.SkipReason)
    assert alerts_in(acme) == [("A", "100%"), ("A", "75%"), ("A", "90%"), ("A", "runway"),
                               (None, "overage:2025-06")]

    (report,) = runway_report(acme)
    # burn: (168 + 30 + 40) / 7 = 34 credits a day; 30 days: 310 / 30 = 10.333... credits
    assert (report.daily_burn_7d_microcredits, report.daily_burn_30d_microcredits) == (
        34 * CREDIT, 10_333_333)
    # 190 used in June + 34 x 600 / 24 = 850 for the hours left
    assert report.used_this_month_microcredits == 190 * CREDIT
    assert report.projected_month_microcredits == 1040 * CREDIT
    assert (report.runs_out_at, report.runway_days) == (AS_OF, 0)  # nothing left: now
    assert report.overage_by_month == ((date(2025, 6, 1), 10 * CREDIT),)
    assert [(a.drawn_microcredits, a.remaining_microcredits, a.percent_used)
            for a in report.agreements] == [(300 * CREDIT, 0, Decimal("100.0"))]

    # the estimate is what the posting draws: post June now, the report stays the same
    post_month(acme, *month("2025-06"))
    assert runway_report(acme) == [report]
    assert acme.execute("SELECT coalesce(iaa_id, 'overage'), sum(amount_microcredits) "
                        "FROM billing.ledger_draw GROUP BY 1 ORDER BY 1").fetchall() == [
        ("A", 300 * CREDIT), ("overage", 10 * CREDIT)]
    assert isinstance(tick(db_url), dg.SkipReason)

    # each tick that raised something posted it once to the webhook
    assert [[(a["iaa_id"], a["alert"]) for a in p["alerts"]] for p in webhook] == [
        [("A", "75%"), ("A", "runway")], [("A", "90%")],
        [("A", "100%"), (None, "overage:2025-06")]]
    overage = webhook[2]["alerts"][1]
    assert overage["details"] == {"business_month": "2025-06",
                                  "overage_microcredits": 10 * CREDIT,
                                  "as_of": "2025-06-06T04:00:00+00:00"}
    assert webhook[0]["text"] == "billing-dagster: runway alerts"


def test_concurrent_ticks_raise_each_alert_once(conn, db_url):
    conn.execute("INSERT INTO billing.customer (id, name) VALUES ('acme', 'Acme')")
    alerts = [RunwayAlert("acme", None, f"overage:2025-{m:02d}", f"month {m}") for m in
              range(1, 13)]
    results: list[list[RunwayAlert]] = []
    barrier = threading.Barrier(4)

    def record() -> None:
        with connect(db_url) as own:
            barrier.wait()
            results.append(record_alerts(own, alerts))

    threads = [threading.Thread(target=record) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(a.alert for r in results for a in r) == sorted(a.alert for a in alerts)
    assert record_alerts(conn, alerts) == []


def test_no_priced_usage_no_report(conn, db_url):
    assert runway_report(conn) == []
    assert isinstance(tick(db_url), dg.SkipReason)


@pytest.mark.parametrize(("total", "days", "burn"), [
    (Decimal(168), 7, 24),
    (Decimal("17.5"), 7, 2),  # 2.5 -> 2 (half to even)
    (Decimal("24.5"), 7, 4),  # 3.5 -> 4
    (Decimal("0.000001"), 30, 0),
    (Decimal(310_000_000), 30, 10_333_333),
])
def test_daily_burn_rounds_half_even_once(total, days, burn):
    assert daily_burn(total, days) == burn


def test_a_day_prorated_over_hours_adds_up():
    assert prorated(24 * CREDIT, 600) == 600 * CREDIT
    assert prorated(7, 12) == 4  # 3.5 -> 4
    assert prorated(5, 12) == 2  # 2.5 -> 2
    assert prorated(28_285_714, 26) == round(Fraction(28_285_714 * 26, 24))


def test_sparkline_scales_integers_from_zero_to_the_largest():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([5, 10]) == "▄█"  # 5 x 7 // 10 = 3


def test_credits_that_outlast_the_agreements_never_run_out():
    start = datetime(2025, 6, 6, 4, tzinfo=UTC)
    lot = Lot("A", start - timedelta(days=30), start + timedelta(days=10), 1000 * CREDIT)
    # 24 credits a day for 10 days is 240 of 1000: covered to the end
    assert project_run_out([lot], start, 24 * CREDIT, lot.ends_at) is None
    # 1 credit an hour, 100 hours: the 101st hour (index 100) is the first short one
    small = Lot("A", lot.starts_at, lot.ends_at, 100 * CREDIT)
    assert project_run_out([small], start, 24 * CREDIT, lot.ends_at) == start + timedelta(
        hours=100)
    assert project_run_out([small], start, 0, lot.ends_at) is None  # nothing burns
    report = CustomerRunway("acme", "Acme", start, date(2025, 6, 1), 0, 0, 0, 0, (0,) * 30,
                            runs_out_at=None, last_agreement_ends_at=lot.ends_at)
    assert report.runway_days == 10  # the credits last as long as the agreement
    far = CustomerRunway("acme", "Acme", start, date(2025, 6, 1), 0, 0, 0, 0, (0,) * 30,
                         runs_out_at=None, last_agreement_ends_at=start + timedelta(days=5000))
    assert far.runway_days == 3 * 365  # at most the three years looked ahead
    none = CustomerRunway("acme", "Acme", start, date(2025, 6, 1), 0, 0, 0, 0, (0,) * 30,
                          runs_out_at=None, last_agreement_ends_at=None)
    assert none.runway_days == 0
