"""Explorer map controls in headless Chromium against the real server: distinct cluster colours and the full
legend, zoom buttons, two-pointer pinch, and view state from the URL that is validated before use."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
from make_fixture_index import POOLED

pytestmark = pytest.mark.browser

NOISE = [170, 170, 170]
ALPHA = 235 / 255  # point alpha in map.js, blended over the white background


def open_map(page, server, query=""):
    page.goto(f"{server}/sae/{POOLED}{query}")
    page.wait_for_selector("#explorer[data-restored='true']", timeout=15000)


def frames(page, n=2):
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def rgb(css: str) -> list[int]:
    return [int(v) for v in re.findall(r"\d+", css)[:3]]


def legend_colours(page) -> dict[int, list[int]]:
    items = page.evaluate("""() => [...document.querySelectorAll('#legend .legend-item')].map(it =>
        [Number(it.dataset.cluster), getComputedStyle(it.querySelector('i')).backgroundColor])""")
    return {cid: rgb(css) for cid, css in items}


def url_view(page) -> dict[str, str | None]:
    return page.evaluate("() => Object.fromEntries(new URLSearchParams(location.search))")


def many_clusters(n: int) -> list[dict]:
    """`n` named clusters, largest first (as the server orders them), spread around the fixture's points."""
    return [{"cluster_id": c, "name": f"group {c}", "size": 100 - c,
             "x": 6 * math.cos(c * 2 * math.pi / n), "y": 6 * math.sin(c * 2 * math.pi / n)} for c in range(n)]


def with_clusters(page, server, clusters: list[dict]):
    """Serve the explorer page with `clusters` as its feature-map cluster list (the fixture index has four)."""

    def handle(route):
        resp = route.fetch()
        html = re.sub(r'(<script type="application/json" id="clusters-features">).*?(</script>)',
                      lambda m: m.group(1) + json.dumps(clusters) + m.group(2), resp.text(), count=1, flags=re.S)
        route.fulfill(response=resp, body=html)

    page.route(re.compile(rf"/sae/{POOLED}(\?.*)?$"), handle)


# ---------- cluster colours and legend ----------

def test_cluster_colours_are_distinct_and_consistent(page, server):
    open_map(page, server)
    legend = legend_colours(page)
    assert set(legend) == {-1, 0, 1, 2, 3}  # every fixture cluster, then "no cluster"
    assert legend[-1] == NOISE
    for (a, ca), (b, cb) in itertools.combinations(legend.items(), 2):
        assert math.dist(ca, cb) > 60, (a, ca, b, cb)
    # the cluster labels on the map carry the legend's colour of their cluster
    names = {c["name"]: c["cluster_id"] for c in json.loads(page.text_content("#clusters-features"))}
    frames(page)
    labels = page.evaluate("() => [...document.querySelectorAll('#labels span')].map(s => [s.title, getComputedStyle(s).borderLeftColor])")
    assert labels
    for title, css in labels:
        assert rgb(css) == legend[names[title]], title
    # and so do the points: read the WebGL buffer at each point's centre
    got = page.evaluate("""() => {
        const c = document.getElementById('map'), gl = c.getContext('webgl'), dpr = devicePixelRatio || 1;
        const px = new Uint8Array(c.width * c.height * 4);
        gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
        const out = [];
        for (let i = 0; i < Number(document.getElementById('explorer').dataset.n); i++) {
            const [x, y] = window.saescopeMap.screenOf(i);
            const cx = Math.round(x * dpr), cy = c.height - 1 - Math.round(y * dpr);
            if (cx < 0 || cy < 0 || cx >= c.width || cy >= c.height) continue;
            const k = (cy * c.width + cx) * 4;
            out.push([window.saescopeMap.clusterOf(i), [px[k], px[k + 1], px[k + 2]]]);
        }
        return out; }""")
    assert len(got) > 50
    match = sum(all(abs(v - (ALPHA * e + 255 * (1 - ALPHA))) < 10 for v, e in zip(col, legend[cid])) for cid, col in got)
    assert match / len(got) > 0.75  # the rest sit under a later-drawn point of another cluster


def test_palette_has_many_distinct_colours(page, server):
    open_map(page, server)
    cols = page.evaluate("() => Array.from({length: 100}, (_, i) => window.saescopeMap.clusterColor(i))")
    assert len({tuple(c) for c in cols}) == 100
    assert all(math.dist(c, NOISE) > 40 for c in cols)  # no cluster looks like noise
    first = cols[:24]  # the hand-picked part: well apart from each other
    assert min(math.dist(a, b) for a, b in itertools.combinations(first, 2)) > 35
    assert page.evaluate("window.saescopeMap.clusterColor(-1)") == NOISE


