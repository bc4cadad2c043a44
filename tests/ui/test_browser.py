"""The real Dagster UI, driven in headless chromium, on a deployment run as `make dev` runs it
(deployment.py): an operator logs in through UAA's form, reads the lineage and the missing hours
of hourly_measurements, backfills 24 of them from the UI (one run, run by the daemon), and reads
an asset check, the ledger's metadata and a statement; a reader, in a browser of their own, is
shown Materialize greyed out (Dagster's read-only view), a launch sent anyway with their session
is refused, and no run is created. Then the hours as the database has them: hour_complete's
partitions (the history's AWS outage fails some), each hour's own metadata, held_usage,
month_to_date, and hours measured before their events landed measured again by
remeasure_sensor.

Each step saves screenshots (PNG) into BILLING_UI_SCREENSHOTS (default .artifacts/ui), named by
step number. The tests run in order but each can run alone (a browser not logged in yet logs
in). What they look for in Dagster's pages (texts such as "Missing (N)", "Launch backfill",
"Materialize", a few CSS-module class prefixes) is Dagster 1.13's UI: an upgrade that
changes them fails here, with a screenshot of the page (failed-<test>-<n>.png).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from billing_dagster.jobs import REMEASURED
from billing_dagster.partitions import RANGE_END, RANGE_START, hourly_keys_between
from tests.ui.conftest import Browsers
from tests.ui.deployment import AWS_OUTAGE, BACKFILL_HOURS, Deployment

pytestmark = pytest.mark.browser
T = TypeVar("T")
HOUR = timedelta(hours=1)
PAGE_SECONDS = 90  # a page of the UI on a busy two-core machine
BACKFILL_SECONDS = 300  # the daemon picks the backfill up, launches its run, the run ends
ASSETS = ("billing_catalog", "foundation_snapshot", "usage_events", "aws_readings",
          "hourly_measurements", "priced_postings", "ledger_entries", "monthly_statements",
          "customer_balances", "customer_runway", "held_usage", "month_to_date")
NUX = "Join the Dagster community"
LAUNCH = ('mutation LaunchIt { launchPipelineExecution(executionParams: '
          '{selector: {jobName: "metering_job"}}) { __typename } }')
# tags of the runs nobody launched by hand (the daemon's schedules, sensors and backfills)
AUTOMATIC_TAGS = ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill",
                  "dagster/from_automation_condition", "dagster/auto_materialize")
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status numPartitions
      runs(limit: 100) { runId status tags { key value } }
    }
  }
}"""
RUNS_SINCE = """
query RunsSince($after: Float!) {
  runsOrError(filter: {createdAfter: $after}) {
    ... on Runs { results { runId jobName assetSelection { path } tags { key value } } }
  }
}"""


@pytest.fixture(scope="module")
def operator(browsers: Browsers) -> WebDriver:
    """The operator's browser, for the whole module (steps 1 to 5)."""
    return browsers.new()


# -- helpers ----------------------------------------------------------------------------------


def wait(driver: WebDriver, seconds: float = PAGE_SECONDS) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.25, ignored_exceptions=(
        StaleElementReferenceException, ElementClickInterceptedException))


def until(driver: WebDriver, condition: Callable[[WebDriver], T | None], what: str,
          seconds: float = PAGE_SECONDS) -> T:
    """What ``condition`` returns once it is true; fails after ``seconds`` saying what was
    awaited and on which page."""
    try:
        value = wait(driver, seconds).until(condition)
    except TimeoutException as exc:
        raise AssertionError(f"waited {seconds:.0f} s for {what}; at {driver.current_url}:\n"
                             f"{page_text(driver)[-2000:]}") from exc
    assert value is not None  # until() returns only a true value
    return value


def page_text(driver: WebDriver) -> str:
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except Exception:  # no page yet
        return ""


