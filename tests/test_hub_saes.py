"""`hf://owner/repo[/subfolder]` SAEs through huggingface_hub's cache, offline: the cache is built
here with SAELens and sparsify checkpoints in sub-folders, as hub releases lay them out."""

from __future__ import annotations

import shutil

import pytest
import torch

from precompute.export import ExportConfig, export_sae
from sae_core.checkpoint import load, save
from sae_core.config import SAEConfig
from sae_core.errors import FormatError
from sae_core.hub import split_hub_path
from sae_core.model import SparseAutoencoder

COMMIT = "c" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An HF cache holding owner/saes at COMMIT with layers.3 (sparsify) and blocks.7 (SAELens)."""
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(arch="topk", d_in=8, d_sae=24, k=3)).eval()
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(8) * 0.2)
        sae.input_scale.fill_(0.5)
    src = save(sae, tmp_path / "run")
    snapshot = tmp_path / "cache" / "models--owner--saes" / "snapshots" / COMMIT
    for sub, fmt in (("layers.3", "sparsify"), ("blocks.7", "saelens")):
        out = export_sae(ExportConfig(sae=str(src), format=fmt, out=str(tmp_path / fmt)))
        shutil.copytree(out, snapshot / sub)
    (tmp_path / "cache" / "models--owner--saes" / "refs").mkdir()
    (tmp_path / "cache" / "models--owner--saes" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return sae


def test_hub_saes_load_from_the_cache(hub_cache):
    x = torch.randn(16, 8) * 2
    with torch.no_grad():
        expected = hub_cache.encode(x)
        for path in ("hf://owner/saes/layers.3", "hf://owner/saes/blocks.7", f"hf://owner/saes/layers.3@{COMMIT}"):
            torch.testing.assert_close(load(path).encode(x), expected, atol=1e-5, rtol=1e-5)


def test_hub_errors_are_one_line(hub_cache):
    with pytest.raises(FormatError, match="has no sub-folder 'layers.9'"):
        load("hf://owner/saes/layers.9")
    with pytest.raises(FormatError, match=r"cannot fetch owner/missing .* not in the local cache"):
        load("hf://owner/missing/layers.3")
    with pytest.raises(FormatError, match=r"hf://owner/repo\[/subfolder\]"):
        load("hf://justone")
    assert split_hub_path("hf://a/b/c/d@v1") == ("a/b", "c/d", "v1")


def test_index_takes_a_hub_sae(hub_cache, tmp_path):
    """`saescope index --sae hf://owner/saes/blocks.7 --store ...` indexes the cached SAELens export."""
    import duckdb
    import numpy as np

    from precompute.cli import main
    from tests.precompute_helpers import make_dataset, make_store

    rng = np.random.default_rng(0)
    acts = (rng.standard_normal((60, 8)) * 2).astype(np.float32)
    store = make_store(tmp_path / "data", acts, dataset_dpath=make_dataset(tmp_path / "data", 60))
    out = tmp_path / "hub.duckdb"
    assert main(["index", "--sae", "hf://owner/saes/blocks.7", "--store", str(store), "--out", str(out), "--device", "cpu"]) == 0
    with duckdb.connect(str(out), read_only=True) as con:
        d_sae, n = con.execute("SELECT d_sae, n_samples FROM saes").fetchall()[0]
        fired = con.execute("SELECT sum(n_fired) FROM features").fetchall()[0][0]
    with torch.no_grad():
        expected = int((hub_cache.encode(torch.from_numpy(acts)) > 0).sum())
    assert (d_sae, n) == (24, 60) and fired == expected
