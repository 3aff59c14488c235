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

from core.management.commands.seed_demo import DEMO_PASSWORD

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


def _log_in(page, base_url: str, email: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/owner/" if email.startswith(("owner", "helios", "kestrel")) else "**/renter/")


@pytest.mark.django_db(transaction=True)
def test_renter_searches_books_pays_and_sees_the_booking(app_server, demo_data, browser_page):
    from datetime import UTC, datetime, timedelta

    page = browser_page
    _log_in(page, app_server.url, "renter@infrafi.test")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    end = start + timedelta(hours=3)

    # search: 2 GPUs on one server, free for the window, cheapest first
    page.goto(app_server.url + "/search/")
    page.fill("#id_gpu_count", "2")
    page.fill("#id_start", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#id_end", end.strftime("%Y-%m-%dT%H:%M"))
    page.locator("#search-form button[type=submit]").click()
    page.wait_for_selector("#result-count")
    assert "listings match" in page.locator("#result-count").inner_text()
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)

    # open the cheapest listing and book 2 GPUs for the window
    page.locator("#results a.button").first.click()
    page.wait_for_selector("#booking-form")
    assert page.locator("table.calendar tbody tr").count() == 14
    page.fill("#booking-form #id_gpu_count", "2")
    page.fill("#booking-form #id_start", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#booking-form #id_end", end.strftime("%Y-%m-%dT%H:%M"))
    page.screenshot(path=str(ARTIFACTS / "listing.png"), full_page=True)
    page.locator("#booking-form button[type=submit]").click()

    # checkout says it is a test payment; pay
    page.wait_for_selector("#test-payment")
    total = page.locator("#total").inner_text()
    page.screenshot(path=str(ARTIFACTS / "checkout.png"), full_page=True)
    page.locator("#pay").click()

    # my bookings shows it confirmed, with what was paid
    page.wait_for_url("**/bookings/")
    table = page.locator("#bookings").inner_text()
    assert "Confirmed" in table and total in table
    page.screenshot(path=str(ARTIFACTS / "my-bookings.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_owner_registers_a_server_and_lists_it(app_server, demo_data, browser_page):
    page = browser_page
    _log_in(page, app_server.url, "owner@infrafi.test")

    page.goto(app_server.url + "/owner/servers/new/")
    page.fill("#id_hostname", "browser-h100-01")
    page.select_option("#id_region", label="EU Central (Frankfurt) (eu-central)")
    page.fill("#id_cpu_milli", "128000")
    page.fill("#id_memory_mib", "1048576")
    page.select_option("#id_gpu_model", label="H100 80GB")
    page.fill("#id_gpu_count", "8")
    page.locator("form.panel button[type=submit]").click()
    page.wait_for_url("**/owner/servers/*/")
    assert page.locator("h1").inner_text() == "browser-h100-01"

    page.goto(app_server.url + "/owner/listings/")
    page.select_option("#listing-form #id_server", label="browser-h100-01")
    page.fill("#listing-form #id_price_per_gpu_hour", "2.79")
    page.locator("#listing-form button[type=submit]").click()
    page.wait_for_selector(".message.success")
    row = page.locator("tr", has_text="browser-h100-01").inner_text()
    assert "2.79" in row and "H100 80GB" in row
    page.screenshot(path=str(ARTIFACTS / "owner-listings.png"), full_page=True)


@pytest.mark.django_db(transaction=True)
def test_lender_reads_the_loan_book_and_a_loans_flow(app_server, demo_data, browser_page):
    page = browser_page
    page.goto(app_server.url + "/accounts/login/")
    page.fill("input[name=login]", "lender@infrafi.test")
    page.fill("input[name=password]", DEMO_PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/lender/")

    page.goto(app_server.url + "/lender/loans/")
    rows = page.locator("#loan-book tbody tr")
    assert rows.count() == 3 and "Active" in rows.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "loan-book.png"), full_page=True)

    rows.first.get_by_role("link", name="Open", exact=True).click()
    page.wait_for_selector("svg[aria-label='Where the revenue went']")
    assert page.locator("svg[aria-label='Monthly waterfall'] rect").count() > 0
    assert "Renters paid $" in page.content()
    page.screenshot(path=str(ARTIFACTS / "loan.png"), full_page=True)


@pytest.fixture
def running_demo_job(demo_data):
    """The demo renter's job, launched on its simulated cluster a minute ago
    (before Playwright starts, for the reason given at ``demo_data``)."""
    from datetime import timedelta

    from django.utils import timezone

    from scheduler.models import Job, SimJob
    from scheduler.services.jobs import jobs_tick

    job = Job.objects.get(renter__email="renter@infrafi.test")
    jobs_tick(now=job.booking.start)
    SimJob.objects.update(created_at=timezone.now() - timedelta(minutes=1))  # the cluster started it earlier
    return job


@pytest.mark.django_db(transaction=True)
def test_job_page_refreshes_its_logs_without_a_reload(app_server, running_demo_job, browser_page):
    page = browser_page
    _log_in(page, app_server.url, "renter@infrafi.test")
    page.goto(app_server.url + "/jobs/")
    page.get_by_role("link", name="train-llama").click()
    page.wait_for_selector("#job-logs")
    assert "simulated cluster" in page.locator("h1").inner_text()
    assert "torchrun" in page.content() and "WANDB_MODE" in page.content()
    first = page.locator("#job-logs").inner_text()
    assert "[simulated] pulled nvcr.io/nvidia/pytorch:24.05-py3" in first
    page.evaluate("window.__sameDocument = true")
    # A new training step is logged every 10 s of simulated time; the page polls for it.
    page.wait_for_function(
        "text => document.getElementById('job-logs').textContent !== text", arg=first, timeout=30_000
    )
    assert page.evaluate("window.__sameDocument") is True  # refreshed in place, not reloaded
    assert page.locator("#job-progress").get_attribute("aria-valuenow") is not None
    page.screenshot(path=str(ARTIFACTS / "job.png"), full_page=True)