def click(driver: WebDriver, xpath: str, what: str, seconds: float = PAGE_SECONDS,
          within: WebElement | None = None) -> None:
    """Click the first displayed, enabled element at ``xpath`` (retried while the page
    re-renders it or something still covers it)."""
    def clicked(d: WebDriver) -> bool:
        for element in (within or d).find_elements(By.XPATH, xpath):
            if element.is_displayed() and element.is_enabled():
                element.click()
                return True
        return False

    until(driver, clicked, f"{what} to be clickable", seconds)


def text_has(*needles: str) -> Callable[[WebDriver], bool]:
    return lambda d: all(needle in page_text(d) for needle in needles)


def shoot(driver: WebDriver, screenshots: Path, name: str) -> None:
    path = screenshots / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"could not save {path}"


def on_ui(deployment: Deployment) -> Callable[[WebDriver], bool]:
    """On a page of the UI (not UAA's, not the login's), with Dagster's navigation drawn."""
    def ready(d: WebDriver) -> bool:
        at = d.current_url
        return at.startswith(deployment.url) and "/auth/" not in at and \
            all(item in page_text(d) for item in ("Overview", "Runs", "Catalog", "Lineage"))
    return ready


def sign_in(driver: WebDriver, user: str) -> None:
    """Fill UAA's form (the browser is on it) and submit it."""
    until(driver, lambda d: d.find_elements(By.ID, "sign-in"), "UAA's sign-in form")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(f"{user}-password")
    driver.find_element(By.ID, "sign-in").click()


def nux_seen(deployment: Deployment) -> bool:
    """Dagster keeps "the community pop-up was dismissed" in DAGSTER_HOME/.nux/nux.yaml."""
    return (deployment.home / ".nux" / "nux.yaml").exists()


def dismiss_nux(driver: WebDriver) -> None:
    until(driver, text_has(NUX), "Dagster's community pop-up")
    click(driver, "//div[@role='dialog']//button[normalize-space()='Skip']", "its Skip button")
    until(driver, lambda d: NUX not in page_text(d), "the community pop-up to close")


def open_page(driver: WebDriver, deployment: Deployment, path: str,
              user: str = "operator") -> None:
    """``path`` of the UI; a browser without a session logs in on the way, and whoever meets
    the community pop-up first dismisses it."""
    driver.get(deployment.url + path)
    until(driver, lambda d: d.find_elements(By.ID, "sign-in") or on_ui(deployment)(d),
          f"{path} or UAA's form")
    if driver.find_elements(By.ID, "sign-in"):
        sign_in(driver, user)
        until(driver, on_ui(deployment), f"the UI after {user}'s login")
    if not nux_seen(deployment):
        dismiss_nux(driver)


def open_tab(driver: WebDriver, title: str) -> None:
    click(driver, f"//*[self::a or self::button][@role='tab' or contains(@class, 'Tabs_tab')]"
                  f"[normalize-space()='{title}']", f"the {title} tab")


def post_graphql(driver: WebDriver, deployment: Deployment, query: str,
                 variables: dict[str, Any] | None = None) -> httpx.Response:
    """A GraphQL request with the browser's session (its HttpOnly cookie), as sent."""
    cookie = driver.get_cookie("billing_session")
    assert cookie is not None, "the browser holds no session cookie"
    return httpx.post(deployment.url + "/graphql", timeout=60,
                      json={"query": query, "variables": variables or {}},
                      cookies={"billing_session": cookie["value"]})


def fetch(driver: WebDriver, url: str) -> httpx.Response:
    """GET ``url`` with the browser's session, as a click on a link in the UI would."""
    cookie = driver.get_cookie("billing_session")
    assert cookie is not None, "the browser holds no session cookie"
    return httpx.get(url, timeout=60, cookies={"billing_session": cookie["value"]})


