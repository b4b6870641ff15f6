"""A published site served by `python -m http.server` under /site/ (not the root), in headless Chromium.

No saescope server runs here: every page, search and game round comes from plain files.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest
from conftest import free_port, webgl_pixels_drawn
from fastapi.testclient import TestClient
from make_fixture_index import PATCH, POOLED, build_fixture_index

from app.main import create_app
from app.settings import Settings
from precompute.publish import PublishConfig, publish

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def index_path(tmp_path_factory):
    return build_fixture_index(tmp_path_factory.mktemp("pub-browser-index"))


@pytest.fixture(scope="module")
def static_site(index_path, tmp_path_factory):
    """Base URL of the site, served from a parent folder so it lives under /site/."""
    www = tmp_path_factory.mktemp("www")
    publish(PublishConfig(index=index_path, out=www / "site", workers=1, game_rounds=3))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(www)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base}/site/", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("http.server did not start")
        time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def site_page(page, static_site):
    """The browser page; after the test, every request it made must have stayed inside /site/."""
    seen: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield page
    outside = [u for u in seen if not u.startswith(f"{static_site}/site/") and not u.startswith(("data:", "about:"))]
    assert not outside, f"requests outside the site: {outside}"
    assert not failed, f"missing files: {failed}"


def test_home_and_links_between_pages(site_page, static_site):
    page = site_page
    page.goto(f"{static_site}/site/")
    assert "saescope" in page.title()
    page.click(f"a[href='sae/{POOLED}/']")
    page.wait_for_selector("#explorer[data-restored='true']", timeout=15000)
    assert page.url.startswith(f"{static_site}/site/sae/{POOLED}/")
    assert page.eval_on_selector("#explorer", "e => e.dataset.n") == "64"
    drawn = webgl_pixels_drawn(page)
    assert drawn > 200
    page.click("nav[aria-label='SAE'] >> text=Dashboard")
    page.wait_for_url(f"{static_site}/site/sae/{POOLED}/dashboard/")
    page.click("a.brand")
    page.wait_for_url(f"{static_site}/site/")


def test_feature_page_by_its_shared_url(site_page, static_site):
    page = site_page
    page.goto(f"{static_site}/site/sae/{PATCH}/feature/12")  # as the server's links read: no slash
    assert page.locator("h1[data-feature='12']").count() == 1
    page.wait_for_selector("canvas.heat[data-drawn='true']")
    page.keyboard.press("j")
    page.wait_for_url(f"{static_site}/site/sae/{PATCH}/feature/13/")
    page.click("a[data-nav='map']")
    page.wait_for_selector("#explorer[data-restored='true']", timeout=15000)
    assert page.evaluate("window.saescopeMap.selected()") == [13]


def test_map_hover_and_lasso_list_work_from_files(site_page, static_site):
    page = site_page
    page.goto(f"{static_site}/site/sae/{POOLED}?sel=1-3,9")
    sel = "#sel-list li a[href*='/feature/']"
    page.wait_for_function(f"document.querySelectorAll(\"{sel}\").length === 4", timeout=15000)
    hrefs = page.eval_on_selector_all(sel, "as => as.map(a => a.href)")
    assert hrefs[0] == f"{static_site}/site/sae/{POOLED}/feature/1/"
    box = page.locator("#map").bounding_box()
    x, y = page.evaluate("window.saescopeMap.screenOf(3)")
    fid = page.evaluate("window.saescopeMap.idOf(3)")
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#hover:not([hidden]) img", timeout=5000)
    assert f"#{fid}" in page.inner_text("#hover")
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_url(f"{static_site}/site/sae/{POOLED}/feature/{fid}/", timeout=5000)  # after the host's redirect


def test_search_in_the_browser_by_id_and_by_word(site_page, static_site, index_path):
    page = site_page
    page.goto(f"{static_site}/site/sae/{POOLED}/feature/0/")
    page.fill("#q", "12")
    page.press("#q", "Enter")
    page.wait_for_url(f"{static_site}/site/sae/{POOLED}/feature/12/")
    page.fill("#q", "feature 99")
    page.press("#q", "Enter")
    page.wait_for_selector("p.count[role='alert']")
    assert "No feature 99; feature ids are 0–63." in page.inner_text("p.count")
    page.fill("#q", "triangle")
    page.press("#q", "Enter")
    page.wait_for_selector("body[data-search-done='true']")
    got = [int(x) for x in page.eval_on_selector_all("ol.results li", "ls => ls.map(l => l.dataset.feature)")]
    with TestClient(create_app(Settings(index=index_path, secret="s"))) as c:
        served = c.get(f"/sae/{POOLED}/search.json", params={"q": "triangle"}).json()
    assert got == [h["feature_id"] for h in served["data"]]  # same features, same order, as the server
    assert page.inner_text("p.count") == f"{served['count']} features match “triangle”."
    page.wait_for_selector("ol.results li .hit-thumbs img")
    page.click("ol.results li a >> nth=0")
    page.wait_for_url(re.compile(rf"/site/sae/{POOLED}/feature/{got[0]}/$"))


def test_random_feature_and_the_game(site_page, static_site):
    page = site_page
    page.goto(f"{static_site}/site/sae/{POOLED}/feature/1/")
    page.click("a[data-nav='random']")
    page.wait_for_url(re.compile(rf"/site/sae/{POOLED}/feature/\d+/$"))
    page.goto(f"{static_site}/site/sae/{POOLED}/game/")
    page.wait_for_url(re.compile(rf"/site/sae/{POOLED}/game/round/\d/$"))
    page.click("button.candidate >> nth=0")
    page.wait_for_url(re.compile(rf"/site/sae/{POOLED}/game/answer/r\d/\d+/\?token=r\d&pick=\d+$"))
    assert page.locator("[data-game-result]").count() == 1
    assert page.inner_text("#game-score").startswith("Score ")
