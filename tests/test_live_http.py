"""Live inspection and steering through real uvicorn servers: a `saescope worker` and the explorer.

Results equal the index for dataset samples; every bad input is a short 4xx/503 with a message;
a worker that is down, busy or dies mid-request leaves the rest of the explorer working.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import duckdb
import httpx
import pytest
from live_servers import explorer, worker
from PIL import Image


@pytest.fixture(scope="module")
def servers(small_demo, tmp_path_factory):
    _, index = small_demo
    logs = tmp_path_factory.mktemp("live-logs")
    with worker(index, logs) as (wurl, wproc), explorer(index, logs, wurl, {"SAESCOPE_LIVE_CONNECT_GRACE_S": "0"}) as (aurl, _):
        yield {"index": index, "worker": wurl, "app": aurl, "wproc": wproc, "logs": logs}


@pytest.fixture(scope="module")
def saes(small_demo):
    _, index = small_demo
    with duckdb.connect(str(index), read_only=True) as con:
        rows = con.execute("SELECT sae_id, grid_h FROM saes").fetchall()
    return {"pooled": next(s for s, g in rows if g is None), "patch": next(s for s, g in rows if g)}


def _png(i: int = 30) -> bytes:
    from precompute.sources import EmojiSource

    buf = io.BytesIO()
    EmojiSource(limit=100).load(i).save(buf, format="PNG")
    return buf.getvalue()


def _post(servers, path, **kw):
    return httpx.post(servers["app"] + path, timeout=60, **kw)


def test_inspect_sample_matches_index_both_saes_one_request(servers, saes):
    r = _post(servers, f"/sae/{saes['patch']}/inspect.json", data={"sample_id": "17", "with": saes["pooled"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [res["sae"]["sae_id"] for res in body["results"]] == [saes["patch"], saes["pooled"]]
    with duckdb.connect(str(servers["index"]), read_only=True) as con:
        for res in body["results"]:
            stored = con.execute("SELECT feature_id, activation FROM sample_top WHERE sae_id = ? AND sample_id = 17 ORDER BY rank",
                                 [res["sae"]["sae_id"]]).fetchall()
            live = [(f["feature_id"], f["activation"]) for f in res["features"][: len(stored)]]
            assert [f for f, _ in live] == [f for f, _ in stored]
            assert all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(live, stored))
    main = body["results"][0]
    assert body["grid"] == [4, 4] and main["grid"] == [4, 4]
    top = main["features"][0]
    assert len(top["heatmap"]) == 16 and max(top["heatmap"]) == pytest.approx(top["activation"])
    assert top["url"] == f"/sae/{saes['patch']}/feature/{top['feature_id']}"
    assert 0 < top["relative"] <= 1.0001 and top["title"] and top["thumbs"]


def test_upload_and_region(servers, saes):
    files = {"image": ("dog.png", _png(), "image/png")}
    whole = _post(servers, f"/sae/{saes['patch']}/inspect.json", files=files).json()
    assert whole["input"]["kind"] == "image" and whole["features"]
    region = _post(servers, f"/sae/{saes['patch']}/inspect.json", files=files, data={"region": "0,1,4,5"}).json()
    assert region["results"][0]["region"] == [0, 1, 4, 5]
    # ranking within the region = each feature's max over those cells of its heatmap on the whole image
    maps = {f["feature_id"]: f["heatmap"] for f in whole["features"]}
    for f in region["features"][:5]:
        if f["feature_id"] in maps:
            assert f["activation"] == pytest.approx(max(maps[f["feature_id"]][c] for c in (0, 1, 4, 5)), rel=1e-5)
    acts = [f["activation"] for f in region["features"]]
    assert acts == sorted(acts, reverse=True)


def test_steer_json_body_and_form(servers, saes):
    with duckdb.connect(str(servers["index"]), read_only=True) as con:
        fid = con.execute("SELECT feature_id FROM features WHERE sae_id = ? ORDER BY max_act DESC LIMIT 1", [saes["pooled"]]).fetchone()[0]
    body = {"sample_id": 5, "edits": [{"feature_id": fid, "op": "add", "value": 4}], "units": "max"}
    r = httpx.post(f"{servers['app']}/sae/{saes['pooled']}/steer.json", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out["before"]) == set(out["after"]) == {"classes", "neighbors", "features"}
    assert out["before"]["classes"] != out["after"]["classes"]
    assert out["after"]["features"][0]["activation"] > out["before"]["features"][0]["activation"]
    assert out["before"]["neighbors"][0]["sample_id"] == 5 and out["before"]["neighbors"][0]["thumb_url"]
    empty = _post(servers, f"/sae/{saes['patch']}/steer.json", data={"sample_id": "5", "edits": "[]"}).json()
    assert empty["before"] == empty["after"]


def _bomb_png(w: int = 30000, h: int = 30000) -> bytes:
    """A tiny PNG whose header claims w x h pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"files": {"image": ("a.txt", b"hello, not an image", "text/plain")}}, 400, "not an image"),
    ({"files": {"image": ("a.png", b"", "image/png")}}, 400, "empty"),
    ({"files": {"image": ("a.png", _png()[:200], "image/png")}}, 400, "truncated"),
    ({"files": {"image": ("bomb.png", _bomb_png(), "image/png")}}, 413, "MP"),
    ({"data": {"text": "   "}}, 400, "empty"),
    ({"data": {"text": "x" * 2001}}, 422, "2000"),
    ({"data": {"text": "a dog"}}, 422, "image inputs"),
    ({"data": {"sample_id": "100000"}}, 404, "does not exist"),
    ({"data": {"sample_id": "3", "text": "both"}}, 422, "exactly one"),
    ({"data": {"sample_id": "3", "region": "99"}}, 422, "outside"),
    ({"data": {"sample_id": "3", "with": "nope"}}, 422, "not an SAE"),
])
def test_bad_inspect_input(servers, saes, payload, status, words):
    r = _post(servers, f"/sae/{saes['patch']}/inspect.json", **payload)
    assert r.status_code == status, r.text
    msg = r.json()["message"]
    assert words in msg and "Traceback" not in msg and len(msg) < 300


