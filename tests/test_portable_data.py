"""A `data/` folder moved or copied elsewhere still indexes and serves with its thumbnails: stores,
checkpoints and the index record paths inside the data root relative to themselves (issue 14)."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pytest

from precompute.index import IndexConfig, build_index
from sae_core.contract import data_root_of, portable_path, resolve_recorded
from tests.precompute_helpers import make_dataset, make_sae, make_store

N, D_IN, D_SAE = 40, 6, 12

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_paths_inside_a_data_root_are_relative_and_outside_absolute(tmp_path):
    root = tmp_path / "data"
    store = root / "stores" / "s1"
    assert data_root_of(store) == root and data_root_of(root / "index") == root and data_root_of(tmp_path / "x") is None
    assert portable_path(root / "datasets" / "d1", store) == "../../datasets/d1"
    assert resolve_recorded("../../datasets/d1", store) == root / "datasets" / "d1"
    assert portable_path(tmp_path / "elsewhere" / "d1", store) == str(tmp_path / "elsewhere" / "d1")
    assert portable_path(root / "datasets" / "d1", tmp_path / "loose") == str(root / "datasets" / "d1")


def test_a_moved_data_folder_indexes_and_serves_its_thumbnails(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    root = tmp_path / "a" / "data"
    ds = make_dataset(root, N)
    rng = np.random.default_rng(0)
    store = make_store(root, rng.normal(size=(N, D_IN)).astype(np.float32), dataset_dpath=ds.resolve(), shard_samples=16)
    sae = make_sae(root, D_IN, D_SAE, store_dpath=store.resolve())
    build_index(IndexConfig(saes=(str(sae),), out=str(root / "index" / "x.duckdb"), top_n=4, per_bin=1, quantile_bins=2))
    assert json.loads((store / "manifest.json").read_text())["dataset_dpath"] == "../../datasets/synthetic-000000000000"
    assert json.loads((sae / "cfg.json").read_text())["store"]["dpath"] == "../../stores/store"
    with duckdb.connect(str(root / "index" / "x.duckdb"), read_only=True) as con:
        assert con.execute("SELECT thumbs_dpath FROM datasets").fetchone()[0] == "../datasets/synthetic-000000000000/thumbs"
        assert con.execute("SELECT checkpoint, store FROM saes").fetchone() == ("../saes/sae", "../stores/store")

    moved = tmp_path / "b" / "mounted" / "data"
    moved.parent.mkdir(parents=True)
    shutil.move(root, moved)
    assert not root.exists()
    # the moved index serves thumbnails from the moved dataset folder
    app = create_app(Settings(index=moved / "index" / "x.duckdb", secret="s"))
    try:
        with TestClient(app) as client:
            r = client.get("/thumb/synthetic-000000000000/3.webp")
            assert r.status_code == 200 and r.content == (moved / "datasets" / "synthetic-000000000000" / "thumbs" / "3.webp").read_bytes()
    finally:
        app.state.index.close()
    # and the moved checkpoint finds its moved store and dataset to index again
    result = build_index(IndexConfig(saes=(str(moved / "saes" / "sae"),), out=str(moved / "index" / "y.duckdb"), top_n=4,
                                     per_bin=1, quantile_bins=2))
    with duckdb.connect(str(result.fpath), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM feature_top").fetchone()[0] > 0
        assert con.execute("SELECT thumbs_dpath FROM datasets").fetchone()[0] == "../datasets/synthetic-000000000000/thumbs"


def test_an_index_outside_the_data_root_records_absolute_paths(tmp_path):
    root = tmp_path / "data"
    ds = make_dataset(root, N)
    store = make_store(root, np.random.default_rng(1).normal(size=(N, D_IN)).astype(np.float32), dataset_dpath=ds)
    sae = make_sae(root, D_IN, D_SAE, store_dpath=store)
    out = tmp_path / "elsewhere.duckdb"
    build_index(IndexConfig(saes=(str(sae),), out=str(out), top_n=4, per_bin=1, quantile_bins=2))
    with duckdb.connect(str(out), read_only=True) as con:
        assert con.execute("SELECT thumbs_dpath FROM datasets").fetchone()[0] == str((ds / "thumbs").resolve())
