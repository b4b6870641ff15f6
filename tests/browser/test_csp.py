"""Every page works under the Content-Security-Policy in Chromium: no violation is reported, and
the scripts the pages need (app.js, map.js, inspect.js) run."""

from __future__ import annotations

import pytest
from make_fixture_index import PATCH, POOLED, TEXT

pytestmark = pytest.mark.browser

PAGES = ["/", f"/sae/{POOLED}", f"/sae/{POOLED}/feature/1", f"/sae/{PATCH}/feature/2", f"/sae/{POOLED}/dashboard",
         f"/sae/{POOLED}/search?q=triangle", f"/sae/{POOLED}/sample/2", f"/sae/{PATCH}/sample/2", f"/sae/{POOLED}/game",
         f"/sae/{TEXT}/feature/1", f"/sae/{POOLED}/inspect", "/nope"]


@pytest.fixture
def page(browser):
    """A page that enforces the CSP (the shared fixture bypasses it for Playwright's eval)."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.mark.parametrize("path", PAGES)
def test_page_runs_without_csp_violations(server, page, path):
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script("""document.addEventListener('securitypolicyviolation',
        e => (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI));""")
    resp = page.goto(server + path)
    assert resp is not None and "content-security-policy" in resp.headers
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__csp || []") == [] and violations == []
    if path == f"/sae/{POOLED}":  # map.js ran: the map fetched and drew its points
        page.wait_for_selector("#explorer[data-ready]", timeout=20000)


def test_js_addresses_match_python(server, page):
    """static/app.js `url()` fills app.urls.PATTERNS exactly as Python does."""
    from app import urls
    from app.render import static_url

    page.goto(f"{server}/sae/{POOLED}")
    cases = [("feature", {"sae_id": "a b/c", "feature_id": 3}, None), ("thumb", {"dataset_id": "d", "sample_id": 7}, None),
             ("search", {"sae_id": POOLED}, {"q": "red car & co", "page": 2}), ("points", {"sae_id": "x", "kind": "samples"}, None)]
    got = page.evaluate("""async ([src, cases]) => { const m = await import(src);
        return cases.map(([name, params, query]) => m.url(name, params, query)); }""", [static_url("app.js"), cases])
    assert got == [urls.url(name, query, **params) for name, params, query in cases]
    assert got[0] == "/sae/a%20b%2Fc/feature/3" and got[2] == f"/sae/{POOLED}/search?q=red+car+%26+co&page=2"