@pytest.mark.parametrize(("edits", "extra", "status", "words"), [
    ('[{"feature_id": 99999, "op": "add", "value": 1}]', {}, 400, "does not exist"),
    ('[{"feature_id": 1, "op": "add", "value": "NaN"}]', {}, 400, "finite"),
    ('[{"feature_id": 1, "op": "boost", "value": 1}]', {}, 400, "op"),
    ("not json", {}, 400, "JSON"),
    (json.dumps([{"feature_id": 1, "op": "add", "value": 1}] * 65), {}, 400, "at most"),
    ('[{"feature_id": 1, "op": "add", "value": 1}]', {"patches": "16"}, 422, "outside"),
    ('[{"feature_id": 1, "op": "add", "value": 1}]', {"targets": "logits"}, 400, "target"),
])
def test_bad_steer_input(servers, saes, edits, extra, status, words):
    r = _post(servers, f"/sae/{saes['patch']}/steer.json", data={"sample_id": "3", "edits": edits, **extra})
    assert r.status_code == status, r.text
    assert words in r.json()["message"]


def test_pooled_sae_has_no_patches_and_unknown_sae_404(servers, saes):
    r = _post(servers, f"/sae/{saes['pooled']}/steer.json", data={"sample_id": "3", "patches": "0"})
    assert r.status_code == 422 and "no patches" in r.json()["message"]
    assert _post(servers, "/sae/nope/inspect.json", data={"sample_id": "1"}).status_code == 404


