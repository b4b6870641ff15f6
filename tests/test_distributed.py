"""torchrun (2 gloo processes) extraction and indexing give exactly the single-process store and index."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from PIL import Image

from precompute.index_schema import TABLES
from sae_core.distributed import Dist, split_range
from sae_core.store import ActivationStore
from tests.precompute_helpers import make_dataset, make_sae, make_store

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(code: str, world: int, timeout: float = 240) -> None:
    """Run `code` in `world` processes with torchrun's environment (gloo on this CPU machine)."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "SAESCOPE_PROGRESS": "0", "PYTHONPATH": str(ROOT),
            "CUDA_VISIBLE_DEVICES": ""}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        base.pop(key, None)
    if world > 1:
        base |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=base | ({"RANK": str(r), "LOCAL_RANK": str(r)} if world > 1 else {}))
             for r in range(world)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out


def test_split_range_cuts_whole_blocks():
    assert split_range(10, 4, Dist(0, 1)) == (0, 10)
    assert [split_range(10, 4, Dist(r, 2)) for r in range(2)] == [(0, 4), (4, 10)]
    assert [split_range(3, 4, Dist(r, 2)) for r in range(2)] == [(0, 0), (0, 3)]
    assert [split_range(12, 2, Dist(r, 3)) for r in range(3)] == [(0, 4), (4, 8), (8, 12)]