def graphql(driver: WebDriver, deployment: Deployment, query: str,
            variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """A GraphQL query with the browser's session that must succeed: its data."""
    answer = post_graphql(driver, deployment, query, variables)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert not body.get("errors"), body
    return body["data"]


def partition_counts(driver: WebDriver) -> dict[str, int]:
    """The partitions view's counts: selected (all), Materialized, Materializing, Missing,
    Failed."""
    def counts(d: WebDriver) -> dict[str, int] | None:
        text = page_text(d)
        found = {name: re.search(pattern, text) for name, pattern in (
            ("all", r"(\d+) Partitions Selected"), ("materialized", r"Materialized \((\d+)\)"),
            ("missing", r"Missing \((\d+)\)"), ("failed", r"Failed \((\d+)\)"),
            ("materializing", r"Materializing \((\d+)\)"))}
        if not all(found.values()):
            return None
        return {name: int(m[1]) for name, m in found.items() if m}

    return until(driver, counts, "the partition counts (Materialized (N), Missing (N))")


def partition_total(deployment: Deployment) -> int:
    """How many hourly partitions the UI has now: every complete hour since the start."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return len(hourly_keys_between(deployment.start, now))


def shown_as(label: str, name: str) -> bool:
    """Whether a graph node's label is ``name``: the graph shortens long names in the middle
    (``hour…_measurements``)."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name)


# -- the steps --------------------------------------------------------------------------------


def test_01_operator_logs_in_through_uaa_and_dismisses_the_pop_up(operator, deployment,
                                                                    screenshots):
    operator.get(deployment.url + "/")
    until(operator, lambda d: d.find_elements(By.ID, "sign-in"), "UAA's sign-in form")
    at = urlsplit(operator.current_url)
    assert at.path == "/uaa/oauth/authorize" and not operator.current_url.startswith(
        deployment.url), operator.current_url
    assert "sign in" in operator.title
    operator.find_element(By.ID, "username").send_keys("operator")
    operator.find_element(By.ID, "password").send_keys("operator-password")
    shoot(operator, screenshots, "01-uaa-login-form")
    operator.find_element(By.ID, "sign-in").click()

    until(operator, on_ui(deployment), "the Dagster UI after the login")
    until(operator, text_has(NUX), "Dagster's community pop-up on the first visit")
    shoot(operator, screenshots, "01b-community-pop-up")
    click(operator, "//div[@role='dialog']//button[normalize-space()='Skip']", "Skip")
    until(operator, lambda d: NUX not in page_text(d), "the community pop-up to close")
    # the pop-up closes at once; its setNuxSeen mutation reaches Dagster a moment later
    until(operator, lambda d: nux_seen(deployment),
          "the operator's Skip to reach Dagster (setNuxSeen)")
    session = operator.get_cookie("billing_session")
    assert session is not None and session.get("httpOnly"), session
    shoot(operator, screenshots, "01c-dagster-ui")


def test_02_the_lineage_shows_every_asset(operator, deployment, screenshots):
    open_page(operator, deployment, "/")
    click(operator, "//a[.//*[normalize-space()='Lineage']]", "Lineage in the navigation")
    until(operator, text_has("Global asset lineage"), "the global asset lineage")
    # the groups start collapsed: the graph's settings menu expands them all
    click(operator, "//button[not(normalize-space())][.//*[@aria-label='settings']]",
          "the graph's settings button")
    click(operator, "//button[@role='menuitem'][contains(., 'Expand all groups')]",
          "Expand all groups")
    operator.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)

    def labels(d: WebDriver) -> list[str] | None:
        shown = [e.text for e in d.find_elements(By.CSS_SELECTOR, "[class*='AssetNode_assetName']")]
        return shown if all(any(shown_as(s, a) for s in shown) for a in ASSETS) else None

    shown = until(operator, labels, f"a node for each of {', '.join(ASSETS)} in the graph")
    until(operator, lambda d: not d.find_elements(By.XPATH, "//*[@role='menu']"),
          "the settings menu to close")
    assert len(shown) == len(ASSETS), shown

    def statuses_drawn(d: WebDriver) -> bool:  # the nodes turn green once their status loads
        boxes = d.find_elements(By.CSS_SELECTOR, "[class*='AssetNode_minimalAssetNodeBox']")
        return any("green" in (box.get_attribute("style") or "") for box in boxes) or \
            "Materialized" in page_text(d)

    until(operator, statuses_drawn, "the graph to show the assets' materialized status")
    shoot(operator, screenshots, "02-asset-lineage")


