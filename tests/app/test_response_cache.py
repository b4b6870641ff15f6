"""The response cache (app.response_cache): repeats of a feature page cost no view call, ETags
answer revalidation with 304, nothing but opted-in 200s is kept, and a replaced index is served
at once by every worker of a real uvicorn server, old ETags included."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import httpx
import pytest
from fastapi.testclient import TestClient
from live_servers import free_port, health_hashes, start_serve, wait_for
from make_fixture_index import POOLED, build_fixture_index

import app.response_cache as rc
import app.routes.features as feature_routes
from app.db import Index
from app.main import create_app
from app.settings import Settings

WAIT_S = 30.0  # upper bound for waiting on a server, never a timing assertion


@pytest.fixture
def counted(index_path, monkeypatch):
    """A fresh app whose feature views count their calls; yields (client, calls)."""
    calls: list[int] = []
    real = feature_routes.feature_view

    def view(db, sae, fid):
        calls.append(fid)
        return real(db, sae, fid)

    monkeypatch.setattr(feature_routes, "feature_view", view)
    with TestClient(create_app(Settings(index=index_path, secret="t"))) as c:
        yield c, calls


def test_a_repeated_page_is_served_from_the_cache(counted):
    c, calls = counted
    for url in (f"/sae/{POOLED}/feature/3", f"/sae/{POOLED}/feature/3.json"):
        first, second = c.get(url), c.get(url)
        assert first.status_code == second.status_code == 200
        assert first.content == second.content and first.headers["etag"] == second.headers["etag"]
        assert first.headers["content-type"] == second.headers["content-type"]
        assert second.headers["cache-control"] == "no-cache" and second.headers["x-content-type-options"] == "nosniff"
        assert "x-saescope-cacheable" not in second.headers
    assert calls == [3, 3]  # once per URL: the page and its JSON twin
    assert c.get(f"/sae/{POOLED}/feature/3.json?x=1").status_code == 200 and calls == [3, 3, 3]  # another URL, another entry


def test_if_none_match_is_a_304_without_work(counted):
    c, calls = counted
    url = f"/sae/{POOLED}/feature/4.json"
    tag = c.get(url).headers["etag"]
    r = c.get(url, headers={"If-None-Match": tag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag
    assert c.get(url, headers={"If-None-Match": f'"other", W/{tag}'}).status_code == 304  # lists and weak tags
    assert c.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200
    assert c.get(f"/sae/{POOLED}/feature/5.json", headers={"If-None-Match": tag}).status_code == 200  # the tag names its URL
    assert calls == [4, 5]
    assert c.head(url).status_code == 200 and c.head(url).content == b""


def test_a_restart_with_other_page_settings_changes_the_tag(index_path):
    """Settings shape pages (search page size): a browser revalidating after a restart with another
    --page-size must get the new page, not a 304 for the old one; the secret is not part of it."""
    url = f"/sae/{POOLED}/feature/4.json"
    tags = []
    for settings in (Settings(index=index_path, secret="t"), Settings(index=index_path, secret="other"),
                     Settings(index=index_path, secret="t", page_size=7)):
        with TestClient(create_app(settings)) as c:
            tags.append(c.get(url).headers["etag"])
    assert tags[0] == tags[1] != tags[2]


def test_only_marked_successes_are_kept(counted):
    c, calls = counted
    missing = f"/sae/{POOLED}/feature/999999.json"
    assert [c.get(missing).status_code for _ in range(2)] == [404, 404]
    assert "etag" not in c.get(missing).headers and len(calls) == 3  # errors are never cached
    nothing = c.get(f"/sae/{POOLED}/search?q=999999")  # a missing feature id: the search page with a 404
    assert nothing.status_code == 404 and "etag" not in nothing.headers


def test_search_is_cached_only_without_a_live_worker(index_path, monkeypatch):
    """With a worker configured, results may add its answers by meaning, which come and go."""
    import app.routes.search as search_routes

    calls: list[str] = []
    real = search_routes.search_view

    def view(db, sae, q, *args):
        calls.append(q)
        return real(db, sae, q, *args)

    monkeypatch.setattr(search_routes, "search_view", view)
    for live_url, n_calls in ((None, 1), ("http://127.0.0.1:9", 2)):
        calls.clear()
        with TestClient(create_app(Settings(index=index_path, secret="t", live_url=live_url))) as c:
            for url in (f"/sae/{POOLED}/search.json?q=red", f"/sae/{POOLED}/search?q=red"):
                a, b = c.get(url), c.get(url)
                assert a.status_code == b.status_code == 200 and a.content == b.content
                assert ("etag" in b.headers) == (live_url is None)
        assert calls == ["red"] * 2 * n_calls, live_url


def test_bodies_over_the_entry_limit_are_served_not_kept(counted, monkeypatch):
    c, calls = counted
    monkeypatch.setattr(rc, "MAX_ENTRY", 100)
    url = f"/sae/{POOLED}/feature/6"
    assert len(c.get(url).content) > 100 and c.get(url).status_code == 200
    assert calls == [6, 6]


def test_lru_is_bounded_by_bytes():
    lru = rc.ResponseLru(max_bytes=10)
    lru.put(("/a", b""), [], b"1234")
    lru.put(("/b", b""), [], b"1234")
    assert lru.get(("/a", b"")) is not None  # /a is now the most recent
    lru.put(("/c", b""), [], b"1234")  # 12 bytes > 10: the least recent (/b) goes
    assert lru.get(("/b", b"")) is None and len(lru) == 2 and lru.n_bytes == 8
    lru.put(("/a", b""), [], b"123456")  # replacing an entry re-counts it
    assert lru.n_bytes == 10 and len(lru) == 2


def test_code_digest_follows_the_files(tmp_path):
    for d in rc.CODE_DPATHS:
        (tmp_path / d).mkdir()
    (tmp_path / "templates" / "page.html").write_text("v1")
    before = rc.code_digest(tmp_path)
    assert rc.code_digest(tmp_path) == before
    (tmp_path / "templates" / "page.html").write_text("v2 longer")
    assert rc.code_digest(tmp_path) != before


def _name_of(base: str, fid: int) -> str:
    return httpx.get(f"{base}/sae/{POOLED}/feature/{fid}.json", timeout=10).json()["feature"]["name"]


def test_a_replaced_index_is_served_by_every_worker_cache_or_not(tmp_path):
    """Real uvicorn, 2 workers, the cached page requested many times on each; then the file is
    replaced atomically with one whose feature 3 has another name: every worker serves the new
    page, the old ETag no longer gets a 304, and the new one does."""
    served = build_fixture_index(tmp_path / "a")
    changed = tmp_path / "changed.duckdb"
    shutil.copy(served, changed)
    with duckdb.connect(str(changed)) as con:
        con.execute("UPDATE index_meta SET value = 'fixture-renamed' WHERE key = 'inputs_hash'")
        con.execute("UPDATE feature_page SET page = json_merge_patch(page, '{\"feature\": {\"name\": \"renamed\"}}') "
                    "WHERE sae_id = ? AND feature_id = 3", [POOLED])
        con.execute("CHECKPOINT")
    port = free_port()
    proc = start_serve(served, port)
    base, url = f"http://127.0.0.1:{port}", f"/sae/{POOLED}/feature/3.json"
    try:
        wait_for(lambda: health_hashes(base, 8) == {"fixture-inputs"}, "server did not start")
        old = {_name_of(base, 3) for _ in range(12)}
        old_tag = httpx.get(base + url, timeout=10).headers["etag"]
        assert old != {"renamed"} and len(old) == 1
        assert httpx.get(base + url, headers={"If-None-Match": old_tag}, timeout=10).status_code == 304
        os.replace(changed, served)
        wait_for(lambda: health_hashes(base, 8) == {"fixture-renamed"}, "workers did not switch to the new index")
        assert {_name_of(base, 3) for _ in range(12)} == {"renamed"}
        r = httpx.get(base + url, headers={"If-None-Match": old_tag}, timeout=10)
        assert r.status_code == 200 and r.json()["feature"]["name"] == "renamed" and r.headers["etag"] != old_tag
        assert httpx.get(base + url, headers={"If-None-Match": r.headers["etag"]}, timeout=10).status_code == 304
        html = httpx.get(f"{base}/sae/{POOLED}/feature/3", timeout=10)
        assert html.status_code == 200 and "renamed" in html.text
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_concurrent_callers_of_one_key_wait_for_one_make(index_path):
    """The same search from several clients at once is made once; the others get its result."""
    db = Index(index_path)
    started, release, calls = threading.Event(), threading.Event(), []

    def make():
        calls.append(1)
        started.set()
        assert release.wait(WAIT_S)
        return object()

    try:
        with ThreadPoolExecutor(6) as pool:
            first = pool.submit(db.cached, "k", make)
            assert started.wait(WAIT_S)
            others = [pool.submit(db.cached, "k", make) for _ in range(5)]
            time.sleep(0.2)  # let them reach the wait (the count below holds either way)
            release.set()
            values = {id(f.result(WAIT_S)) for f in [first, *others]}
        assert calls == [1] and len(values) == 1
        assert db.cached("k", make) is first.result() and calls == [1]
    finally:
        db.close()


def test_a_failed_make_reaches_every_waiter_and_is_not_kept(index_path):
    db = Index(index_path)
    started, release, calls = threading.Event(), threading.Event(), []

    def failing():
        calls.append(1)
        started.set()
        assert release.wait(WAIT_S)
        raise LookupError("no such thing")

    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(db.cached, "k", failing)
            assert started.wait(WAIT_S)
            others = [pool.submit(db.cached, "k", failing) for _ in range(3)]
            time.sleep(0.2)
            release.set()
            for f in [first, *others]:
                with pytest.raises(LookupError, match="no such thing"):
                    f.result(WAIT_S)
        assert calls == [1]
        assert db.cached("k", lambda: 7) == 7  # not cached: the next caller makes it again
        assert db.cached("r", lambda: db.cached("r", lambda: 3) + 1) == 4  # a make asking for its own key does not hang
    finally:
        db.close()


def test_a_thumbnail_the_client_has_is_a_304(client):
    from make_fixture_index import IMG_DS

    r = client.get(f"/thumb/{IMG_DS}/3.webp")
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    again = client.get(f"/thumb/{IMG_DS}/3.webp", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]
    assert client.get(f"/thumb/{IMG_DS}/4.webp", headers={"If-None-Match": r.headers["etag"]}).status_code == 200
