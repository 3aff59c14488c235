"""The API viewers render in a real browser under the site's Content-Security-Policy.

Every violation the browser reports (``securitypolicyviolation``) is collected
from the first script on; the page must show the schema's title, and no script
or style of its own may be refused.
"""

import pytest

from tests.test_browser import app_server, browser_page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "title"), [("/api/docs/", ".swagger-ui .info .title"), ("/api/redoc/", "h1")])
def test_the_api_viewers_render_with_no_csp_violation(app_server, browser_page, path, title):  # noqa: F811
    page = browser_page
    page.add_init_script(COLLECT_VIOLATIONS)
    response = page.goto(app_server.url + path)
    assert "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
    page.wait_for_selector(title, timeout=20_000)
    assert "InfraFi API" in page.locator(title).first.inner_text()
    # Redoc's sidebar asks Redocly's CDN for its logo and hides it when that fails: the
    # policy blocking it is the page staying offline. Nothing else may be refused.
    blocked = [v for v in page.evaluate("window.__csp") if v != "img-src https://cdn.redoc.ly/redoc/logo-mini.svg"]
    assert blocked == []