def test_legend_lists_every_cluster_on_request(page, server):
    with_clusters(page, server, many_clusters(23))
    open_map(page, server)
    assert len(legend_colours(page)) == 8 + 1  # the 8 largest and "no cluster"
    assert "largest 8 of 23" in page.inner_text("#legend .legend-title")
    more = page.locator("#legend .legend-more")
    assert more.inner_text() == "+15 more" and more.get_attribute("aria-expanded") == "false"
    more.click()
    more = page.locator("#legend .legend-more")
    assert more.get_attribute("aria-expanded") == "true"
    assert page.evaluate("document.activeElement.classList.contains('legend-more')")  # focus stays on the toggle
    legend = legend_colours(page)
    assert set(legend) == set(range(23)) | {-1}
    dists = [math.dist(a, b) for a, b in itertools.combinations(legend.values(), 2)]
    assert min(dists) > 30, min(dists)  # 24 pairwise distinct colours, noise grey included
    box = page.evaluate("() => { const l = document.getElementById('legend-items'); return [l.scrollHeight, l.clientHeight]; }")
    assert box[0] > box[1] + 50 and box[1] < 260  # compact: the long list scrolls inside the legend
    more.click()
    assert len(legend_colours(page)) == 9
    # the colour-ramp legends are unaffected
    page.select_option("#color-select", "density")
    assert page.locator("#legend .legend-more").count() == 0 and page.locator("#legend .ramp-bar").count() == 1


# ---------- zoom buttons and pinch ----------

def test_zoom_buttons_step_and_reset(page, server):
    open_map(page, server)
    v0 = page.evaluate("window.saescopeMap.view()")
    step = page.evaluate("window.saescopeMap.zoomStep")
    assert v0["zoom"] == 1 and step == 1.5
    page.get_by_role("button", name="Zoom in").click()
    v1 = page.evaluate("window.saescopeMap.view()")
    assert v1["zoom"] == pytest.approx(1.5)
    assert (v1["cx"], v1["cy"]) == pytest.approx((v0["cx"], v0["cy"]))  # zooms about the map's centre
    page.wait_for_function("new URLSearchParams(location.search).get('z') === '1.500'")
    page.get_by_role("button", name="Zoom in").click()
    page.wait_for_function("new URLSearchParams(location.search).get('z') === '2.250'")
    page.get_by_role("button", name="Zoom out").click()
    assert page.evaluate("window.saescopeMap.view().zoom") == pytest.approx(1.5)
    page.focus("#map")  # pan away, then reset restores the whole view
    page.keyboard.press("ArrowLeft")
    page.get_by_role("button", name="Reset zoom").click()
    v2 = page.evaluate("window.saescopeMap.view()")
    assert (v2["zoom"], v2["cx"], v2["cy"]) == pytest.approx((1, v0["cx"], v0["cy"]))
    page.wait_for_function("new URLSearchParams(location.search).get('z') === '1.000'")
    for _ in range(6):  # the buttons stay within the wheel's zoom range
        page.get_by_role("button", name="Zoom out").click()
    lo, _hi = page.evaluate("window.saescopeMap.zoomRange()")
    assert page.evaluate("window.saescopeMap.view().zoom") == pytest.approx(lo) == 0.2


def dispatch(page, events):
    """Synthetic PointerEvents on the map canvas: (type, pointerId, x, y) in CSS px relative to the canvas."""
    page.evaluate("""(evs) => { const c = document.getElementById('map'), r = c.getBoundingClientRect();
        for (const [type, id, x, y] of evs) c.dispatchEvent(new PointerEvent(type, { pointerId: id, pointerType: 'touch',
            isPrimary: id === 1, clientX: r.left + x, clientY: r.top + y, bubbles: true, cancelable: true, button: 0,
            buttons: type === 'pointerup' ? 0 : 1 })); }""", events)


