"""A reduced demo through every stage (extract -> train -> index) into a temporary folder,
then the explorer served from a real uvicorn process answers with real features."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from precompute.demo import build_demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_index(small_demo):
    return small_demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def test_demo_builds_two_real_saes_and_is_idempotent(demo_index):
    cfg, index = demo_index
    import duckdb

    con = duckdb.connect(str(index), read_only=True)
    saes = con.execute("SELECT sae_id, token_selection, grid_h, n_samples, l0 FROM saes ORDER BY sae_id").fetchall()
    assert len(saes) == 2 and {s[1] for s in saes} == {"pooled", "patches"}
    assert all(s[3] == 96 for s in saes)
    assert any(s[2] == 4 for s in saes)  # the patch SAE has a 4x4 grid for heatmaps
    named = con.execute("SELECT count(*) FROM features WHERE n_fired > 0 AND name <> ''").fetchone()[0]
    assert named > 50
    mtime = index.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_demo(cfg) == index
    assert time.perf_counter() - t0 < 30 and index.stat().st_mtime_ns == mtime


def test_served_explorer_answers_with_real_features(demo_index):
    _, index = demo_index
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "precompute.cli", "serve", str(index), "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):  # `serve` also starts the live worker
            try:
                _get(base + "/health")
                break
            except OSError:
                time.sleep(0.1)
        status, body = _get(base + "/index.json")
        saes = json.loads(body)["data"]
        assert status == 200 and len(saes) == 2
        sae_id = saes[0]["sae_id"]
        status, body = _get(f"{base}/sae/{sae_id}/search.json?q=face")
        assert status == 200
        hits = json.loads(body)["data"]
        assert hits, "some feature of emoji faces is named after them"
        fid = hits[0]["feature_id"]
        status, body = _get(f"{base}/sae/{sae_id}/feature/{fid}.json")
        feature = json.loads(body)
        assert status == 200 and feature["top"]
        status, thumb = _get(base + feature["top"][0]["thumb_url"])
        assert status == 200 and thumb[:4] == b"RIFF"
        status, html = _get(f"{base}/sae/{sae_id}/feature/{fid}")
        assert status == 200 and b"<img" in html
    finally:
        proc.terminate()
        proc.wait(10)
