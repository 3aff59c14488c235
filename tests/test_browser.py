"""A real browser (Playwright driving Debian's Chromium) against the live app.

Screenshots go to ``artifacts/browser/`` (git-ignored). Outside CI the test
is skipped, with the reason, when Chromium is not installed; in CI
(``CI=true``) a missing Chromium fails it.
"""

import io
import os
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

from marketplace.management.commands.seed_demo import DEMO_PASSWORD

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture
def app_server(catalogue):
    """A live server of our own, stopped at the end of the test so that its
    database connections close before the test database is dropped."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1:0")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def demo_data(catalogue):
    # Seeded before Playwright starts: inside its sync API the ORM would run in
    # a greenlet with a database connection of its own that nobody closes.
    call_command("seed_demo", stdout=io.StringIO())


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; .ci/run installs Debian's chromium package.")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            yield page
        finally:
            browser.close()


@pytest.mark.django_db(transaction=True)
def test_demo_renter_logs_in_and_reaches_the_dashboard(app_server, demo_data, browser_page):
    page = browser_page

    # the home page shows the live supply of the seeded trace
    page.goto(app_server.url + "/")
    assert "InfraFi" in page.title()
    assert page.locator("#stat-gpus").inner_text().replace(",", "") != "0"
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

    # logging in as the demo renter lands on the renter dashboard
    page.get_by_role("banner").get_by_role("link", name="Log in").click()
    page.fill("input[name=login]", "renter@infrafi.test")
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url(app_server.url + "/renter/")
    assert page.locator("h1").inner_text() == "Rent GPUs"
    assert "renter@infrafi.test" in page.locator("header").inner_text()
    page.screenshot(path=str(ARTIFACTS / "renter-dashboard.png"), full_page=True)
    assert (ARTIFACTS / "renter-dashboard.png").stat().st_size > 10_000

    # and an owner page is refused with an explanation, not a crash
    response = page.goto(app_server.url + "/owner/")
    assert response.status == 403
    assert "This page is for GPU owners" in page.content()