def test_03_the_partitions_view_shows_the_missing_hours(operator, deployment, screenshots):
    open_page(operator, deployment, "/assets/hourly_measurements")
    open_tab(operator, "Partitions")
    first_key = deployment.partitions[0]
    until(operator, text_has(first_key), f"the partition bar, from {first_key}")
    before = partition_total(deployment)
    counts = partition_counts(operator)
    assert counts["all"] in {before, partition_total(deployment)}, counts  # an hour may end
    assert sum(counts[status] for status in (
        "materialized", "materializing", "missing", "failed")) == counts["all"], counts
    assert counts["failed"] == 0, counts
    # the hours measured outside Dagster show as materialized (or materializing: the three
    # measured before their events may be being measured again); the newest 30 (and the gap
    # between the two measured windows, if any) as missing
    assert counts["materialized"] + counts["materializing"] >= len(deployment.measured), counts
    assert counts["missing"] >= len(deployment.to_backfill), counts
    shoot(operator, screenshots, "03-partitions-missing")


def test_04_a_backfill_of_24_hours_launched_from_the_ui_runs_as_one_run(operator, deployment,
                                                                       screenshots):
    first, last = deployment.to_backfill[0], deployment.to_backfill[-1]
    open_page(operator, deployment, "/assets/hourly_measurements?view=partitions")
    before = partition_counts(operator)
    click(operator, "//button[contains(., 'Materialize')]", "Materialize…")
    dialog = until(operator, lambda d: next(
        (e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]") if e.is_displayed()
         and "Launch runs to materialize hourly_measurements" in e.text), None),
        "the launch dialog of hourly_measurements")
    selection = dialog.find_element(By.CSS_SELECTOR, "input[type=text]")
    selection.send_keys(f"[{first}...{last}]", Keys.ENTER)
    until(operator, lambda d: f"{BACKFILL_HOURS} partitions" in dialog.text,
          f"the dialog to count {BACKFILL_HOURS} partitions selected")
    # BackfillPolicy.single_run(), as the dialog says it
    assert "Backfills all partitions in a single run." in dialog.text, dialog.text
    shoot(operator, screenshots, "04-backfill-dialog")
    click(operator, ".//button[normalize-space()='Launch backfill']", "Launch backfill",
          within=dialog)

    def created(d: WebDriver) -> str | None:
        links = [a.get_attribute("href") or "" for a in d.find_elements(By.TAG_NAME, "a")]
        return next((href for href in links if "/runs/b/" in href), None)

    backfill_url = until(operator, created, "the 'Created backfill' notice and its link")
    backfill_id = backfill_url.rstrip("/").rsplit("/", 1)[1]
    assert f"Created backfill {backfill_id}" in page_text(operator)
    shoot(operator, screenshots, "04b-backfill-launched")

    operator.get(backfill_url)
    until(operator, text_has(f"{first}...{last}"), "the backfill's page")

    def settled(d: WebDriver) -> str | None:
        status = re.search(r"\nStatus\n([^\n]+)\n", page_text(d))
        return status[1] if status and status[1] not in ("In progress", "Requested") else None

    status = until(operator, settled, f"backfill {backfill_id} to finish (the daemon runs it)",
                   BACKFILL_SECONDS)
    assert status == "Succeeded", f"backfill {backfill_id}: {status}\n{deployment.log_tails()}"
    # hourly_measurements: 24 targeted, 0 in progress, 24 succeeded, 0 failed
    assert re.search(rf"hourly_measurements\n100% completed\n{BACKFILL_HOURS}\n0\n"
                     rf"{BACKFILL_HOURS}\n0", page_text(operator)), page_text(operator)
    shoot(operator, screenshots, "04c-backfill-succeeded")

    open_tab(operator, "Runs")

    def run_ids(d: WebDriver) -> set[str] | None:
        hrefs = [a.get_attribute("href") or "" for a in d.find_elements(By.TAG_NAME, "a")]
        found = {m[1] for h in hrefs if (m := re.search(r"/runs/([0-9a-f-]{36})$", h))}
        return found if found and "Success" in page_text(d) else None

    shown = until(operator, run_ids, "the backfill's runs, succeeded")
    assert len(shown) == 1, f"the backfill ran as {len(shown)} runs: {shown}"
    shoot(operator, screenshots, "04d-backfill-one-run")

    # the same, as Dagster's storage has it
    backfill = graphql(operator, deployment, BACKFILL, {"id": backfill_id})
    backfill = backfill["partitionBackfillOrError"]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert backfill["numPartitions"] == BACKFILL_HOURS
    (run,) = backfill["runs"]
    assert {run["runId"]} == shown and run["status"] == "SUCCESS", run
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert (tags[RANGE_START], tags[RANGE_END]) == (first, last), tags

    open_page(operator, deployment, "/assets/hourly_measurements?view=partitions")
    after = partition_counts(operator)
    assert after["materialized"] >= before["materialized"] + BACKFILL_HOURS, (before, after)
    assert after["failed"] == 0, after
    shoot(operator, screenshots, "04e-partitions-after-backfill")


