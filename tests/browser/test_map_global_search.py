"""Search across SAEs in headless Chromium: the home page's box leads there, the arch select narrows
the SAEs (and lands in the URL), a group links to its SAE's own search, and a bad filter is a one-line
message on the page. (Named test_map_* with the map's browser tests: one helper's layer.)"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from make_fixture_index import PATCH, POOLED, TEXT

pytestmark = pytest.mark.browser


def groups(page) -> list[str]:
    return page.eval_on_selector_all("section.search-group", "els => els.map(e => e.dataset.sae)")


def query(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def test_home_box_then_arch_filter_then_a_group(page, server):
    page.goto(f"{server}/")
    page.fill("header form.search input[name=q]", "detector")
    page.press("header form.search input[name=q]", "Enter")
    page.wait_for_url("**/search?q=detector")
    assert sorted(groups(page)) == sorted([POOLED, PATCH, TEXT])
    page.select_option("select[name=arch]", "relu")
    page.click("form.global-search button[type=submit]")
    page.wait_for_url("**arch=relu**")
    assert query(page)["arch"] == ["relu"] and query(page)["q"] == ["detector"]
    assert groups(page) == [PATCH]  # the topk SAEs are left out
    assert "2 left out by the arch and model filters" in page.inner_text("p.count")
    page.select_option("select[name=sort]", "id")
    page.click("form.global-search button[type=submit]")
    page.wait_for_url("**sort=id**")
    ids = page.eval_on_selector_all(f"section[data-sae='{PATCH}'] li[data-feature]", "els => els.map(e => Number(e.dataset.feature))")
    assert ids == sorted(ids) and ids
    page.click(f"section[data-sae='{PATCH}'] p.more a")
    page.wait_for_url(f"**/sae/{PATCH}/search?**")
    assert query(page)["sort"] == ["id"] and query(page)["q"] == ["detector"]


def test_bad_filter_is_a_one_line_message_and_the_form_stays(page, server):
    resp = page.goto(f"{server}/search?q=circle&arch=gated")
    assert resp.status == 422
    msg = page.inner_text("p.error-message")
    assert msg.startswith("arch: no SAE in this index has arch 'gated'") and "\n" not in msg
    assert page.is_visible("form.global-search select[name=arch]")
    resp = page.goto(f"{server}/search?q=circle&min_density=7")
    assert resp.status == 422 and page.inner_text("p.error-message").startswith("min_density:")


def test_phone_width_search_page_fits(browser, server):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True, bypass_csp=True)
    pg = ctx.new_page()
    try:
        pg.goto(f"{server}/search?q=circle&arch=topk")
        assert groups(pg) == [POOLED]
        overflow = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0  # the filter form wraps; nothing scrolls sideways
    finally:
        ctx.close()
