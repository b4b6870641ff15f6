"""One list of addresses (app.urls.PATTERNS) for views, templates and JS (static/urls.js)."""

from __future__ import annotations

import json
import re

from make_fixture_index import POOLED

from app import urls
from app.render import STATIC_DPATH, static_url


def test_js_module_carries_the_python_patterns():
    text = (STATIC_DPATH / "urls.js").read_text()
    body = re.fullmatch(r"(?s)//[^\n]*\nexport const PATTERNS = (\{.*\});\n", text)
    assert body and json.loads(body.group(1)) == urls.PATTERNS


def test_urls_encode_each_segment_and_the_query():
    assert urls.feature("a b/c", 3) == "/sae/a%20b%2Fc/feature/3"
    assert urls.search_url(POOLED, "red car & co", 2, {"sort": "density"}) == \
        f"/sae/{POOLED}/search?q=red+car+%26+co&sort=density&page=2"
    assert urls.search_url(POOLED, "x") == f"/sae/{POOLED}/search?q=x"


def test_app_js_is_served_with_its_import(client):
    r = client.get(static_url("app.js"))
    assert r.status_code == 200 and "from './urls.js'" in r.text
    imported = static_url("app.js").rsplit("/", 1)[0] + "/urls.js"  # how the browser resolves './urls.js'
    assert client.get(imported).status_code == 200


def test_pages_link_through_the_patterns(client):
    html = client.get(f"/sae/{POOLED}/feature/1").text
    for name in ("sae", "dashboard", "game", "search"):
        assert f'="{urls.url(name, sae_id=POOLED)}"' in html, name


def test_no_template_or_script_builds_an_sae_address_by_hand():
    """Every /sae/ address comes from PATTERNS (urls.url in templates, url() in scripts)."""
    from app.render import TEMPLATES_DPATH

    hand = re.compile(r"""["'`]/sae/|['"]/sae/['"]""")
    offenders = [f"{p.name}:{i + 1}" for d, glob in ((TEMPLATES_DPATH, "*.html"), (STATIC_DPATH, "*.js"))
                 for p in sorted(d.glob(glob)) if p.name not in ("urls.js", "publish-search.js")
                 for i, line in enumerate(p.read_text().splitlines()) if hand.search(line)]
    assert offenders == []