def test_05_a_check_the_ledger_metadata_and_a_statement(operator, deployment, screenshots):
    open_page(operator, deployment, "/assets/ledger_entries")
    open_tab(operator, "Checks")
    until(operator, text_has("ledger_balanced", "Evaluation result", "debits_microcredits"),
          "the ledger_balanced check's latest result")
    text = page_text(operator)
    assert "This is a blocking asset check." in text
    assert re.search(r"Evaluation result\nPassed", text), text
    debits = re.search(r"debits_microcredits (\d+)", text)
    credits = re.search(r"credits_microcredits (\d+)", text)
    assert debits and credits and debits[1] == credits[1] and int(debits[1]) > 0, text
    shoot(operator, screenshots, "05-ledger-check")

    open_tab(operator, "Overview")
    until(operator, text_has("usage_microcredits_posted", "transactions_posted"),
          "ledger_entries' metadata")
    text = page_text(operator)
    assert re.search(rf"business_month\n[^\n]+\n{deployment.month}\n", text), text
    posted = re.search(r"usage_microcredits_posted\n[^\n]+\n([\d,]+)\n", text)
    assert posted and int(posted[1].replace(",", "")) > 0, "no usage posted for the month"
    heading = operator.find_element(By.XPATH, "//*[normalize-space()='Metadata']")
    operator.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
    shoot(operator, screenshots, "05b-ledger-metadata")

    open_page(operator, deployment, "/assets/monthly_statements")
    until(operator, text_has("statements", "downloads", "statement/epa"),
          "monthly_statements' metadata")
    click(operator, "//*[normalize-space()='statement/epa']/following::a"
                    "[normalize-space()='[Show Markdown]'][1]", "epa's [Show Markdown]")
    statement = f"Environmental Protection Agency (epa), {deployment.month}"
    dialog = until(operator, lambda d: next(
        (e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]")
         if statement in e.text), None), f"the statement '{statement}'")
    assert "Credits used" in dialog.text and "epa-forms-1" in dialog.text, dialog.text
    title = dialog.find_element(By.XPATH, f".//*[normalize-space()='{statement}']")
    operator.execute_script("arguments[0].scrollIntoView({block: 'start'})", title)
    shoot(operator, screenshots, "05c-statement")
    # its two files, downloaded through the links as a person clicks them (with the session)
    links = [a.get_attribute("href") or "" for a in dialog.find_elements(By.TAG_NAME, "a")]
    files = [link for link in links if "/statements/" in link]
    assert [urlsplit(f).path for f in files] == [
        f"/statements/{deployment.month}/epa.csv",
        f"/statements/{deployment.month}/epa-agreements.csv"], links
    for link in files:
        download = fetch(operator, link)
        assert download.status_code == 200, download.text
        assert download.headers["content-type"].startswith("text/csv")
        rows = download.text.splitlines()
        assert len(rows) > 1 and all(r.startswith(f"epa,{deployment.month},")
                                     for r in rows[1:]), download.text
    click(operator, "//div[@role='dialog']//button[normalize-space()='Close']", "Close")


