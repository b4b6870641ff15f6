"""Error paths: 404/422 pages in HTML or JSON, traversal, XSS escaping, no tracebacks, bad indexes."""

from __future__ import annotations

import shutil

import duckdb
import pytest
from fastapi.testclient import TestClient
from make_fixture_index import IMG_DS, POOLED, XSS

from app.errors import IndexSchemaError
from app.main import create_app
from app.settings import Settings
from sae_core.contract import SCHEMA_VERSION


@pytest.mark.parametrize("url", ["/sae/nope", "/sae/nope/feature/1", f"/sae/{POOLED}/feature/9999",
                                 f"/sae/{POOLED}/sample/123456", "/no/such/page", f"/thumb/{IMG_DS}/999.webp",
                                 "/thumb/unknown-ds/1.webp"])
def test_404_html_and_json(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html") and "404" in r.text
    r = client.get(url, headers={"accept": "application/json"})
    assert r.status_code == 404 and r.json()["status"] == 404


def test_404_json_by_suffix_names_the_thing(client):
    r = client.get("/sae/nope/feature/1.json")
    assert r.status_code == 404 and r.json()["message"] == "No SAE named 'nope' in this index."
    r = client.get(f"/sae/{POOLED}/feature/9999.json")
    assert "no feature 9999" in r.json()["message"]


@pytest.mark.parametrize("url, field", [
    (f"/sae/{POOLED}/feature/abc", "fid"), (f"/sae/{POOLED}/feature/-1", "fid"),
    (f"/sae/{POOLED}/feature/99999999999", "fid"), (f"/sae/{POOLED}/search?q=x&page=0", "page"),
    (f"/sae/{POOLED}/features.json?ids=1,a", "ids"), (f"/sae/{POOLED}/features.json?ids=5-1", "ids"),
    (f"/sae/{POOLED}/game/answer?pick=1", "token"), (f"/sae/{POOLED}/game/answer.json?token=zz&pick=1", "token"),
    (f"/sae/{POOLED}/search.json?q={'x' * 300}", "q"), (f"/sae/{POOLED}/feature/random?seed=-3", "seed"),
])
def test_422_clear_message(client, url, field):
    from app.errors import PARAM_NAMES

    name = PARAM_NAMES.get(field, field)  # messages say "feature id", detail keeps the code name
    r = client.get(url)
    assert r.status_code == 422, r.text
    if url.split("?")[0].endswith(".json") or "features.json" in url:
        assert name in r.json()["message"]
    else:
        assert name in r.text and "Invalid parameter" in r.text
    j = client.get(url, headers={"accept": "application/json"}).json()
    assert j["status"] == 422 and name in j["message"]
    assert field in [d["loc"] for d in j.get("detail", [{"loc": field}])]


@pytest.mark.parametrize("path", ["/thumb/..%2F..%2Fetc/passwd.webp", "/thumb/../../etc/passwd",
                                  f"/thumb/{IMG_DS}/..%2F..%2Ffixture.duckdb", f"/thumb/{IMG_DS}/-1.webp",
                                  f"/thumb/{IMG_DS}/1.webp%00", "/thumb/%2E%2E/1.webp",
                                  f"/thumb/{IMG_DS}/%2e%2e%2ffixture.webp", "/static/x/../../app/main.py",
                                  "/static/abc/..%2F..%2Fapp%2Fmain.py"])
def test_no_path_traversal(client, path):
    r = client.get(path)
    assert r.status_code in (404, 422)
    assert b"root:" not in r.content and b"DUCK" not in r.content and b"create_app" not in r.content


def test_xss_is_escaped_everywhere(client):
    pages = [f"/sae/{POOLED}/sample/7", f"/sae/{POOLED}/search?q=script", f"/sae/{POOLED}/feature/5",
             "/sae/text-sae/sample/4", f"/sae/{POOLED}/search?q=%3Cscript%3E"]
    for url in pages:
        html = client.get(url).text
        assert XSS not in html, url
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/sae/{POOLED}/sample/7").text
    assert "&lt;script&gt;" in client.get(f"/sae/{POOLED}/feature/5").text
    # the JSON twin carries the raw string (JSON is not HTML)
    assert client.get(f"/sae/{POOLED}/sample/7.json").json()["sample"]["caption"] == f"a {XSS} shape"
    # error pages escape what the user typed
    r = client.get("/sae/<script>alert(1)<%2Fscript>")
    assert r.status_code == 404 and "<script>alert" not in r.text


def test_unexpected_error_is_a_generic_500(index_path, monkeypatch):
    import app.routes.features as routes

    def boom(*a, **k):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(routes, "feature_view", boom)
    fresh = create_app(Settings(index=index_path, secret="t"))  # the shared app may answer these pages from its response cache
    c = TestClient(fresh, raise_server_exceptions=False)
    for url, kind in [(f"/sae/{POOLED}/feature/1", "text/html"), (f"/sae/{POOLED}/feature/1.json", "application/json")]:
        r = c.get(url)
        assert r.status_code == 500 and r.headers["content-type"].startswith(kind)
        assert "secret internals" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text


def test_wrong_schema_version_fails_at_startup(tmp_path, index_path):
    path = tmp_path / "v2.duckdb"
    shutil.copy(index_path, path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_version SET version = 99")
    con.close()
    with pytest.raises(IndexSchemaError, match=f"schema_version 99; this app reads version {SCHEMA_VERSION}"):
        create_app(Settings(index=path))
    con = duckdb.connect(str(path))  # a hand-made table with a text version: refused, not a TypeError
    con.execute("ALTER TABLE schema_version ALTER version TYPE VARCHAR")
    con.execute("UPDATE schema_version SET version = 'four'")
    con.close()
    with pytest.raises(IndexSchemaError, match="schema_version four"):
        create_app(Settings(index=path))


def test_not_an_index_fails_at_startup(tmp_path):
    missing = tmp_path / "nope.duckdb"
    with pytest.raises(IndexSchemaError, match="not found"):
        create_app(Settings(index=missing))
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(IndexSchemaError, match="no schema_version table"):
        create_app(Settings(index=empty))
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexSchemaError, match="cannot open index"):
        create_app(Settings(index=junk))


def test_connection_is_read_only_and_locked(app):
    cur = app.state.index.cursor()
    with pytest.raises(duckdb.Error):
        cur.execute("CREATE TABLE x (a INTEGER)")
    with pytest.raises(duckdb.Error):
        cur.execute("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(duckdb.Error):
        cur.execute("SET enable_external_access = true")


@pytest.mark.parametrize("url", ["/sae/{sae}/search.json?q=%C2%B2", "/sae/{sae}/features.json?ids=%C2%B2",
                                 "/sae/{sae}/features.json?ids=1-%C2%B2", "/sae/{sae}/features.json?ids=2147483648"])
def test_odd_numbers_are_422_not_500(client, url):
    from make_fixture_index import POOLED

    r = client.get(url.format(sae=POOLED))
    assert r.status_code in (200, 422), r.text
    assert "Traceback" not in r.text
