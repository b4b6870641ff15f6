"""Binary map payloads decode to the index's numbers."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from make_fixture_index import N_FEATURES, POOLED

from app.views.points import decode, encode


def _features(index_path):
    con = duckdb.connect(str(index_path), read_only=True)
    res = con.execute("SELECT x, y, cluster_id, density, max_act, label_entropy FROM features "
                      "WHERE sae_id = ? ORDER BY feature_id", [POOLED]).fetchnumpy()
    con.close()
    return res


def test_feature_points_decode(client, index_path):
    r = client.get(f"/sae/{POOLED}/points/features.bin")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    header, cols = decode(r.content)
    assert header["n"] == N_FEATURES and header["kind"] == "features"
    assert "id" not in cols  # ids are dense: row i is feature i
    want = _features(index_path)
    np.testing.assert_array_equal(cols["x"], np.asarray(want["x"], np.float32))
    np.testing.assert_array_equal(cols["y"], np.asarray(want["y"], np.float32))
    np.testing.assert_array_equal(cols["cluster"], np.asarray(want["cluster_id"]))
    assert cols["x"].dtype == np.float32 and cols["cluster"].dtype == np.int16
    spec = {c["name"]: c for c in header["columns"]}
    # quantised colour channels: 0 = missing, 1..255 between min and max
    dens = np.asarray(want["density"], np.float64)
    live = dens > 0
    q = cols["density"].astype(np.float64)
    assert (q[~live] == 0).all() and (q[live] >= 1).all()
    lo, hi = spec["density"]["min"], spec["density"]["max"]
    assert lo == pytest.approx(np.log10(dens[live]).min()) and hi == pytest.approx(np.log10(dens[live]).max())
    back = lo + (q[live] - 1) / 254 * (hi - lo)
    np.testing.assert_allclose(back, np.log10(dens[live]), atol=(hi - lo) / 254)
    mx = np.asarray(want["max_act"], np.float64)
    qm = cols["max_act"].astype(np.float64)
    back = spec["max_act"]["min"] + (qm - 1) / 254 * (spec["max_act"]["max"] - spec["max_act"]["min"])
    np.testing.assert_allclose(back, mx, atol=(mx.max() - mx.min()) / 254)
    # columns start 8-byte aligned so the browser can view them without copying
    base = 4 + int.from_bytes(r.content[:4], "little")
    assert base % 8 == 0 and all(c["offset"] % 8 == 0 for c in header["columns"])
    assert len(r.content) < 13 * N_FEATURES + 1024


def test_sample_points_decode(client, index_path):
    header, cols = decode(client.get(f"/sae/{POOLED}/points/samples.bin").content)
    con = duckdb.connect(str(index_path), read_only=True)
    xs = [r[0] for r in con.execute("SELECT x FROM sample_map WHERE sae_id = ? ORDER BY sample_id", [POOLED]).fetchall()]
    con.close()
    assert header["n"] == 40 and cols["x"].tolist() == pytest.approx(xs)


def test_sparse_ids_get_an_id_column():
    from app.views.points import _ids_column

    ids = np.array([3, 7, 9])
    cols = _ids_column(ids)
    buf = encode(cols + [("x", np.array([1, 2, 3], np.float32), {})], 3, {"kind": "samples"})
    header, got = decode(buf)
    assert got["id"].tolist() == [3, 7, 9] and got["x"].tolist() == [1, 2, 3]


def test_unknown_sae_points_404(client):
    r = client.get("/sae/nope/points/features.bin")
    assert r.status_code == 404 and r.json()["status"] == 404
