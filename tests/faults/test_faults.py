"""The short fault campaign of `make test`: one scenario of each kind of fault, one seed.

`make faults` runs every scenario with three seeds (see campaign.py); BILLING_FAULTS=all runs
every scenario here, with one.
"""

import os
from collections.abc import Iterator

import pytest

from billing_dagster.meters import AWS_METERS, METERS
from tests.faults.campaign import Baseline, Lab, Scenario, Timeline, fault_free, run_scenario
from tests.faults.scenarios import SCENARIOS, killed_in

pytestmark = pytest.mark.faults
ALL_METERS = (*METERS, *AWS_METERS)

# a process killed in a write (landing, derivation, posting), the database gone under a run,
# two runs racing, CF and AWS failing past their retries, a landed row deleted, bad input
SHORT = [
    "SIGKILL inside a page's COPY",
    "SIGKILL mid-derivation",
    "SIGKILL mid-posting",
    "Postgres restart mid-pricing",
    "two postings of a month at once",
    "CF 429 with Retry-After",
    "AWS 503s beyond the retries",
    "DELETE of a landed usage event",
    "catalog: duplicate ids",
]
CHOSEN = [s.name for s in SCENARIOS] if os.environ.get("BILLING_FAULTS") == "all" else SHORT


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab() as started:
        yield started


@pytest.fixture(scope="module")
def baseline(lab: Lab) -> Baseline:
    return fault_free(lab, Timeline(seed=7))


def test_the_fault_free_run_bills_exactly_what_ran(baseline: Baseline) -> None:
    truth = baseline.truth
    assert (truth.missing, truth.extra, truth.flagged_hours, truth.microcredits_off) == \
        (0, 0, 0, 0)
    assert baseline.state.measurements and baseline.state.postings and baseline.state.events
    # every meter, CF's and AWS's, is in the timeline the faults are checked against
    assert {row[1] for row in baseline.state.measurements} == {m.name for m in ALL_METERS}
    assert baseline.state.transactions > 0 and baseline.state.unbalanced_transactions == 0


@pytest.mark.parametrize("name", CHOSEN)
def test_after_the_fault_and_its_recovery_usage_and_money_are_the_fault_free_ones(
        lab: Lab, baseline: Baseline, name: str) -> None:
    (scenario,) = [s for s in SCENARIOS if s.name == name]
    outcome = run_scenario(lab, scenario, baseline)
    assert outcome.faults >= 1, outcome.detail
    assert outcome.passed, (outcome.detail, outcome.truth, outcome.same_as_fault_free)


def test_the_campaign_sees_the_usage_a_fault_loses_when_nobody_recovers(
        lab: Lab, baseline: Baseline) -> None:
    scenario = Scenario("SIGKILL before a derivation commits, never re-run", "process",
                        killed_in("derive", "kill", recovery="none", where="commit"))
    outcome = run_scenario(lab, scenario, baseline)
    assert not outcome.passed
    assert outcome.truth.missing > 0 and outcome.truth.microcredits_off > 0
    assert any(d.startswith("measurements:") for d in outcome.same_as_fault_free)