def test_06_a_reader_cannot_launch_a_materialization(browsers, deployment, screenshots):
    reader = browsers.new()
    open_page(reader, deployment, "/assets/customer_balances", user="reader")
    until(reader, text_has("customer_balances", "Latest materialization"),
          "customer_balances' page")
    # Dagster's own read-only view: the button is there, greyed out, with Dagster's reason
    materialize = until(reader, lambda d: next(iter(d.find_elements(
        By.XPATH, "//button[normalize-space()='Materialize']")), None), "the Materialize button")
    assert not materialize.is_enabled(), "a reader is offered Materialize"
    ActionChains(reader).move_to_element(materialize.find_element(By.XPATH, "..")).perform()
    until(reader, text_has("You do not have permission to materialize assets"),
          "Dagster's reason beside the greyed-out button")
    shoot(reader, screenshots, "06-reader-materialize-greyed-out")

    # a launch sent anyway, as a script with the reader's session would, is refused at the door
    started = time.time()
    launch = post_graphql(reader, deployment, LAUNCH)
    assert launch.status_code == 403, launch.text
    assert launch.json()["errors"][0]["message"] == (
        "reader may read but not change anything: the GraphQL mutation LaunchIt needs the "
        "operator scope (usage.admin)")
    runs = graphql(reader, deployment, RUNS_SINCE, {"after": started - 1})
    by_hand = [r for r in runs["runsOrError"]["results"]
               if not any(t["key"] in AUTOMATIC_TAGS for t in r["tags"])]
    assert by_hand == [], by_hand
    log = (deployment.logs / "web.log").read_text(errors="replace")
    assert "reader reader refused: the GraphQL mutation LaunchIt" in log
    # a reader may download statements
    download = fetch(reader, f"{deployment.url}/statements/{deployment.month}/epa.csv")
    assert download.status_code == 200 and download.text.startswith("customer_id,month,"), \
        download.text


HOURLY = """
query Hourly($partitions: [String!]) {
  assetNodeOrError(assetKey: {path: ["hourly_measurements"]}) {
    ... on AssetNode {
      assetMaterializations(partitions: $partitions) {
        partition
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
        }
      }
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            partitionStatuses {
              __typename
              ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
            }
          }
        }
      }
    }
  }
}
"""


def hour_key(hour: datetime) -> str:
    return hourly_keys_between(hour, hour + HOUR)[0]


def hour_complete_statuses(driver: WebDriver, deployment: Deployment,
                           partitions: list[str]) -> dict[str, str]:
    """hour_complete's status per hourly key, as the UI's GraphQL has it (SUCCEEDED, FAILED,
    ...), for the deployment's keys that ``partitions`` asks about."""
    node = graphql(driver, deployment, HOURLY, {"partitions": partitions})["assetNodeOrError"]
    (check,) = [c for c in node["assetChecksOrError"]["checks"] if c["name"] == "hour_complete"]
    keys = deployment.partitions
    shown: dict[str, str] = {}
    for r in (check["partitionStatuses"] or {}).get("ranges", []):
        if r["startKey"] in keys and r["endKey"] in keys:
            for key in keys[keys.index(r["startKey"]):keys.index(r["endKey"]) + 1]:
                shown[key] = r["status"]
    return shown


