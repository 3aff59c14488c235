"""A renter's Jupyter session in Chromium through the platform's proxy: the page at
``/proxy/<job>/8888/lab`` loads (uvicorn serving ``config.asgi``, the emulator's service proxy,
a Jupyter-like aiohttp upstream from ``tests.test_proxy``), and its script opens a websocket back
through the proxy (as JupyterLab's kernel channels do) whose echo shows on the page. Another
renter gets the proxy's 404; a signed-out visitor lands on the login page.

The rows are made before Playwright starts (its sync API runs the test in a greenlet where the
ORM must not be used): the fixtures are listed before ``browser_page``."""

import pytest
from django.conf import settings

from tests.test_browser import ARTIFACTS, browser_page  # noqa: F401 - the fixture
from tests.test_proxy import proxy_server, session_cookie, upstream, workload  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cookies(workload, renter):  # noqa: F811 - the imported fixture
    from tests.factories import make_renter

    return {
        "renter": session_cookie(renter).split("=", 1)[1],
        "stranger": session_cookie(make_renter()).split("=", 1)[1],
    }


def test_jupyter_through_the_proxy_in_chromium(workload, cookies, proxy_server, browser_page):  # noqa: F811
    job, _ = workload
    page = browser_page
    lab = f"{proxy_server.url}/proxy/{job.public_id}/8888/lab"

    # Signed out: the login page, which brings the visitor back to the notebook afterwards.
    page.goto(lab)
    assert "/accounts/login/" in page.url and "next=%2Fproxy%2F" in page.url
    assert page.locator("input[name=login]").count() == 1

    # Another renter: the proxy's 404, the notebook stays hidden.
    context = page.context
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookies["stranger"], "url": proxy_server.url}])
    response = page.goto(lab)
    assert response.status == 404 and "no such session port of yours" in page.content()

    # The renter: the page loads and its websocket echoes through the proxy.
    context.clear_cookies()
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookies["renter"], "url": proxy_server.url}])
    response = page.goto(lab)
    assert response.status == 200 and page.title() == "JupyterLab"
    page.wait_for_function("document.getElementById('echo').textContent !== ''", timeout=10_000)
    assert page.locator("#echo").inner_text() == "echo: hello kernel"
    assert page.locator("#status").inner_text() == "open"
    # Its links stay under the proxy (the API server's rewriting of them is undone).
    assert page.locator("#tree").get_attribute("href") == f"/proxy/{job.public_id}/8888/tree"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jupyter-through-proxy.png"))
