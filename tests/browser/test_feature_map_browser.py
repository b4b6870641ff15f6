"""The dataset map coloured by one feature, in headless Chromium against the real server: the
feature page's 'where does it fire' link opens it, the legend names the feature, the URL keeps it,
and samples without a recorded activation take the 'no value' colour."""

from __future__ import annotations

import pytest
from make_fixture_index import POOLED

pytestmark = pytest.mark.browser


def test_where_does_it_fire_colours_the_dataset_map_by_the_feature(page, server):
    page.goto(f"{server}/sae/{POOLED}/feature/3")
    page.click("a[data-nav='fires']")
    page.wait_for_selector("#explorer[data-ready='samples']", timeout=15000)
    page.wait_for_selector("#legend .legend-title:has-text('feature #3')", timeout=10000)  # no string eval: the CSP forbids it
    assert "feature #3 activation" in page.inner_text("#legend .legend-title")
    assert "not among its strongest features" in page.inner_text("#legend")
    for _ in range(50):  # the URL is written shortly after each change
        if page.evaluate("() => new URLSearchParams(location.search).get('feature')") == "3":
            break
        page.wait_for_timeout(100)
    assert page.evaluate("() => new URLSearchParams(location.search).get('feature')") == "3"
    assert page.evaluate("() => new URLSearchParams(location.search).get('map')") == "samples"


def test_a_bad_feature_in_the_url_leaves_cluster_colours(page, server):
    page.goto(f"{server}/sae/{POOLED}?map=samples&feature=abc")
    page.wait_for_selector("#explorer[data-ready='samples']", timeout=15000)
    assert "feature #" not in page.inner_text("#legend")


def test_a_map_selection_opens_whole_in_the_feature_table(page, server):
    page.goto(f"{server}/sae/{POOLED}?map=features&sel=1-3,9")
    link = page.wait_for_selector(".sel-table a", timeout=15000)
    assert link.get_attribute("href") == f"/sae/{POOLED}/features?ids=1-3,9"
    assert "open all 4" in link.inner_text()
    link.click()
    page.wait_for_selector("table.feature-table")
    rows = page.eval_on_selector_all("table.feature-table tbody tr", "rs => rs.map(r => r.dataset.feature)")
    assert rows == ["1", "2", "3", "9"]