def test_two_pointer_pinch_zooms_about_the_fingers(page, server):
    open_map(page, server)
    url = page.url.split("?")[0]
    v0 = page.evaluate("window.saescopeMap.view()")
    sx, sy = page.evaluate("window.saescopeMap.screenOf(10)")  # pinch around point 10
    dispatch(page, [("pointerdown", 1, sx - 40, sy), ("pointerdown", 2, sx + 40, sy)])
    dispatch(page, [("pointermove", 1, sx - 60, sy), ("pointermove", 2, sx + 60, sy)])  # 80 px apart -> 120 px
    dispatch(page, [("pointermove", 1, sx - 80, sy), ("pointermove", 2, sx + 80, sy)])  # -> 160 px: twice the zoom
    frames(page)
    assert page.evaluate("window.saescopeMap.view().zoom") == pytest.approx(2 * v0["zoom"], rel=1e-6)
    assert page.evaluate("window.saescopeMap.screenOf(10)") == pytest.approx([sx, sy], abs=0.5)  # stays under the fingers
    # both fingers move: the map follows them (two-finger pan), zoom unchanged
    dispatch(page, [("pointermove", 1, sx - 50, sy + 20), ("pointermove", 2, sx + 110, sy + 20)])
    assert page.evaluate("window.saescopeMap.screenOf(10)") == pytest.approx([sx + 30, sy + 20], abs=0.5)
    # fingers pinch in: zoom out, never below the wheel's minimum
    dispatch(page, [("pointermove", 1, sx + 29, sy + 20), ("pointermove", 2, sx + 31, sy + 20)])
    assert page.evaluate("window.saescopeMap.view().zoom") == pytest.approx(0.2)
    dispatch(page, [("pointerup", 2, sx + 31, sy + 20), ("pointerup", 1, sx + 29, sy + 20)])
    page.wait_for_function("new URLSearchParams(location.search).get('z') === '0.2000'")
    assert page.url.split("?")[0] == url  # lifting the fingers opened no feature
    # a single pointer still pans, and a tap still opens a point afterwards
    before = page.evaluate("window.saescopeMap.view()")
    dispatch(page, [("pointerdown", 1, 100, 100), ("pointermove", 1, 140, 100), ("pointerup", 1, 140, 100)])
    after = page.evaluate("window.saescopeMap.view()")
    assert after["zoom"] == before["zoom"] and after["cx"] < before["cx"]


