"""`saescope index` end to end on small real files: contents, order, determinism, atomicity."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from precompute.index import IndexConfig, build_index
from precompute.index_schema import DERIVED, SORT_KEYS, TABLES
from sae_core.checkpoint import load
from sae_core.contract import SCHEMA_VERSION
from sae_core.errors import DataError
from tests.precompute_helpers import make_dataset, make_sae, make_store
from tests.test_scan import brute_top

N, D_IN, D_SAE = 120, 10, 24
DOC = (Path(__file__).resolve().parents[1] / "docs" / "data-contract.md").read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    ds = make_dataset(root, N)
    rng = np.random.default_rng(3)
    pooled = make_store(root, rng.normal(size=(N, D_IN)).astype(np.float32), dataset_dpath=ds, name="pooled")
    patches = make_store(root, rng.normal(size=(N * 4, D_IN)).astype(np.float32), tokens_per_sample=4, grid=(2, 2),
                         dataset_dpath=ds, name="patches")
    sae_a = make_sae(root, D_IN, D_SAE, store_dpath=pooled, name="a")
    sae_b = make_sae(root, D_IN, D_SAE, arch="topk", k=3, seed=1, store_dpath=patches, name="b")
    cfg = IndexConfig(saes=(str(sae_a), str(sae_b)), out=str(root / "index" / "x.duckdb"), top_n=8, per_bin=2, quantile_bins=3)
    result = build_index(cfg)
    return root, cfg, result, (sae_a, pooled), (sae_b, patches)


def test_tables_and_columns_are_the_contract(built):
    _, cfg, result, *_ = built
    con = duckdb.connect(str(result.fpath), read_only=True)
    for table, cols in (TABLES | DERIVED).items():
        got = con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                          [table]).fetchall()
        assert [c for c, _ in got] == [c for c, _ in cols], table
        assert [t for _, t in got] == [t.replace("REAL", "FLOAT") for _, t in cols], table
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(r[0] for r in con.execute("SELECT sae_id FROM saes").fetchall()) == ["a", "b"]
    meta = dict(con.execute("SELECT key, value FROM index_meta").fetchall())
    documented = [row for row in DOC.splitlines() if row.startswith("| index_meta |")][0]
    assert set(meta) == {"inputs_hash", "encoder_precision", "quantile_bins", "coactivation_undercount", "config"}
    assert json.loads(meta["config"]) == json.loads(json.dumps(cfg.__dict__))  # the resolved options
    assert json.loads(meta["coactivation_undercount"]) == {"a": 0, "b": 0}  # small SAEs: exact pair counts
    assert set(meta) <= set(re.findall(r"`(\w+)`", documented.split("|")[3]))
    assert meta["quantile_bins"] == str(cfg.quantile_bins)
    assert meta["encoder_precision"] == "float32"  # auto on a CPU


def test_bfloat16_encoder_is_recorded_and_is_a_different_build(built, tmp_path):
    root, cfg, result, *_ = built
    fast = build_index(replace(cfg, out=str(tmp_path / "fast.duckdb"), precision="bfloat16"))
    con = duckdb.connect(str(fast.fpath), read_only=True)
    assert con.execute("SELECT value FROM index_meta WHERE key = 'encoder_precision'").fetchone()[0] == "bfloat16"
    exact = duckdb.connect(str(result.fpath), read_only=True)
    q = "SELECT sae_id, feature_id, sample_id FROM feature_top ORDER BY ALL"
    got, want = set(con.execute(q).fetchall()), set(exact.execute(q).fetchall())
    assert len(got & want) >= 0.98 * len(want)
    moved = build_index(replace(cfg, out=str(tmp_path / "fast.duckdb")))
    assert not moved.reused  # same output path, other precision: rebuilt, not reused


def test_rows_are_stored_in_key_order(built):
    _, _, result, *_ = built
    con = duckdb.connect(str(result.fpath), read_only=True)
    for table, keys in SORT_KEYS.items():
        cols = ", ".join(keys)
        stored = con.execute(f"SELECT {cols.replace(' DESC', '')} FROM {table}").fetchall()
        ordered = con.execute(f"SELECT {cols.replace(' DESC', '')} FROM {table} ORDER BY {cols}").fetchall()
        assert stored == ordered, table


def test_top_samples_equal_brute_force(built):
    _, _, result, (sae_a, pooled), (sae_b, patches) = built
    con = duckdb.connect(str(result.fpath), read_only=True)
    for sae_id, sae_dpath, store_dpath, T in (("a", sae_a, pooled, 1), ("b", sae_b, patches, 4)):
        from sae_core.store import ActivationStore

        store = ActivationStore(store_dpath)
        with torch.no_grad():
            scores = load(sae_dpath).encode(store.rows(np.arange(store.n_tokens))).numpy().reshape(N, T, D_SAE).max(1)
        want_v, want_i = brute_top(scores, np.arange(N), 8)
        rows = con.execute("SELECT feature_id, rank, sample_id, activation FROM feature_top WHERE sae_id = ?", [sae_id]).fetchall()
        got = np.full((8, D_SAE), -1)
        for f, r, s, _ in rows:
            got[r, f] = s
        np.testing.assert_array_equal(got, want_i)
        feats = con.execute("SELECT n_fired, max_act FROM features WHERE sae_id = ? ORDER BY feature_id", [sae_id]).fetchall()
        np.testing.assert_array_equal([f[0] for f in feats], (scores > 0).sum(0))
        hm = con.execute("SELECT count(*) FROM feature_top WHERE sae_id = ? AND heatmap IS NOT NULL", [sae_id]).fetchone()[0]
        assert (hm == len(rows)) if T == 4 else hm == 0


def test_names_labels_and_neighbours_are_filled(built):
    _, _, result, *_ = built
    con = duckdb.connect(str(result.fpath), read_only=True)
    named = con.execute("SELECT count(*) FROM features WHERE sae_id = 'a' AND name <> ''").fetchone()[0]
    assert named > D_SAE // 2
    words = {w for r in con.execute("SELECT name FROM features").fetchall() for w in r[0].split(", ") if w}
    assert words & {"apple", "leaf", "sky", "sun", "cat", "dog", "stone", "flower"}
    fr = con.execute("SELECT feature_id, sum(fraction) FROM feature_labels WHERE sae_id='a' GROUP BY feature_id").fetchall()
    assert all(abs(s - 1) < 1e-9 for _, s in fr)
    nb = con.execute("SELECT count(*), count(DISTINCT feature_id) FROM feature_neighbors WHERE sae_id='a'").fetchone()
    assert nb == (D_SAE * 10, D_SAE)
    assert con.execute("SELECT count(*) FROM sample_map WHERE sae_id='b'").fetchone()[0] == N


def test_rebuild_is_reused_and_deterministic(built, tmp_path):
    root, cfg, result, *_ = built
    again = build_index(cfg)
    assert again.reused
    # beside the first: paths inside the data root are stored relative to the index's folder
    other = build_index(IndexConfig(**{**cfg.__dict__, "out": str(result.fpath.with_name("y.duckdb"))}))
    assert not other.reused
    a, b = duckdb.connect(str(result.fpath), read_only=True), duckdb.connect(str(other.fpath), read_only=True)
    for table in TABLES:
        if table in ("schema_version", "saes", "index_meta"):
            continue
        assert a.execute(f"SELECT * FROM {table}").fetchall() == b.execute(f"SELECT * FROM {table}").fetchall(), table


def test_bad_input_leaves_the_old_index_in_place(built, tmp_path):
    root, cfg, result, (sae_a, pooled), _ = built
    wrong = make_sae(tmp_path, D_IN + 1, 8, store_dpath=pooled, name="wrong")
    before = result.fpath.read_bytes()
    with pytest.raises(DataError, match="d_in"):
        build_index(IndexConfig(saes=(str(wrong),), out=str(result.fpath)))
    assert result.fpath.read_bytes() == before
    assert not list(result.fpath.parent.glob("*.tmp-*"))
    nan = np.full((10, D_IN), np.nan, np.float32)
    nan_store = make_store(tmp_path, nan, name="nan", dataset_dpath=make_dataset(tmp_path, 10, with_thumbs=False))
    with pytest.raises(DataError, match="NaN"):
        build_index(IndexConfig(saes=(str(make_sae(tmp_path, D_IN, 8, store_dpath=nan_store, name="n")),), out=str(tmp_path / "z.duckdb")))
    assert not (tmp_path / "z.duckdb").exists()


def test_temp_files_of_killed_builds_are_removed_by_the_next(built, tmp_path):
    """kill -9 runs no cleanup: the next build removes temp files whose process is gone, not live ones."""
    import os
    import subprocess

    _, cfg, *_ = built
    out = tmp_path / "k.duckdb"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f"k.duckdb.tmp-{dead.pid}", tmp_path / f"k.duckdb.tmp-{dead.pid}.wal"]
    live = tmp_path / f"k.duckdb.tmp-{os.getppid()}"
    for f in [*stale, live]:
        f.write_bytes(b"half an index")
    build_index(replace(cfg, out=str(out)))
    assert out.exists() and not any(f.exists() for f in stale) and live.exists()


def test_large_maps_fit_on_a_subset_and_place_the_rest():
    from precompute.layout import umap_2d

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    x = np.concatenate([c + rng.normal(size=(60, 8)) for c in centres]).astype(np.float32)
    xy = umap_2d(x, metric="euclidean", fit_limit=90)
    assert xy.shape == (180, 2) and np.isfinite(xy).all()
    labels = np.repeat(np.arange(3), 60)
    centroid = np.stack([xy[labels == c].mean(0) for c in range(3)])
    nearest = np.argmin(((xy[:, None, :] - centroid[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95  # transformed points land with their cluster


def test_an_index_of_older_tables_is_rebuilt_not_reused(built, monkeypatch):
    """Same inputs, same schema version, but the code's tables changed (a column added during a
    version): the old file must not be reused."""
    from precompute import index_schema
    from precompute.index import _inputs_hash

    _, cfg, *_ = built
    before = _inputs_hash(cfg)
    monkeypatch.setitem(index_schema.TABLES, "features", [*index_schema.TABLES["features"], ("new_column", "DOUBLE")])
    assert _inputs_hash(cfg) != before