def test_07_each_hour_shows_its_own_figures_and_a_flagged_hour_fails_its_check(
        operator, deployment, screenshots):
    """The hour_complete check's partitions fail exactly where the database says the landed
    data does not determine the hour, and every materialized hour (measured in a run of many
    hours or outside Dagster) shows its own hour's rows, not its run's."""
    open_page(operator, deployment, "/assets/hourly_measurements")  # logs in when run alone

    def statuses(d: WebDriver) -> tuple[dict[str, str], dict[str, str]] | None:
        keys = deployment.partitions
        shown = hour_complete_statuses(d, deployment, keys)
        with psycopg.connect(deployment.database_url) as conn:
            truth = {hour_key(h): "FAILED" if flagged else "SUCCEEDED"
                     for h, flagged in conn.execute(
                         "SELECT hour_start, bool_or(status <> 'complete') "
                         "FROM billing.hour_coverage GROUP BY hour_start")}
        truth = {k: v for k, v in truth.items() if k in keys}
        return (shown, truth) if shown == truth else None

    shown, truth = until(operator, statuses, "hour_complete's partitions to match the "
                                             "database's flagged hours")
    # the deployment's AWS outage leaves hours of its first day undetermined: they fail
    # (and only they, with whatever else the database flags); the rest succeed
    outage = {hour_key(deployment.start + h * HOUR)
              for h in range(int(AWS_OUTAGE[0] / HOUR) + 1, int(AWS_OUTAGE[1] / HOUR))}
    assert outage and all(shown[key] == "FAILED" for key in outage), (sorted(outage), shown)
    assert "SUCCEEDED" in shown.values() and len(shown) >= len(deployment.measured), shown

    open_page(operator, deployment, "/assets/hourly_measurements")
    open_tab(operator, "Checks")
    until(operator, text_has("hour_complete", "hours_complete"), "the checks of the asset")
    shoot(operator, screenshots, "07-hour-complete-checks")
    # the check's own page: its partitions, the failed hours among them
    open_page(operator, deployment, "/assets/hourly_measurements?view=checks"
                                    "&checkDetail=hour_complete")
    until(operator, text_has("Execution history"), "hour_complete's own tabs")
    # (the asset's own Partitions tab comes first on the page; the check's is the last)
    click(operator, "(//*[normalize-space(text())='Partitions'])[last()]",
          "the check's Partitions tab")

    def failed_count(d: WebDriver) -> int | None:
        text = page_text(d)
        found = re.search(r"(?<!Execution )Failed \((\d+)\)", text)
        return int(found[1]) if found and "Passed (" in text else None

    failed = until(operator, failed_count, "hour_complete's partitions, passed and failed")
    assert failed >= len(outage), page_text(operator)
    shoot(operator, screenshots, "07c-hour-complete-partitions")

    node = graphql(operator, deployment, HOURLY, {"partitions": sorted(truth)})[
        "assetNodeOrError"]
    newest: dict[str, dict[str, Any]] = {}
    for m in node["assetMaterializations"]:
        newest.setdefault(m["partition"], {e["label"]: e.get("intValue", e.get("text"))
                                           for e in m["metadataEntries"]})
    with psycopg.connect(deployment.database_url) as conn:
        rows = {hour_key(h): n for h, n in conn.execute(
            "SELECT hour_start, count(*) FROM billing.hourly_measurement GROUP BY 1")}
    assert len(newest) >= len(deployment.measured), sorted(newest)
    for key, metadata in newest.items():
        assert metadata["rows"] == rows.get(key, 0), (key, metadata)
        assert (metadata["status"] == "complete") == (truth[key] == "SUCCEEDED"), \
            (key, metadata)
    in_runs = [k for k, m in newest.items() if "run_hours" in m and m["run_hours"] > 1]
    if in_runs:  # the backfill of test_04: one run of many hours, each its own figures
        assert len({newest[k]["rows"] for k in in_runs}) >= 1
        assert all(newest[k]["run_rows"] >= newest[k]["rows"] for k in in_runs)
    open_page(operator, deployment, "/assets/hourly_measurements?view=partitions&partition="
              + deployment.measured[-1])
    until(operator, text_has("hour_start_utc", "flagged_meters"), "one hour's metadata")
    shoot(operator, screenshots, "07b-one-hour-metadata")


