"""End-to-end checks in headless Chromium (SwiftShader WebGL) against a real uvicorn server."""

from __future__ import annotations

import io
import re

import pytest
from conftest import webgl_pixels_drawn
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
    drawn = webgl_pixels_drawn(page)
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
    page.wait_for_function("document.querySelectorAll('#sel-list li a[href*=\"/feature/\"]').length === 4")  # + the table link
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
    page.wait_for_function("document.querySelectorAll('#sel-list li a[href*=\"/feature/\"]').length === 64")  # + the table link


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
    page.goto(f"{server}/sae/{PATCH}/feature/3")  # the choice follows the user to the next feature
    assert not page.is_checked("#heat-toggle") and not page.locator("canvas.heat").first.is_visible()
    page.check("#heat-toggle")
    assert page.locator("canvas.heat").first.is_visible()
    page.goto(f"{server}/sae/{PATCH}/feature/2")
    assert page.is_checked("#heat-toggle")


def test_phone_width_has_no_horizontal_scroll(browser, server):
    ctx = browser.new_context(viewport={"width": 375, "height": 740}, bypass_csp=True)
    pg = ctx.new_page()
    for url in ["/", f"/sae/{POOLED}/feature/3", f"/sae/{POOLED}", f"/sae/{POOLED}/dashboard"]:
        pg.goto(server + url)
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), url
    ctx.close()


# ---------- polish: overlay alignment, shortcuts, legends, labels, console cleanliness ----------

def test_heatmap_overlay_covers_exactly_the_image(page, server):
    page.goto(f"{server}/sae/{PATCH}/feature/2")
    page.wait_for_selector("canvas.heat[data-aligned='true']")
    boxes = page.evaluate("""() => [...document.querySelectorAll('.gallery canvas.heat')].slice(0, 6).map(c => {
        const img = c.parentElement.querySelector('img');
        const r = img.getBoundingClientRect(), k = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
        const w = img.naturalWidth * k, h = img.naturalHeight * k;
        const cr = c.getBoundingClientRect();
        return { img: [r.left + (r.width - w) / 2, r.top + (r.height - h) / 2, w, h],
                 heat: [cr.left, cr.top, cr.width, cr.height], grid: [c.width, c.height] }; })""")
    assert boxes
    for b in boxes:
        assert b["grid"] == [4, 4]
        for a, h in zip(b["img"], b["heat"], strict=True):
            assert abs(a - h) < 1.5, b  # the 4x4 grid sits on the drawn image, not the tile or caption


def test_feature_keyboard_navigation(page, server):
    page.goto(f"{server}/sae/{PATCH}/feature/5")
    assert "next" in page.inner_text(".keys")  # documented on the page
    page.keyboard.press("j")
    page.wait_for_url(re.compile(rf"/sae/{PATCH}/feature/6$"))
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(re.compile(rf"/sae/{PATCH}/feature/5$"))
    page.keyboard.press("k")
    page.wait_for_url(re.compile(rf"/sae/{PATCH}/feature/4$"))
    page.keyboard.press("h")  # toggles the heatmaps
    assert page.evaluate("document.body.classList.contains('heat-off')")
    page.keyboard.press("h")
    assert not page.evaluate("document.body.classList.contains('heat-off')")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("j")  # typing in the search box never navigates
    assert page.url.endswith("/feature/4") and page.input_value("#q") == "j"
    page.goto(f"{server}/sae/{PATCH}/feature/5")
    page.keyboard.press("r")
    page.wait_for_url(re.compile(rf"/sae/{PATCH}/feature/\d+$"))


def test_quantiles_are_one_row_per_bin(page, server):
    page.goto(f"{server}/sae/{POOLED}/feature/3")
    rows = page.locator(".qrow")
    assert rows.count() == 4  # the fixture's index_meta says 4 bins; the highest one is empty
    assert rows.first.locator(".empty-bin").count() == 1
    for i in range(1, rows.count()):
        tops = rows.nth(i).evaluate("r => [...r.querySelectorAll('figure.tile')].map(t => Math.round(t.getBoundingClientRect().top))")
        assert len(tops) == 2 and len(set(tops)) == 1  # the bin's samples sit side by side


def test_map_legend_follows_colour_mode(page, server):
    open_map(page, server)
    assert "clusters" in page.inner_text("#legend")
    page.select_option("#color-select", "density")
    assert "density" in page.inner_text("#legend") and page.locator("#legend .ramp-bar").count() == 1
    page.select_option("#color-select", "max_act")
    assert "max activation" in page.inner_text("#legend")


def test_cluster_labels_do_not_overlap(page, server):
    open_map(page, server)
    for zoomed in (False, True):  # default view, then zoomed in
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        rects = page.evaluate("""() => [...document.querySelectorAll('#labels span')].map(s => {
            const r = s.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })""")
        assert rects or zoomed
        for i, a in enumerate(rects):
            for b in rects[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        page.focus("#map")
        for _ in range(3):
            page.keyboard.press("+")


def test_game_number_keys_and_score(page, server):
    page.goto(f"{server}/sae/{POOLED}/game?seed=3")
    page.evaluate("localStorage.clear()")
    page.keyboard.press("2")
    page.wait_for_url(re.compile(r"/game/answer\?"))
    assert page.locator("[data-game-result]").count() == 1
    assert re.search(r"Score [01] / 1", page.inner_text("#game-score"))
    page.go_back()  # the same round again with another pick, and a reload: never scored twice
    page.wait_for_url(re.compile(r"/game\?seed=3$"))
    page.keyboard.press("3")
    page.wait_for_url(re.compile(r"/game/answer\?"))
    page.reload()
    assert re.search(r"Score [01] / 1", page.inner_text("#game-score"))
    page.keyboard.press("n")
    page.wait_for_url(re.compile(rf"/sae/{POOLED}/game$"))
    assert "/ 1" in page.inner_text("#game-score")


PAGES = ["/", f"/sae/{POOLED}", f"/sae/{POOLED}?map=samples&sample=0", f"/sae/{PATCH}", f"/sae/{POOLED}/feature/3",
         f"/sae/{PATCH}/feature/2", f"/sae/{POOLED}/dashboard", f"/sae/{PATCH}/dashboard", f"/sae/{POOLED}/search?q=star",
         f"/sae/{PATCH}/sample/2", f"/sae/{POOLED}/game", "/nope"]


@pytest.mark.parametrize("width", [1280, 390])
def test_no_console_errors_or_overflow(browser, server, width):
    ctx = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(f"{pg.url}: {m.text}") if m.type == "error" and "404" not in m.text else None)
    pg.on("pageerror", lambda e: errors.append(f"{pg.url}: {e}"))
    for url in PAGES:
        pg.goto(server + url)
        if url.startswith(f"/sae/{POOLED}") and "/" not in url[len(f"/sae/{POOLED}"):].split("?")[0] or url == f"/sae/{PATCH}":
            pg.wait_for_selector("#explorer[data-restored='true']", timeout=15000)
        pg.wait_for_load_state("networkidle")
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), url
    ctx.close()
    assert not errors, errors
