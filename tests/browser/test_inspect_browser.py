"""The inspect page in Chromium: upload an image, see ranked features and a heatmap, click a patch
to rank that region, follow a feature link; steer with a slider and see the classes change."""

from __future__ import annotations

import io
from urllib.parse import unquote

import duckdb
import pytest
from live_servers import explorer, worker

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_app(small_demo, tmp_path_factory):
    _, index = small_demo
    logs = tmp_path_factory.mktemp("inspect-logs")
    with duckdb.connect(str(index), read_only=True) as con:
        rows = con.execute("SELECT sae_id, grid_h FROM saes").fetchall()
    saes = {"pooled": next(s for s, g in rows if g is None), "patch": next(s for s, g in rows if g)}
    with worker(index, logs) as (wurl, _), explorer(index, logs, wurl) as (aurl, _):
        yield aurl, saes


@pytest.fixture
def emoji_png(tmp_path):
    from precompute.sources import EmojiSource

    fpath = tmp_path / "upload.png"
    buf = io.BytesIO()
    EmojiSource(limit=60).load(42).save(buf, format="PNG")
    fpath.write_bytes(buf.getvalue())
    return fpath


def _heat_pixels(page) -> int:
    return page.evaluate("""() => {
        const c = document.querySelector('[data-overlay]');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 40) n++;
        return n; }""")


def test_upload_rank_heatmap_region_and_follow_link(page, live_app, emoji_png):
    base, saes = live_app
    page.goto(f"{base}/sae/{saes['patch']}/inspect")
    assert "live worker ready" in page.inner_text("[data-live-status]")
    page.set_input_files("[data-file]", str(emoji_png))
    page.wait_for_selector(".live-features li", timeout=60000)
    items = page.locator(f"[data-live-features='{saes['patch']}'] li")
    assert items.count() >= 5
    acts = [float(t) for t in page.locator(f"[data-live-features='{saes['patch']}'] li .act").all_inner_texts()]
    assert acts == sorted(acts, reverse=True) and acts[0] > 0
    assert _heat_pixels(page) > 0, "the top feature's heatmap is drawn over the image"
    assert not page.locator("[data-legend]").is_hidden()
    whole = page.inner_text(".flist .hint")
    box = page.locator("[data-overlay]").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)  # the top-left patch
    page.wait_for_function("() => document.querySelector('.flist .hint').textContent.includes('selected 1 patch')")
    assert page.inner_text(".flist .hint") != whole
    assert "region=0" in unquote(page.url)
    first = page.locator(f"[data-live-features='{saes['patch']}'] li a.fname").first
    fid = first.get_attribute("href").rsplit("/", 1)[1]
    first.click()
    page.wait_for_url(f"**/feature/{fid}")
    assert page.locator("h1").inner_text().startswith(f"#{fid}")


def test_slider_moves_the_predicted_classes(page, live_app):
    base, saes = live_app
    page.goto(f"{base}/sae/{saes['pooled']}/inspect?sample_id=10")
    page.wait_for_selector(".live-features li", timeout=60000)
    page.locator(".live-features li .add-steer").first.click()
    page.wait_for_selector("[data-classes] .cbar", timeout=60000)
    before = page.inner_text("[data-classes]")
    slider = page.locator("[data-edits] input[type=range]").first
    slider.evaluate("(s) => { s.value = '9'; s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }")
    page.wait_for_function("(prev) => document.querySelector('[data-classes]').innerText !== prev", arg=before, timeout=60000)
    assert ":add:9" in unquote(page.url)
    rows = page.locator("[data-classes] .cbar").count()
    assert rows >= 5
    page.locator("[data-edits] button", has_text="clamp 0").first.click()
    page.wait_for_function("() => document.querySelector('[data-edits] output').textContent.startsWith('set')")


def test_sample_page_lists_every_firing_feature_live(page, live_app):
    base, saes = live_app
    page.goto(f"{base}/sae/{saes['patch']}/sample/4")
    page.wait_for_selector("[data-live-all-list] li", timeout=60000)
    stored = page.locator("ol.sample-features").first.locator("li").count()
    live = page.locator("[data-live-all-list] li").count()
    assert live >= stored > 0
    assert "features fire on this sample" in page.inner_text("[data-live-all-status]")
    assert page.locator("[data-live-all-list] canvas.heat[data-drawn='true']").count() > 0