def test_08_held_usage_and_the_month_to_date(operator, deployment, screenshots):
    def held_as_the_database_says(d: WebDriver) -> bool:
        open_page(d, deployment, "/assets/held_usage")
        until(d, text_has("held_rows", "orgs_without_customer"), "held_usage's metadata")
        with psycopg.connect(deployment.database_url) as conn:
            held = conn.execute(
                "SELECT count(DISTINCT (hp.price_id IS NULL, hp.resource_kind_id, "
                "coalesce(hp.org_guid, ''))) FROM billing.hourly_posting hp "
                "WHERE hp.price_id IS NULL OR hp.customer_id IS NULL").fetchone()
        shown = re.search(r"held_rows\n[^\n]+\n([\d,]+)\n", page_text(d))
        return bool(shown and held and int(shown[1].replace(",", "")) == held[0])

    # held_usage follows the pricing runs (the automation sensor): it may be a tick behind
    until(operator, held_as_the_database_says, "held_usage to list what the database holds",
          BACKFILL_SECONDS)
    shoot(operator, screenshots, "08-held-usage")

    open_page(operator, deployment, "/assets/month_to_date")
    until(operator, text_has("measured_share", "charge_so_far_credits", "by_customer"),
          "month_to_date's metadata")
    text = page_text(operator)
    month = re.search(r"business_month\n[^\n]+\n(\d{4}-\d{2})\n", text)
    assert month, text
    shoot(operator, screenshots, "08b-month-to-date")
    # the table is short enough for the UI to show it inline, links and all
    links = until(operator, lambda d: [
        href for a in d.find_elements(By.TAG_NAME, "a")
        if "/statements/" in (href := a.get_attribute("href") or "")],
        "the customers' links to their usage so far")
    assert all(urlsplit(link).path.startswith(f"/statements/{month[1]}/") for link in links), \
        links
    download = fetch(operator, links[0])
    customer = urlsplit(links[0]).path.rsplit("/", 1)[1].removesuffix(".csv")
    assert download.status_code == 200, download.text
    assert all(r.startswith(f"{customer},{month[1]},")
               for r in download.text.splitlines()[1:]), download.text


METERING_RUNS = """
query MeteringRuns {
  runsOrError(filter: {pipelineName: "metering_job"}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def test_09_hours_measured_before_their_events_landed_are_measured_again(
        operator, deployment, screenshots):
    """The deployment's three hours measured before CF's events were first landed (a gap in
    CF's meters, their hour_complete failed): remeasure_sensor, in the daemon, sees the events
    that cover them land and measures them again in one run; then their check succeeds and
    CF's meters are complete there, as the database says."""
    early = deployment.measured_early
    open_page(operator, deployment, "/assets/hourly_measurements")  # logs in when run alone

    def remeasured(d: WebDriver) -> dict[str, Any] | None:
        for run in graphql(d, deployment, METERING_RUNS)["runsOrError"]["results"]:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if (REMEASURED in tags and tags.get(RANGE_START) == early[0]
                    and tags.get(RANGE_END) == early[-1]):
                return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None
        return None

    run = until(operator, remeasured, f"remeasure_sensor's run of {early[0]}...{early[-1]}",
                BACKFILL_SECONDS)
    assert run["status"] == "SUCCESS", (run, deployment.log_tails())
    hours = [deployment.start + deployment.partitions.index(key) * HOUR for key in early]
    with psycopg.connect(deployment.database_url) as conn:
        coverage = conn.execute(
            "SELECT hour_start, meter, status, reason FROM billing.hour_coverage "
            "WHERE hour_start = ANY(%s) AND meter IN ('cfapps', 'cfservices')",
            (hours,)).fetchall()
    assert len(coverage) == 2 * len(early), coverage
    assert all(status == "complete" for _, _, status, _ in coverage), coverage

    def checks_succeeded(d: WebDriver) -> bool:
        shown = hour_complete_statuses(d, deployment, early)
        return all(shown.get(key) == "SUCCEEDED" for key in early)

    until(operator, checks_succeeded, "hour_complete to succeed in the re-measured hours")
    open_page(operator, deployment, f"/runs/{run['runId']}")
    until(operator, text_has("RUN_SUCCESS", "remeasure_sensor"),
          "the re-measuring run's page")
    shoot(operator, screenshots, "09-remeasured-run")
