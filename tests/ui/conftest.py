"""Fixtures of the browser tests: one deployment for the module (deployment.py), headless
Debian chromium driven through its chromedriver (never a browser selenium-manager would
download), and the directory the screenshots go to."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from billing_dagster.aws.embedded import EmbeddedAws
from tests.conftest import fresh_database
from tests.ui.deployment import REPO, Deployment, deployed

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1600, 1000)


@pytest.fixture(scope="module")
def chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the browser tests drive Debian's "
                    "chromium; install it with `apt-get install chromium chromium-driver`",
                    pytrace=False)


@pytest.fixture(scope="module")
def deployment(admin_url: str, template_database: str, embedded_aws: EmbeddedAws,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with fresh_database(admin_url, template_database) as database_url, \
            deployed(database_url, embedded_aws, tmp_path_factory.mktemp("ui")) as running:
        yield running


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """BILLING_UI_SCREENSHOTS, else .artifacts/ui at the repository root; the previous run's
    numbered screenshots are removed first."""
    directory = Path(os.environ.get("BILLING_UI_SCREENSHOTS") or REPO / ".artifacts" / "ui")
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        if re.match(r"(\d\d[a-z]?-|failed-)", old.name):
            old.unlink()
    return directory


class Browsers:
    """Headless chromium sessions, each with its own profile (a fresh browser)."""

    def __init__(self) -> None:
        self.made: list[WebDriver] = []

    def new(self) -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         f"--window-size={WINDOW[0]},{WINDOW[1]}", "--lang=en-US"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                  options=options)
        driver.set_page_load_timeout(120)
        self.made.append(driver)
        return driver


@pytest.fixture(scope="module")
def browsers(chromium: None) -> Iterator[Browsers]:
    """Makes browsers; quits them at the end of the module."""
    made = Browsers()
    yield made
    for driver in made.made:
        driver.quit()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test leaves a screenshot of every open browser (failed-<test>-<n>.png)."""
    yield
    if not request.node.stash.get(FAILED, False) or "browsers" not in request.fixturenames:
        return
    directory: Path = request.getfixturevalue("screenshots")
    made: Browsers = request.getfixturevalue("browsers")
    for number, driver in enumerate(made.made, 1):
        driver.save_screenshot(str(directory / f"failed-{request.node.name}-{number}.png"))


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report
