"""Response headers (nosniff, a CSP that fits the pages), bounded echo of the query string, and
no absolute source paths on sample pages."""

from __future__ import annotations

import re
import shutil

import duckdb
import pytest
from fastapi.testclient import TestClient
from make_fixture_index import IMG_DS, PATCH, POOLED, TEXT

from app.main import create_app
from app.render import static_url
from app.settings import Settings

PAGES = ["/", f"/sae/{POOLED}", f"/sae/{POOLED}/feature/1", f"/sae/{PATCH}/feature/2", f"/sae/{POOLED}/dashboard",
         f"/sae/{POOLED}/search?q=star", f"/sae/{POOLED}/sample/2", f"/sae/{POOLED}/game", f"/sae/{TEXT}/feature/1",
         "/nope", f"/sae/{POOLED}/feature/99999"]


def csp_of(r) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}


@pytest.mark.parametrize("url", [*PAGES, f"/sae/{POOLED}/feature/1.json", f"/thumb/{IMG_DS}/1.webp", "/health",
                                 f"/sae/{POOLED}/points/features.bin", "/thumb/nope/1.webp", "/openapi.json"])
def test_every_response_has_nosniff_and_csp(client, url):
    r = client.get(url)
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = csp_of(r)
    assert csp["script-src"] == ["'self'"] and csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in csp["style-src"] and "'unsafe-eval'" not in r.headers["content-security-policy"]
    assert {"data:", "blob:"} <= set(csp["img-src"]) and csp["connect-src"] == ["'self'"]


def test_static_files_have_csp_and_their_media_type(client):
    for name, kind in [("app.css", "text/css"), ("app.js", "text/javascript"), ("map.js", "text/javascript")]:
        r = client.get(static_url(name))
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert r.headers["x-content-type-options"] == "nosniff" and "etag" in r.headers


@pytest.mark.parametrize("url", PAGES)
def test_pages_have_no_inline_script_the_policy_would_block(client, url):
    """Every <script> is loaded from /static or is a JSON data block (never executed); no inline
    event handlers or javascript: links."""
    html = client.get(url).text
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert re.search(r'src="/static/', tag) or 'type="application/json"' in tag, (url, tag)
    assert not re.search(r"\son[a-z]+\s*=", html) and "javascript:" not in html.lower()


def test_query_string_is_not_echoed_unbounded(client):
    huge = "x" * 5000
    for url in [f"/sae/{POOLED}/feature/1?junk={huge}", f"/?a={huge}&" + "&".join(f"p{i}=1" for i in range(200))]:
        r = client.get(url)
        assert r.status_code == 200 and huge not in r.text and len(r.text) < 200_000
        twin = re.search(r'<link rel="alternate" type="application/json" href="([^"]+)"', r.text).group(1)
        assert len(twin) < 2500 and huge not in twin
    # short, ordinary parameters still carry over to the JSON twin
    html = client.get(f"/sae/{POOLED}/search", params={"q": "star", "page": 1}).text
    assert 'href="/sae/pooled-img/search.json?q=star&amp;page=1"' in html


@pytest.fixture(scope="module")
def abs_client(index_path, tmp_path_factory):
    """An index whose samples record absolute paths on the build machine."""
    path = tmp_path_factory.mktemp("abs") / "abs.duckdb"
    shutil.copy(index_path, path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE samples SET source = '/home/builder/secret-project/images/' || sample_id || '.png' "
                "WHERE dataset_id = ?", [IMG_DS])
    con.close()
    app = create_app(Settings(index=path, secret="abs"))
    with TestClient(app) as c:
        yield c


def test_sample_page_does_not_reveal_absolute_paths(abs_client, client):
    for c, want in ((abs_client, "2.png"), (client, "img/2.png")):  # relative paths (in the data root) stay
        j = c.get(f"/sae/{POOLED}/sample/2.json").json()
        assert j["source"] == want
        html = c.get(f"/sae/{POOLED}/sample/2").text
        assert want in html and "/home/builder" not in html and "secret-project" not in html


def test_the_generic_500_carries_the_headers_too(index_path, monkeypatch):
    import app.routes.features as routes

    def boom(*a, **k):
        raise RuntimeError("internals")

    monkeypatch.setattr(routes, "feature_view", boom)
    fresh = create_app(Settings(index=index_path, secret="t"))  # the shared app may answer these pages from its response cache
    c = TestClient(fresh, raise_server_exceptions=False)
    for url in (f"/sae/{POOLED}/feature/1", f"/sae/{POOLED}/feature/1.json"):
        r = c.get(url)
        assert r.status_code == 500 and r.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in r.headers["content-security-policy"]
