"""The index file changing under a running server (real uvicorn, 2 workers).

Before: an atomically replaced index kept the deleted file served until a restart, a restarted
worker made the same URL alternate 404/200, and an in-place overwrite gave 500s while /health
said ok. Now every worker switches, a bad file is refused while the last good one serves, and
/health tells which index is served and whether the file on disk is fine.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from live_servers import free_port, health_hashes, start_serve, wait_for
from make_fixture_index import POOLED, TEXT, build_fixture_index


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> tuple[Path, Path]:
    """Index A (the fixture) and index B (another inputs_hash, without the text SAE)."""
    a = build_fixture_index(tmp_path_factory.mktemp("reload-a"))
    b = a.parent / "b.duckdb"
    shutil.copy(a, b)
    con = duckdb.connect(str(b))
    con.execute("UPDATE index_meta SET value = 'fixture-B' WHERE key = 'inputs_hash'")
    con.execute("DELETE FROM saes WHERE sae_id = ?", [TEXT])
    con.execute("CHECKPOINT")
    con.close()
    return a, b


@pytest.fixture
def served(tmp_path, indexes):
    """A 2-worker server on a copy of index A; yields (base url, served path)."""
    path = tmp_path / "served.duckdb"
    shutil.copy(indexes[0], path)
    port = free_port()
    proc = start_serve(path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: health_hashes(base, 6) == {"fixture-inputs"}, "server did not start")
        yield base, path
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)  # a new connection each time, so both workers answer


class Traffic:
    """Requests a feature page in a loop from another thread; records every status code."""

    def __init__(self, url: str) -> None:
        self.url, self.codes, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.codes.append(_get(self.url).status_code)
            except httpx.TransportError:
                self.codes.append(-1)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _replace_atomically(src: Path, dst: Path, n_bytes: int | None = None) -> None:
    tmp = dst.with_suffix(".part")
    tmp.write_bytes(src.read_bytes()[:n_bytes])
    os.replace(tmp, dst)


def test_atomic_replace_switches_every_worker_without_dropping_requests(served, indexes):
    base, path = served
    assert _get(f"{base}/sae/{TEXT}.json").status_code == 200
    with Traffic(f"{base}/sae/{POOLED}/feature/3.json") as traffic:
        time.sleep(0.3)
        _replace_atomically(indexes[1], path)
        wait_for(lambda: health_hashes(base, 8) == {"fixture-B"}, "workers did not switch to the new index")
        time.sleep(0.3)
    assert traffic.codes and set(traffic.codes) == {200}
    # every worker serves B now: the SAE B lacks is a 404 on every request, never 200 from a stale worker
    assert {_get(f"{base}/sae/{TEXT}.json").status_code for _ in range(12)} == {404}
    health = _get(f"{base}/health").json()
    assert health["status"] == "ok" and health["n_saes"] == 2 and health["problem"] is None


def test_half_copied_file_is_refused_and_the_last_good_one_serves(served, indexes):
    base, path = served
    _replace_atomically(indexes[1], path, n_bytes=indexes[1].stat().st_size // 2)

    def all_unhealthy() -> bool:
        rs = [_get(f"{base}/health") for _ in range(8)]
        return all(r.status_code == 503 for r in rs)

    wait_for(all_unhealthy, "a half-copied index was not reported")
    health = _get(f"{base}/health").json()
    assert health["status"] == "unhealthy" and "incomplete" in health["problem"]
    assert health["inputs_hash"] == "fixture-inputs" and health["n_saes"] == 3  # still the last good index
    assert {_get(f"{base}/sae/{TEXT}.json").status_code for _ in range(8)} == {200}
    _replace_atomically(indexes[1], path)  # the copy, done right, is taken
    wait_for(lambda: health_hashes(base, 8) == {"fixture-B"}, "the complete file was not taken")
    assert {_get(f"{base}/health").status_code for _ in range(8)} == {200}


def test_not_an_index_is_refused(served, tmp_path):
    base, path = served
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database" * 1000)
    os.replace(junk, path)
    wait_for(lambda: all(_get(f"{base}/health").status_code == 503 for _ in range(8)), "junk file not reported")
    assert "cannot open index" in _get(f"{base}/health").json()["problem"]
    assert _get(f"{base}/sae/{POOLED}/feature/3.json").status_code == 200


def test_in_place_overwrite_never_gives_500(served, indexes):
    """Rewriting the same inode destroys the bytes being served: requests may get 503 while it is
    torn, never 500, and /health is not 'ok' about a file it cannot read; then B is served."""
    base, path = served
    data = indexes[1].read_bytes()
    with Traffic(f"{base}/sae/{POOLED}/feature/5.json") as traffic:
        time.sleep(0.3)
        with open(path, "r+b") as f:  # same inode, like `cp new.duckdb served.duckdb`
            f.truncate(0)
            for i in range(0, len(data), 1 << 16):
                f.write(data[i:i + (1 << 16)])
                f.flush()
                time.sleep(0.01)
        wait_for(lambda: health_hashes(base, 8) == {"fixture-B"}, "workers did not switch after the overwrite")
    assert traffic.codes and set(traffic.codes) <= {200, 503}
    assert 500 not in traffic.codes
    assert {_get(f"{base}/sae/{POOLED}/feature/5.json").status_code for _ in range(8)} == {200}


def test_caches_are_dropped_with_the_old_index(tmp_path, indexes):
    """Cached views (feature pages, map points, SAE rows) belong to the index they came from."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    path = tmp_path / "served.duckdb"
    shutil.copy(indexes[0], path)
    changed = tmp_path / "changed.duckdb"
    shutil.copy(indexes[0], changed)
    con = duckdb.connect(str(changed))
    con.execute("UPDATE index_meta SET value = 'fixture-C' WHERE key = 'inputs_hash'")
    con.execute("UPDATE feature_page SET page = json_merge_patch(page, '{\"feature\": {\"name\": \"renamed\"}}') "
                "WHERE sae_id = ? AND feature_id = 3", [POOLED])
    con.execute("UPDATE features SET x = x + 100 WHERE sae_id = ?", [POOLED])
    con.execute("CHECKPOINT")
    con.close()
    app = create_app(Settings(index=path, secret="t"))
    with TestClient(app) as c:
        before = c.get(f"/sae/{POOLED}/feature/3.json").json()["feature"]["name"]
        points = c.get(f"/sae/{POOLED}/points/features.bin").content
        assert before != "renamed"
        os.replace(changed, path)
        wait_for(lambda: c.get("/health").json()["inputs_hash"] == "fixture-C", "the app did not reload")
        assert c.get(f"/sae/{POOLED}/feature/3.json").json()["feature"]["name"] == "renamed"
        assert c.get(f"/sae/{POOLED}/points/features.bin").content != points
        assert app.state.index.inputs_hash == "fixture-C"