def test_two_rank_extraction_equals_single_process(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(11):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    args = dict(dataset=str(folder), layer="blocks.3", tokens="pooled", image_size=64, shard_samples=2, batch_size=2)
    def code(root: Path, reused: bool = False) -> str:
        return ("from precompute.extract import ExtractConfig, extract; "
                f"r = extract(ExtractConfig(data_root={str(root)!r}, **{args!r})); assert r.reused is {reused}")

    _run(code(tmp_path / "one"), 1)
    _run(code(tmp_path / "two"), 2)
    one = ActivationStore(next((tmp_path / "one" / "stores").iterdir()))
    two = ActivationStore(next((tmp_path / "two" / "stores").iterdir()))
    assert two.manifest["complete"] and two.n_samples == one.n_samples == 11
    assert [s["file"] for s in two.manifest["shards"]] == [f"shard-r0{r}-0000{i}.safetensors" for r in range(2) for i in range(3)]
    assert [s["first_sample"] for s in two.manifest["shards"]] == [s["first_sample"] for s in one.manifest["shards"]]
    np.testing.assert_array_equal(one.sample_ids(), two.sample_ids())
    assert torch.equal(one.rows(np.arange(one.n_tokens)), two.rows(np.arange(two.n_tokens)))
    assert not list(two.dpath.glob("progress-*")) and len(list(two.dpath.glob("shard-*"))) == len(two.shards)
    # The dataset (and its thumbnails) was prepared once and the finished store is reused by every rank.
    assert len(list((tmp_path / "two" / "datasets").iterdir())) == 1
    _run(code(tmp_path / "two", reused=True), 2)


def test_killed_rank_resumes_its_own_slice(tmp_path):
    """A rank's progress record survives a crash: the re-run keeps its shards and writes only the rest."""
    from sae_core.errors import DataError
    from sae_core.store import RankStoreWriter, StoreWriter

    header = {"dataset_id": "d", "model": "m", "layer": "x", "token_selection": "pooled", "tokens_per_sample": 1, "grid": None,
              "d_in": 3, "dtype": "float32"}
    acts = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    slices = [split_range(10, 2, Dist(r, 2)) for r in range(2)]
    assert slices == [(0, 4), (4, 10)]
    main = StoreWriter(tmp_path / "s", header)
    RankStoreWriter(tmp_path / "s", header, 0, 2, 0, 4).append(acts[0:2], [0, 1])
    RankStoreWriter(tmp_path / "s", header, 1, 2, 4, 10).append(acts[4:6], [4, 5])
    with pytest.raises(DataError, match="rank 0"):
        main.finish_parts(2)
    assert RankStoreWriter(tmp_path / "other", header, 0, 3, 0, 4).next_sample == 0
    for rank, (lo, hi) in enumerate(slices):  # the re-run: each rank continues where it stopped
        w = RankStoreWriter(tmp_path / "s", header, rank, 2, lo, hi)
        assert w.next_sample == lo + 2
        assert RankStoreWriter(tmp_path / "s", header, rank, 3, lo, hi).next_sample == lo  # another world size starts over
        w = RankStoreWriter(tmp_path / "s", header, rank, 2, lo, hi)
        assert w.next_sample == lo
        for s in range(lo, hi, 2):
            w.append(acts[s : s + 2], [s, s + 1])
        w.finish()
    main.finish_parts(2)
    store = ActivationStore(tmp_path / "s")
    assert store.manifest["complete"] and [e["first_sample"] for e in store.manifest["shards"]] == [0, 2, 4, 6, 8]
    np.testing.assert_array_equal(store.sample_ids(), np.arange(10))
    assert torch.equal(store.rows(np.arange(10)), acts)
    assert not list((tmp_path / "s").glob("progress-*"))


def _without_out(meta_rows: list[tuple]) -> list[tuple]:
    import json

    rows = dict(meta_rows)
    config = json.loads(rows["config"])
    assert config.pop("out").endswith(".duckdb")
    return sorted({**rows, "config": json.dumps(config, sort_keys=True)}.items())


def test_two_rank_index_equals_single_process(tmp_path):
    n, d_in, d_sae = 150, 8, 20
    ds = make_dataset(tmp_path, n, with_thumbs=False)
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(n * 4, d_in)).astype(np.float32)
    acts[12 * 4 : 13 * 4] = acts[100 * 4 : 101 * 4]  # identical samples in different ranks' slices tie exactly
    store = make_store(tmp_path, acts, tokens_per_sample=4, grid=(2, 2), dataset_dpath=ds, shard_samples=40)
    pooled = make_store(tmp_path, rng.normal(size=(n, d_in)).astype(np.float32), dataset_dpath=ds, name="pooled", shard_samples=33)
    sae_a = make_sae(tmp_path, d_in, d_sae, store_dpath=store, name="a")
    sae_b = make_sae(tmp_path, d_in, d_sae, arch="topk", k=3, seed=2, store_dpath=pooled, name="b")
    # UMAP's first call costs ~15 s of numba compilation per process; a cheap stand-in keeps the test fast
    # (rank 0 alone lays out, from the merged scans, so the stand-in tests the same thing).
    code = ("import numpy as np, scipy.sparse as sp, precompute.index as I; from precompute.index import IndexConfig, build_index; "
            "I.umap_2d = lambda x, seed=0, metric='cosine': np.asarray(x.todense() if sp.issparse(x) else x, np.float32)[:, :2]; "
            f"r = build_index(IndexConfig(saes=({str(sae_a)!r}, {str(sae_b)!r}), out={{out!r}}, top_n=6, per_bin=3, "
            "quantile_bins=4, chunk_samples=16)); assert r.sae_ids == ['a', 'b'] and r.fpath.exists()")
    one, two = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    _run(code.format(out=str(one)), 1)
    _run(code.format(out=str(two)), 2)
    a, b = duckdb.connect(str(one), read_only=True), duckdb.connect(str(two), read_only=True)
    for table in TABLES:
        if table in ("schema_version",):
            continue
        got, want = b.execute(f"SELECT * FROM {table}").fetchall(), a.execute(f"SELECT * FROM {table}").fetchall()
        if table == "index_meta":  # the saved config names each run's own --out; the rest must agree
            got, want = _without_out(got), _without_out(want)
        assert got == want, table
    assert b.execute("SELECT count(*) FROM feature_quantiles").fetchone()[0] > 0
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_rank_with_nothing_to_scan(tmp_path):
    """One scan chunk for two ranks: rank 0's slice is empty and the merge still equals one pass."""
    import dataclasses
    import pickle

    from precompute.scan import scan_features, scan_quantiles
    from sae_core.checkpoint import load

    store_dpath = make_store(tmp_path, np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32), tokens_per_sample=2, grid=(1, 2))
    sae_dpath = make_sae(tmp_path, 6, 10, store_dpath=store_dpath)
    out = tmp_path / "scan.pkl"
    code = ("import pickle; from sae_core import distributed; from precompute.scan import scan_features, scan_quantiles; "
            "from sae_core.checkpoint import load; from sae_core.store import ActivationStore\n"
            "with distributed.session() as d:\n"
            f"    sae, store = load({str(sae_dpath)!r}), ActivationStore({str(store_dpath)!r})\n"
            "    r = scan_features(sae, store, 5, 4, 1000); q = scan_quantiles(sae, store, r.max_scores, 3, 2, 1000)\n"
            f"    d.is_main and pickle.dump((r, q), open({str(out)!r}, 'wb'))\n")
    _run(code, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sae, store = load(sae_dpath), ActivationStore(store_dpath)
        want = scan_features(sae, store, 5, 4, 1000)
        want_q = scan_quantiles(sae, store, want.max_scores, 3, 2, 1000)
    finally:
        torch.set_num_threads(threads)
    got, got_q = pickle.loads(out.read_bytes())
    for a, b in ((want, got), (want_q, got_q)):
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert (np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y), f.name


def test_a_bare_cuda_device_gets_an_index(monkeypatch):
    """torch.cuda.set_device refuses a bare 'cuda': single-GPU train/index/demo failed at start-up."""
    from sae_core import distributed
    from sae_core.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert distributed.pick_device("auto") == "cuda:0" and distributed.pick_device("cuda") == "cuda:0"
    assert distributed.pick_device("cuda:1") == "cuda:1" and distributed.pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.pick_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        distributed.pick_device("cuda")
