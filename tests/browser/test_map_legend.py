"""Map legend filtering and the hovered/tapped point's ring, in headless Chromium against the real server.

Counts are checked against the fixture index's own rows (rebuilt here, read with DuckDB); what the
map draws is read back from its WebGL buffer."""

from __future__ import annotations

import collections
import json

import duckdb
import pytest
from conftest import webgl_pixels_drawn
from make_fixture_index import POOLED, build_fixture_index

pytestmark = pytest.mark.browser

DARK_NEAR_JS = """([x, y, r]) => {
    const c = document.getElementById('map'), gl = c.getContext('webgl'), dpr = devicePixelRatio || 1;
    const px = new Uint8Array(c.width * c.height * 4);
    gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const cx = Math.round(x * dpr), cy = c.height - 1 - Math.round(y * dpr), R = Math.round(r * dpr);
    let n = 0;
    for (let v = cy - R; v <= cy + R; v++) for (let u = cx - R; u <= cx + R; u++) {
        if (u < 0 || v < 0 || u >= c.width || v >= c.height) continue;
        const k = (v * c.width + u) * 4;
        if (px[k] < 40 && px[k + 1] < 40 && px[k + 2] < 40) n++;
    }
    return n; }"""


@pytest.fixture(scope="module")
def feature_clusters(tmp_path_factory) -> collections.Counter:
    """cluster_id -> number of features of the pooled SAE (the server's index is built the same way)."""
    path = build_fixture_index(tmp_path_factory.mktemp("legend-truth"))
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT coalesce(cluster_id, -1) FROM features WHERE sae_id = ?", [POOLED]).fetchall()
    return collections.Counter(int(c) for (c,) in rows)


def open_map(page, server, query=""):
    page.goto(f"{server}/sae/{POOLED}{query}")
    page.wait_for_selector("#explorer[data-restored='true']", timeout=15000)


def frames(page, n=3):
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def url_only(page) -> str | None:
    return page.evaluate("() => new URLSearchParams(location.search).get('only')")


def wait_only(page, want: str | None):
    page.wait_for_function("(w) => new URLSearchParams(location.search).get('only') === w", arg=want)


def legend_counts(page) -> dict[str, int]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#legend [data-cat]')].map(it =>
        [it.dataset.cat, Number(it.querySelector('.legend-n').textContent.replace(/,/g, ''))]))""")


def test_legend_counts_are_the_indexs_cluster_sizes(page, server, feature_clusters):
    open_map(page, server)
    assert legend_counts(page) == {str(c): n for c, n in feature_clusters.items()} | (
        {"-1": 0} if -1 not in feature_clusters else {})


def test_legend_click_filters_the_drawn_points_and_the_url_keeps_it(page, server, feature_clusters):
    open_map(page, server)
    frames(page)
    n = int(page.get_attribute("#explorer", "data-n"))
    all_px = webgl_pixels_drawn(page)
    big = [c for c, _ in feature_clusters.most_common() if c >= 0]
    a, b = str(big[0]), str(big[1])
    page.click(f"#legend [data-cat='{a}']")
    wait_only(page, a)
    frames(page)
    assert page.evaluate("window.saescopeMap.nHidden()") == n - feature_clusters[int(a)]
    one_px = webgl_pixels_drawn(page)
    assert 0 < one_px < 0.8 * all_px
    assert page.get_attribute(f"#legend [data-cat='{a}']", "aria-pressed") == "true"
    assert f"showing {feature_clusters[int(a)]} of {n} points" in page.inner_text("#legend .legend-filter")
    names = {str(c["cluster_id"]): c["name"] for c in json.loads(page.text_content("#clusters-features"))}
    labels = page.evaluate("() => [...document.querySelectorAll('#labels span')].map(s => s.title)")
    assert labels == [names[a]]  # the hidden clusters' labels go too
    # Shift-click adds a second cluster: more drawn, fewer hidden
    page.click(f"#legend [data-cat='{b}']", modifiers=["Shift"])
    wait_only(page, ",".join([a, b]))
    frames(page)
    assert page.evaluate("window.saescopeMap.nHidden()") == n - feature_clusters[int(a)] - feature_clusters[int(b)]
    two_px = webgl_pixels_drawn(page)
    assert one_px < two_px < all_px
    # the filter survives a reload, and draws the same
    page.wait_for_function("new URLSearchParams(location.search).has('z')")
    page.reload()
    page.wait_for_selector("#explorer[data-restored='true']", timeout=15000)
    frames(page)
    assert page.evaluate("window.saescopeMap.only()") == sorted([a, b])
    assert webgl_pixels_drawn(page) == pytest.approx(two_px, rel=0.02)
    # "show all" clears it
    page.click("#legend .legend-all")
    wait_only(page, None)
    frames(page)
    assert page.evaluate("window.saescopeMap.nHidden()") == 0
    assert webgl_pixels_drawn(page) == pytest.approx(all_px, rel=0.02)
    # a plain click on the only category shown also clears it
    page.click(f"#legend [data-cat='{a}']")
    wait_only(page, a)
    page.click(f"#legend [data-cat='{a}']")
    wait_only(page, None)


def test_filter_from_the_url_is_validated(page, server, feature_clusters):
    known = str(max(c for c in feature_clusters if c >= 0))
    open_map(page, server, f"?only=abc,99999,{known},<b>")
    assert page.evaluate("window.saescopeMap.only()") == [known]  # shapeless and absent categories dropped
    wait_only(page, known)
    n = int(page.get_attribute("#explorer", "data-n"))
    assert page.evaluate("window.saescopeMap.nHidden()") == n - feature_clusters[int(known)]


def test_colour_ramp_legend_filters_by_having_a_value(page, server):
    open_map(page, server, "?color=density&only=none")
    n = int(page.get_attribute("#explorer", "data-n"))
    counts = legend_counts(page)
    assert set(counts) == {"valued", "none"} and sum(counts.values()) == n
    assert counts["none"] >= 1  # the fixture's dead feature never fires
    assert page.evaluate("window.saescopeMap.nHidden()") == counts["valued"]
    page.select_option("#color-select", "cluster")  # another colouring: the filter belongs to the old one
    wait_only(page, None)
    assert page.evaluate("window.saescopeMap.nHidden()") == 0


def hover_target(page, feature_clusters) -> int:
    """A point of the largest cluster near the middle of the map, clear of the map's edges."""
    big = max((c for c in feature_clusters if c >= 0), key=feature_clusters.get)
    w, h = page.evaluate("[document.getElementById('map').clientWidth, document.getElementById('map').clientHeight]")
    n = int(page.get_attribute("#explorer", "data-n"))
    for i in range(n):
        x, y = page.evaluate(f"window.saescopeMap.screenOf({i})")
        if page.evaluate(f"window.saescopeMap.clusterOf({i})") == big and 60 < x < w - 60 and 60 < y < h - 60:
            return i
    raise AssertionError("no point of the largest cluster inside the map")


