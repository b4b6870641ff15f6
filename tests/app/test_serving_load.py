"""Thumbnails and static files never queue behind page rendering (a real uvicorn server).

Before: the feature views were `async def` and did their DuckDB and rendering work on the event
loop, so one slow page held every thumbnail. Here feature pages are made to block until the
test releases them, more of them than the page thread pool holds; thumbnails, static files and
/health must still be answered meanwhile, and the pages must finish once released.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from make_fixture_index import IMG_DS, POOLED

import app.routes.features as feature_routes
from app.main import PAGE_THREADS, create_app
from app.render import static_url
from app.settings import Settings


@pytest.fixture
def blocking_server(index_path, monkeypatch):
    """One uvicorn worker whose feature views wait on `release`; yields (base url, release, entered)."""
    release, entered = threading.Event(), threading.Semaphore(0)
    real = feature_routes.feature_view

    def slow_view(*args, **kwargs):
        entered.release()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_routes, "feature_view", slow_view)
    app = create_app(Settings(index=index_path, secret="t"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield base, release, entered
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)


def test_thumbnails_and_static_are_served_while_pages_block(blocking_server):
    base, release, entered = blocking_server
    n_pages = PAGE_THREADS + 2  # more than the pool: some wait for a thread
    with concurrent.futures.ThreadPoolExecutor(n_pages) as pool:
        pages = [pool.submit(httpx.get, f"{base}/sae/{POOLED}/feature/{i}.json", timeout=60) for i in range(n_pages)]
        for _ in range(PAGE_THREADS):  # every page thread is now held inside a feature view
            assert entered.acquire(timeout=30)
        assert not any(p.done() for p in pages)
        # meanwhile the event loop answers everything that is not a page (a 5 s bound, not a timing claim)
        for i in range(10):
            r = httpx.get(f"{base}/thumb/{IMG_DS}/{i}.webp", timeout=5)
            assert r.status_code == 200 and r.headers["content-type"] == "image/webp" and r.content[:4] == b"RIFF"
        r = httpx.get(base + static_url("app.css"), timeout=5)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        assert not any(p.done() for p in pages)  # the pages really were still blocked
        release.set()
        assert [p.result().status_code for p in pages] == [200] * n_pages
