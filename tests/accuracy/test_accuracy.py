"""The week-long accuracy suite (``make test``): a week of production against the oracle.

The month-long one is ``make accuracy``; both are the same scenario (tests/accuracy/harness.py),
this one compressed into the first 168 hours of the month on a smaller foundation.
"""

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
    assert report.flagged, table
    for hour in report.flagged:
        assert hour["status"] in ("carried", "uncertain"), table
        assert hour["uncovered_seconds"] > 0 or hour["status"] == "uncertain", table
    assert {h["status"] for h in report.flagged} == {"carried", "uncertain"}, table
    assert len([h for h in report.flagged if h["status"] == "carried"]) <= 2, table
    assert report.churn["hours as Dagster runs"] >= 6, table