def test_touch_pinch_and_page_scroll_on_a_phone(browser, server):
    """Real touch input (CDP) on a 390 px phone: two fingers zoom the map, one finger scrolls the page."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    open_map(pg, server)
    help_text = pg.inner_text(".map-help")
    assert "pinch" in help_text and "two fingers" in help_text and "wheel" not in help_text
    for name in ("Zoom in", "Zoom out", "Reset zoom"):
        b = pg.get_by_role("button", name=name).bounding_box()
        assert b["width"] >= 44 and b["height"] >= 44, name  # finger-sized
    box = pg.locator("#map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = ctx.new_cdp_session(pg)

    def touch(kind, pts):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(pts)]})

    z0 = pg.evaluate("window.saescopeMap.view().zoom")
    touch("touchStart", [(cx - 30, cy), (cx + 30, cy)])
    for d in (40, 55, 70, 90):
        touch("touchMove", [(cx - d, cy), (cx + d, cy)])
    touch("touchEnd", [])
    frames(pg)
    assert pg.evaluate("window.saescopeMap.view().zoom") == pytest.approx(3 * z0, rel=0.05)
    assert pg.evaluate("scrollY") == 0
    # one finger over the map scrolls the page instead of being trapped by it
    v = pg.evaluate("window.saescopeMap.view()")
    pg.evaluate("window.scrollTo(0, 0)")
    touch("touchStart", [(cx, cy + 150)])
    for k in range(1, 11):
        touch("touchMove", [(cx, cy + 150 - 25 * k)])
    touch("touchEnd", [])
    pg.wait_for_function("scrollY > 50", timeout=5000)
    assert pg.evaluate("window.saescopeMap.view()") == v  # the map neither zoomed nor panned
    # in lasso mode one finger draws the lasso instead (once the swipe's fling has come to rest)
    pg.wait_for_function("""() => new Promise(r => { const y = scrollY; setTimeout(() => r(scrollY === y), 250); })""")
    pg.evaluate("window.scrollTo(0, 0)")
    pg.get_by_role("button", name="Lasso").tap()
    pg.get_by_role("button", name="Reset zoom").tap()
    box = pg.locator("#map").bounding_box()
    x0, y0, x1, y1 = box["x"] + 3, box["y"] + 3, box["x"] + box["width"] - 3, box["y"] + box["height"] - 3
    touch("touchStart", [(x0, y0)])
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
        touch("touchMove", [(x, y)])
    touch("touchEnd", [])
    assert len(pg.evaluate("window.saescopeMap.selected()")) == 64
    assert pg.evaluate("scrollY") == 0
    ctx.close()
    assert not errors, errors


def test_help_mentions_pinch_and_buttons_at_phone_width(browser, server):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    pg = ctx.new_page()
    open_map(pg, server)
    text = pg.inner_text(".map-help")
    assert "pinch" in text and "+/−" in text
    for name in ("Zoom in", "Zoom out", "Reset zoom"):
        btn = pg.get_by_role("button", name=name)
        assert btn.is_visible()
        b, m = btn.bounding_box(), pg.locator(".map-wrap").bounding_box()
        assert m["x"] <= b["x"] and b["x"] + b["width"] <= m["x"] + m["width"] and m["y"] <= b["y"]  # over the map
    labels = pg.evaluate("() => [...document.querySelectorAll('#labels span')].map(s => s.getBoundingClientRect().toJSON())")
    ctl = pg.locator(".map-zoom").bounding_box()
    for r in labels:  # cluster labels keep clear of the buttons
        assert r["right"] <= ctl["x"] or r["left"] >= ctl["x"] + ctl["width"] or r["bottom"] <= ctl["y"] or r["top"] >= ctl["y"] + ctl["height"]
    ctx.close()


# ---------- view state from the URL ----------

def watch_network(pg):
    bad: list[str] = []
    pg.on("console", lambda m: bad.append(f"console: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: bad.append(f"pageerror: {e}"))
    pg.on("requestfailed", lambda r: bad.append(f"failed: {r.url}"))
    pg.on("response", lambda r: bad.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
    return bad


@pytest.mark.parametrize("which", ["features", "samples"])
def test_invalid_view_in_url_falls_back_to_defaults(browser, server, which):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    pg = ctx.new_page()
    bad = watch_network(pg)
    open_map(pg, server, f"?map={which}")
    default = pg.evaluate("window.saescopeMap.view()")
    requested: list[str] = []
    pg.on("request", lambda r: requested.append(r.url))
    for query in ["z=-3&x=1e308&sample=abc", "z=0&x=NaN&y=Infinity&sample=-4", "z=abc&x=1.5abc&y=0x10&sample=2.5",
                  "x=-1e308&y=1e40&sample=1e3", "z=&x=&y=&sample="]:
        open_map(pg, server, f"?map={which}&{query}")
        v = pg.evaluate("window.saescopeMap.view()")
        assert (v["zoom"], v["cx"], v["cy"]) == pytest.approx((default["zoom"], default["cx"], default["cy"])), query
        frames(pg, 3)
        assert int(pg.evaluate("document.getElementById('labels').dataset.n")) > 0, query  # drawn the right way round
        assert pg.evaluate("window.saescopeMap.selected()") == []
        pg.wait_for_function("new URLSearchParams(location.search).get('z') === '1.000'")  # rewritten to the valid view
        assert "sample" not in url_view(pg)
    assert not [u for u in requested if "/sample/" in u]  # no /sample/NaN.json and the like
    # out-of-range zoom is clamped to the wheel's range; ids must be whole numbers; unknown samples are not fetched
    open_map(pg, server, f"?map={which}&z=1e9&sel=2,abc,1e2,3.5,4-5,-1&sample=99999")
    assert pg.evaluate("window.saescopeMap.view().zoom") == 5000
    assert pg.evaluate("window.saescopeMap.selected()") == [2, 4, 5]
    open_map(pg, server, f"?map={which}&z=0.001")
    assert pg.evaluate("window.saescopeMap.view().zoom") == pytest.approx(0.2)
    assert not [u for u in requested if "/sample/" in u]
    pg.wait_for_load_state("networkidle")
    ctx.close()
    assert not bad, bad


def test_valid_view_in_url_is_kept(page, server):
    open_map(page, server, "?map=samples&x=0.25&y=-0.5&z=3&sample=1")
    v = page.evaluate("window.saescopeMap.view()")
    assert (v["zoom"], v["cx"], v["cy"]) == pytest.approx((3, 0.25, -0.5))
    page.wait_for_selector("#sample-panel:not([hidden]) h2")
    assert page.inner_text("#sample-panel h2") == "Sample 1"
    page.wait_for_function("new URLSearchParams(location.search).get('sample') === '1'")
