"""End-to-end checks in headless Chromium (SwiftShader WebGL) against a real uvicorn server."""

from __future__ import annotations

import io
import re

import pytest
from make_fixture_index import PATCH, POOLED
from PIL import Image

pytestmark = pytest.mark.browser


def open_map(page, server, query=""):
    page.goto(f"{server}/sae/{POOLED}{query}")
    page.wait_for_selector("#explorer[data-restored='true']", timeout=15000)


def coloured_pixels(png: bytes) -> int:
    """Pixels that are neither white background nor grey."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    n = 0
    for r, g, b in img.getdata():
        if max(r, g, b) - min(r, g, b) > 40:
            n += 1
    return n


def test_map_canvas_draws_points(page, server):
    open_map(page, server)
    assert page.eval_on_selector("#explorer", "e => e.dataset.n") == "64"
    png = page.locator("#map").screenshot()
    assert coloured_pixels(png) > 200  # 64 coloured discs of ~9 px
    # the WebGL buffer itself (not only the compositor) holds the drawing
    drawn = page.evaluate("""() => {
        const c = document.getElementById('map'); const gl = c.getContext('webgl');
        const px = new Uint8Array(c.width * c.height * 4);
        gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
        let n = 0; for (let i = 0; i < px.length; i += 4) if (px[i] < 250 || px[i+1] < 250 || px[i+2] < 250) n++;
        return n; }""")
    assert drawn > 200


def test_click_point_opens_feature_page(page, server):
    open_map(page, server)
    box = page.locator("#map").bounding_box()
    for i in (3, 17):
        x, y = page.evaluate(f"window.saescopeMap.screenOf({i})")
        fid = page.evaluate(f"window.saescopeMap.idOf({i})")
        if 5 < x < box["width"] - 5 and 5 < y < box["height"] - 5:
            break
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#hover:not([hidden])", timeout=5000)
    assert f"#{fid}" in page.inner_text("#hover")
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_url(re.compile(rf"/sae/{POOLED}/feature/{fid}$"), timeout=5000)
    assert page.locator(f"h1[data-feature='{fid}']").count() == 1


def test_search_by_index_and_word(page, server):
    page.goto(f"{server}/sae/{POOLED}/feature/0")
    page.fill("#q", "12")
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(r"/feature/12$"))
    page.fill("#q", "triangle")
    page.press("#q", "Enter")
    page.wait_for_url(re.compile(r"/search\?q=triangle"))
    first = page.locator("ol.results li a").first
    assert "triangle" in first.inner_text()
    first.focus()
    page.keyboard.press("ArrowDown")  # keyboard navigation moves through results
    assert page.evaluate("document.activeElement.closest('li').dataset.feature") != \
        first.evaluate("a => a.closest('li').dataset.feature")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/feature/\d+$"))
    assert "triangle" in page.inner_text("h1")


def test_shared_link_restores_view(page, server):
    open_map(page, server, "?map=features&color=density&x=1.5&y=-2&z=2.5&sel=1-3,9")
    view = page.evaluate("window.saescopeMap.view()")
    assert view["zoom"] == pytest.approx(2.5) and view["cx"] == pytest.approx(1.5) and view["cy"] == pytest.approx(-2)
    assert page.evaluate("window.saescopeMap.selected()") == [1, 2, 3, 9]
    assert page.input_value("#color-select") == "density"
    page.wait_for_function("document.querySelectorAll('#sel-list li').length === 4")
    # and the URL the page writes back encodes the same view
    page.wait_for_function("location.search.includes('sel=1-3%2C9') || location.search.includes('sel=1-3,9')")
    url = page.url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("#explorer[data-restored='true']")
    assert page.evaluate("window.saescopeMap.selected()") == [1, 2, 3, 9]
    assert page.evaluate("window.saescopeMap.view()")["zoom"] == pytest.approx(2.5, rel=1e-3)


def test_lasso_selects_points(page, server):
    open_map(page, server)
    box = page.locator("#map").bounding_box()
    page.click("#lasso-btn")
    x0, y0, x1, y1 = box["x"] + 2, box["y"] + 2, box["x"] + box["width"] - 2, box["y"] + box["height"] - 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()
    assert len(page.evaluate("window.saescopeMap.selected()")) == 64
    page.wait_for_function("document.querySelectorAll('#sel-list li a').length === 64")


def test_dataset_map_click_shows_sample(page, server):
    open_map(page, server, "?map=samples")
    assert page.eval_on_selector("#explorer", "e => e.dataset.ready") == "samples"
    box = page.locator("#map").bounding_box()
    x, y = page.evaluate("window.saescopeMap.screenOf(0)")
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#sample-panel:not([hidden]) h2", timeout=5000)
    assert "Sample" in page.inner_text("#sample-panel h2")


def test_heatmap_toggle(page, server):
    page.goto(f"{server}/sae/{PATCH}/feature/2")
    heat = page.locator("canvas.heat").first
    page.wait_for_selector("canvas.heat[data-drawn='true']")
    assert heat.is_visible()
    alpha = heat.evaluate("c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                          ".filter((v, i) => i % 4 === 3 && v > 0).length")
    assert alpha > 0
    page.uncheck("#heat-toggle")
    assert not heat.is_visible()
    page.check("#heat-toggle")
    assert heat.is_visible()


def test_phone_width_has_no_horizontal_scroll(browser, server):
    ctx = browser.new_context(viewport={"width": 375, "height": 740})
    pg = ctx.new_page()
    for url in ["/", f"/sae/{POOLED}/feature/3", f"/sae/{POOLED}", f"/sae/{POOLED}/dashboard"]:
        pg.goto(server + url)
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), url
    ctx.close()