def test_hovered_point_gets_a_ring_and_a_filtered_out_one_cannot(page, server, feature_clusters):
    open_map(page, server)
    frames(page)
    i = hover_target(page, feature_clusters)
    x, y = page.evaluate(f"window.saescopeMap.screenOf({i})")
    box = page.locator("#map").bounding_box()
    assert page.evaluate(DARK_NEAR_JS, [x, y, 16]) == 0  # no point colour is that dark
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_function("window.saescopeMap.ring() >= 0")
    frames(page)
    ringed = page.evaluate("window.saescopeMap.ring()")
    rx, ry = page.evaluate(f"window.saescopeMap.screenOf({ringed})")
    assert abs(rx - x) < 12 and abs(ry - y) < 12  # the point under the pointer (or one on top of it)
    assert page.evaluate(DARK_NEAR_JS, [rx, ry, 16]) > 20  # a dark ring is drawn around it
    page.wait_for_selector("#hover:not([hidden])")  # and the card shows as before
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] + 40)  # off the map: ring and card go
    page.wait_for_function("window.saescopeMap.ring() === -1")
    frames(page)
    assert page.evaluate(DARK_NEAR_JS, [rx, ry, 16]) == 0
    # filtered out: the same point is not drawn, so hovering it finds nothing
    other = str(next(c for c in feature_clusters if c != page.evaluate(f"window.saescopeMap.clusterOf({i})")))
    page.click(f"#legend [data-cat='{other}']")
    wait_only(page, other)
    page.mouse.move(box["x"] + x, box["y"] + y)
    frames(page)
    if page.evaluate("window.saescopeMap.ring()") >= 0:  # only a point of the shown cluster may be ringed
        assert page.evaluate("window.saescopeMap.categoryOf(window.saescopeMap.ring())") == other


def test_a_tap_rings_the_point_and_a_second_tap_opens_it(browser, server, feature_clusters):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        open_map(pg, server)
        frames(pg)
        i = hover_target(pg, feature_clusters)
        x, y = pg.evaluate(f"window.saescopeMap.screenOf({i})")
        pg.locator("#map").scroll_into_view_if_needed()
        box = pg.locator("#map").bounding_box()
        pg.touchscreen.tap(box["x"] + x, box["y"] + y)
        pg.wait_for_function("window.saescopeMap.ring() >= 0")
        frames(pg)
        ringed = pg.evaluate("window.saescopeMap.ring()")
        rx, ry = pg.evaluate(f"window.saescopeMap.screenOf({ringed})")
        assert pg.evaluate(DARK_NEAR_JS, [rx, ry, 16]) > 20
        assert "/feature/" not in pg.url  # the first tap only shows the point
        pg.wait_for_selector("#hover:not([hidden])")
        fid = pg.evaluate(f"window.saescopeMap.idOf({ringed})")
        pg.touchscreen.tap(box["x"] + rx, box["y"] + ry)
        pg.wait_for_url(f"**/sae/{POOLED}/feature/{fid}", timeout=10000)
    finally:
        ctx.close()
    assert not errors, errors


def test_where_a_feature_fires_filters_to_the_samples_it_fires_on(page, server, tmp_path):
    """The samples map coloured by feature 3: 'only=valued' keeps the samples with a recorded activation,
    counted here from the index's own tables (top, quantile and per-sample rows), as the server joins them."""
    path = build_fixture_index(tmp_path / "fires")
    with duckdb.connect(str(path), read_only=True) as con:
        fired = con.execute("""SELECT count(DISTINCT m.sample_id) FROM sample_map m JOIN (
            SELECT sample_id FROM feature_top WHERE sae_id = $1 AND feature_id = 3 UNION ALL
            SELECT sample_id FROM feature_quantiles WHERE sae_id = $1 AND feature_id = 3 UNION ALL
            SELECT sample_id FROM sample_top WHERE sae_id = $1 AND feature_id = 3) a USING (sample_id)
            WHERE m.sae_id = $1""", [POOLED]).fetchone()[0]
    open_map(page, server, "?map=samples&feature=3&only=valued")
    page.wait_for_selector("#legend .legend-title:has-text('feature #3')")
    n = int(page.get_attribute("#explorer", "data-n"))
    assert 0 < fired < n
    assert legend_counts(page) == {"valued": fired, "none": n - fired}
    assert page.evaluate("window.saescopeMap.nHidden()") == n - fired
    assert page.get_attribute("#legend [data-cat='valued']", "aria-pressed") == "true"
    wait_only(page, "valued")
