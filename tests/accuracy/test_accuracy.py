"""The week-long accuracy suite (``make test``): a week of production against the oracle.

The month-long one is ``make accuracy``; both are the same scenario (tests/accuracy/harness.py),
this one compressed into the first 168 hours of the month on a smaller foundation.
"""

from datetime import timedelta

import pytest

from tests.accuracy.harness import Scenario, run

WEEK = Scenario(apps=200, service_instances=80).scaled(168)


@pytest.mark.accuracy
def test_a_week_of_production_bills_exactly_what_ran(db_url: str) -> None:
    report = run(db_url, WEEK)
    table = report.table()
    statuses = {r.status for r in report.by_status}
    assert "complete" in statuses, table
    # every hour the project calls complete equals the oracle, resource by resource
    assert report.complete_differing == 0, table
    assert all(r.differing == 0 and r.missing == 0 and r.extra == 0
               for r in report.by_status if r.status == "complete"), table
    # every posted line is within one microcredit of the oracle priced and rounded once,
    # apart from what the flagged hours (listed, never called complete) explain
    assert report.lines and not report.lines_off_by_more_than_one, table
    assert sum(line.posted for line in report.lines) > 0, table
    # the month's draws keep the agreement rules, checked hour by hour against the catalog
    assert report.draws > 0 and report.ledger == [], table
    # the flagged hours are the scenario's faults, each with its seconds and its reason: the
    # purge (carried, uncovered seconds) and the skewed clocks (uncertain resources)
    cf = [h for h in report.flagged if h["meter"] in ("cfapps", "cfservices")]
    assert cf, table
    for hour in cf:
        assert hour["status"] in ("carried", "uncertain"), table
        assert hour["uncovered_seconds"] > 0 or hour["status"] == "uncertain", table
    assert {h["status"] for h in cf} == {"carried", "uncertain"}, table
    assert len([h for h in cf if h["status"] == "carried"]) <= 2, table
    # AWS hours are flagged only where nothing was read: before the first landing (a gap),
    # around the outage (held from the last reading, or S3's day not re-read), and S3's last
    # hours, whose day's sample is published only after the week ends
    first_landing = WEEK.hour(WEEK.install_at)
    outage = (WEEK.hour(WEEK.outage[0] - 1), WEEK.hour(WEEK.outage[1]) + timedelta(days=1))
    unexplained = [(h["hour_start"], h["meter"], h["status"], h["reason"])
                   for h in report.flagged if h not in cf and not (
                       h["reason"] and (h["hour_start"] <= first_landing
                                        or outage[0] <= h["hour_start"] < outage[1]
                                        # the last day's S3 sample is published after the week
                                        or h["hour_start"] >= WEEK.end - timedelta(hours=7)))]
    assert unexplained == [], table
    assert report.churn["hours as Dagster runs"] >= 6, table