def test_upload_over_the_size_limit(servers, saes):
    big = b"\x89PNG" + b"\0" * (21 * 2**20)
    r = _post(servers, f"/sae/{saes['patch']}/inspect.json", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "MB" in r.json()["message"]


def test_worker_survives_a_failing_request_and_pages_render(servers, saes):
    r = _post(servers, f"/sae/{saes['patch']}/inspect.json", files={"image": ("x", b"\xff\xd8\xff\xe0garbage", "image/jpeg")})
    assert r.status_code == 400
    assert _post(servers, f"/sae/{saes['patch']}/inspect.json", data={"sample_id": "2"}).status_code == 200
    page = httpx.get(f"{servers['app']}/sae/{saes['patch']}/inspect?sample_id=2", timeout=30)
    assert page.status_code == 200 and "live worker ready" in page.text and 'data-sample="2"' in page.text
    twin = httpx.get(f"{servers['app']}/sae/{saes['patch']}/inspect.json", timeout=30).json()
    assert twin["live"]["ok"] and [s["sae_id"] for s in twin["same_model"]] == [saes["pooled"]]


def test_openapi_documents_the_live_twins(servers):
    spec = httpx.get(servers["app"] + "/openapi.json", timeout=10).json()
    for path in ("/sae/{sae_id}/inspect.json", "/sae/{sae_id}/steer.json"):
        assert "post" in spec["paths"][path]
    body = spec["paths"]["/sae/{sae_id}/inspect.json"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body


def test_busy_worker_answers_503_with_retry_after(small_demo, saes, tmp_path):
    _, index = small_demo
    with worker(index, tmp_path, "--queue", "1", "--max-batch", "1") as (wurl, _):
        def hit(i):
            return httpx.post(f"{wurl}/inspect", data={"sae_id": saes["patch"], "sample_id": str(i % 90)}, timeout=60)
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(hit, range(24)))
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
    busy = next(r for r in results if r.status_code == 503)
    assert busy.headers["retry-after"] and "busy" in busy.json()["detail"]


def test_worker_down_or_dying_leaves_the_explorer_working(small_demo, saes, tmp_path):
    _, index = small_demo
    # a "worker" that accepts the connection and dies before answering (a crash mid-request)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]

    def die():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=die, daemon=True).start()
    env = {"SAESCOPE_LIVE_CONNECT_GRACE_S": "0"}
    try:
        with explorer(index, tmp_path, f"http://127.0.0.1:{port}", env) as (aurl, _):
            r = httpx.post(f"{aurl}/sae/{saes['patch']}/inspect.json", data={"sample_id": "1"}, timeout=30)
            assert r.status_code == 503 and "not reachable" in r.json()["message"]
            assert httpx.get(f"{aurl}/sae/{saes['patch']}/feature/0", timeout=30).status_code == 200
    finally:
        sock.close()
    with explorer(index, tmp_path, "http://127.0.0.1:9", env) as (aurl, _):  # nothing listens on port 9
        page = httpx.get(f"{aurl}/sae/{saes['patch']}/inspect", timeout=30)
        assert page.status_code == 200 and "not reachable" in page.text
        r = httpx.post(f"{aurl}/sae/{saes['patch']}/steer.json", data={"sample_id": "1"}, timeout=30)
        assert r.status_code == 503
        assert httpx.get(f"{aurl}/sae/{saes['patch']}", timeout=30).status_code == 200
    with explorer(index, tmp_path, None) as (aurl, _):  # --no-live
        r = httpx.post(f"{aurl}/sae/{saes['patch']}/inspect.json", data={"sample_id": "1"}, timeout=30)
        assert r.status_code == 503 and "live inspection is off" in r.json()["message"]


def test_worker_on_a_unix_socket(small_demo, saes, tmp_path):
    import subprocess
    import sys
    import time

    from live_servers import REPO

    _, index = small_demo
    sock = tmp_path / "w.sock"
    proc = subprocess.Popen([sys.executable, "-m", "precompute.cli", "worker", str(index), "--uds", str(sock)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if sock.exists():
                break
            time.sleep(0.2)
        with explorer(index, tmp_path, f"unix:{sock}") as (aurl, _):
            r = httpx.post(f"{aurl}/sae/{saes['pooled']}/inspect.json", data={"sample_id": "8"}, timeout=60)
            assert r.status_code == 200 and r.json()["features"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_steer_cli_end_to_end(small_demo, saes, tmp_path):
    import subprocess
    import sys

    from live_servers import REPO

    _, index = small_demo
    with duckdb.connect(str(index), read_only=True) as con:
        fid = con.execute("SELECT feature_id FROM features WHERE sae_id = ? ORDER BY max_act DESC LIMIT 1", [saes["pooled"]]).fetchone()[0]
    out = tmp_path / "steer.json"
    cmd = [sys.executable, "-m", "precompute.cli", "steer", "--index", str(index), "--sae", saes["pooled"], "--sample-id", "6",
           "--edit", f"{fid}=+1", "--sweep", "0,4", "--out", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert [run["strength"] for run in report["runs"]] == [0.0, 4.0]
    zero, four = report["runs"]
    assert zero["edits"][0]["value"] == 0.0 and four["edits"][0]["value"] > 0
    assert zero["targets"]["classes"]["before"] == zero["targets"]["classes"]["after"]  # strength 0 adds nothing
    assert four["targets"]["classes"]["after"] != four["targets"]["classes"]["before"]
    png = Image.open(report["grid_png"])
    assert png.size[1] == 2 * (96 + 28)  # one row per strength
    bad = subprocess.run(cmd[:-2] + ["--edit", "999999=+1", "--out", str(tmp_path / "x.json")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    no_index = subprocess.run([sys.executable, "-m", "precompute.cli", "steer", "--sae", str(tmp_path), "--image", "x.png",
                               "--edit", "1=+1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert no_index.returncode == 2 and "--units max needs --index" in no_index.stderr
