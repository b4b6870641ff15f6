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
def www(index_path, tmp_path_factory):
    """A folder holding the published site as `site/`."""
    www = tmp_path_factory.mktemp("www")
    publish(PublishConfig(index=index_path, out=www / "site", workers=1, game_rounds=3))
    return www


@pytest.fixture(scope="module")
def static_site(www):
    """Base URL of the site, served from a parent folder so it lives under /site/."""
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


def _served_table(index_path, query: str) -> tuple[list[list[str]], str, list[str]]:
    """The server's feature table for `query`: its rows' cell texts, its count line, its pager labels."""
    import html as html_mod

    with TestClient(create_app(Settings(index=index_path, secret="s"))) as c:
        resp = c.get(f"/sae/{POOLED}/features?{query}")
    assert resp.status_code == 200, resp.text[:300]
    text = resp.text
    body = text[text.index("<tbody>"):text.index("</tbody>")]
    strip = lambda s: " ".join(html_mod.unescape(re.sub(r"<[^>]+>", "", s)).split())  # noqa: E731
    rows = [[strip(td) for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)] for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
    count = strip(re.search(r'<p class="count"[^>]*>(.*?)</p>', text, re.S).group(1))
    pager = [strip(a) for a in re.findall(r"<a [^>]*rel=\"(?:prev|next)\"[^>]*>(.*?)</a>", text, re.S)]
    return rows, count, pager


def _shown_table(page) -> tuple[list[list[str]], str, list[str]]:
    page.wait_for_selector("body[data-table-done='true']")
    rows = page.eval_on_selector_all("table.feature-table tbody tr",
                                     "rs => rs.map(r => [...r.cells].map(c => c.textContent.split(/\\s+/).filter(Boolean).join(' ')))")
    count = " ".join(page.inner_text("p.count").split())
    pager = page.eval_on_selector_all("nav.pager a", "as => as.map(a => a.textContent.trim())")
    return rows, count, pager


def test_feature_table_filters_sorts_and_pages_in_the_browser(site_page, static_site, index_path):
    """Every state below is compared with the server's own table for the same query string."""
    page = site_page
    base = f"{static_site}/site/sae/{POOLED}/features/"
    query = "sort=max_act&order=desc&max_density=0.9&limit=10&offset=10"
    page.goto(f"{base}?{query}")
    got = _shown_table(page)
    assert got == _served_table(index_path, query) and len(got[0]) == 10
    page.click("nav.pager a[rel='next']")
    page.wait_for_url(f"{base}?sort=max_act&order=desc&max_density=0.9&limit=10&offset=20")
    assert _shown_table(page) == _served_table(index_path, "sort=max_act&order=desc&max_density=0.9&limit=10&offset=20")
    page.reload()  # the state is the address: a reload shows the same rows
    assert _shown_table(page) == _served_table(index_path, "sort=max_act&order=desc&max_density=0.9&limit=10&offset=20")
    page.click("thead th >> nth=2 >> a")  # name score, ascending, back to the first rows
    page.wait_for_url(f"{base}?sort=name_score&max_density=0.9&limit=10")
    rows, _, _ = got = _shown_table(page)
    assert got == _served_table(index_path, "sort=name_score&max_density=0.9&limit=10")
    assert any(r[1].startswith("maybe ") for r in rows)  # weak names read as the server writes them
    assert page.get_attribute("thead th >> nth=2", "aria-sort") == "ascending"
    page.fill("form.table-filters input[name='label']", "triangle")
    page.fill("form.table-filters input[name='name']", "detector")
    page.click("form.table-filters button[type='submit']")
    page.wait_for_url(re.compile(r"label=triangle"))
    q = page.url.split("?", 1)[1]  # the form sends its empty fields too: both read them as unset
    assert "min_density=&" in q
    got = _shown_table(page)
    assert got == _served_table(index_path, q) and got[0] and all(r[8] == "triangle" for r in got[0])
    page.goto(f"{base}?cluster=999")
    assert _shown_table(page)[0] == [["No feature matches these filters."]]
    page.goto(f"{base}?sort=bogus")
    page.wait_for_selector("p.count[role='alert']")
    assert "sort: 'bogus' is not one of" in page.inner_text("p.count")


def test_search_filters_and_sort_in_the_browser(site_page, static_site, index_path):
    """Filtered and sorted searches list the server's features in the server's order, page by page."""
    page = site_page
    cases = [{"q": "detector", "sort": "max_act", "page": "2"}, {"q": "detector", "min_density": "0.3", "sort": "density"},
             {"q": "triangle", "label": "Triangle", "sort": "id"},
             {"q": "detector", "max_density": "0.95", "sort": "density", "page": "2"}]
    with TestClient(create_app(Settings(index=index_path, secret="s"))) as c:
        served = [[h["feature_id"] for h in c.get(f"/sae/{POOLED}/search.json", params=p).json()["data"]] for p in cases]
    shown = lambda: [int(x) for x in page.eval_on_selector_all("ol.results li", "ls => ls.map(l => l.dataset.feature)")]  # noqa: E731
    for params, want in zip(cases[:3], served[:3], strict=True):
        assert want
        page.goto(f"{static_site}/site/sae/{POOLED}/search/?" + "&".join(f"{k}={v}" for k, v in params.items()))
        page.wait_for_selector("body[data-search-done='true']")
        assert shown() == want, params
        assert page.input_value("form.search-filters select[name='sort']") == params["sort"]
    # the pager keeps the filters: page 2 of a filtered, sorted search, which survives a reload
    page.goto(f"{static_site}/site/sae/{POOLED}/search/?q=detector&max_density=0.95&sort=density")
    page.wait_for_selector("body[data-search-done='true']")
    page.click("nav.pager a[rel='next']")
    page.wait_for_url(re.compile(r"search/\?q=detector&max_density=0.95&sort=density&page=2$"))
    page.reload()
    page.wait_for_selector("body[data-search-done='true']")
    assert shown() == served[3] and served[3]
    assert page.input_value("form.search-filters input[name='max_density']") == "0.95"


@pytest.fixture(scope="module")
def pages_host(www):
    """The published folder served as GitHub Pages serves a project site: a missing address gets the
    site's 404.html with status 404 (python -m http.server answers with its own error text)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def send_error(self, code, message=None, explain=None):
            if code != 404:
                return super().send_error(code, message, explain)
            body = (www / "site" / "404.html").read_bytes()
            self.send_response(404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("missing", ["site/nothing-here", f"site/sae/{POOLED}/feature/9999/", f"site/sae/{POOLED}/features/x/y/z"])
def test_a_missing_page_shows_the_404_with_working_links(page, pages_host, missing):
    """From any depth: styled like the explorer's error page, and its home link reaches the site root."""
    resp = page.goto(f"{pages_host}/{missing}")
    assert resp.status == 404
    assert page.inner_text("h1") == "404 · Not found"
    assert page.evaluate("getComputedStyle(document.querySelector('header.top')).display") != "inline"  # app.css applied
    assert page.evaluate("[...document.styleSheets].some(s => s.href && s.href.endsWith('/app.css') && s.cssRules.length > 0)")
    page.click("main a >> text=all SAEs")
    page.wait_for_url(f"{pages_host}/site/")
    assert page.locator(f"a[href='sae/{POOLED}/']").count() >= 1
