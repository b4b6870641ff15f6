"""Builders for small but real datasets, stores and SAEs used by the precompute tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from sae_core.checkpoint import save
from sae_core.config import SAEConfig
from sae_core.contract import SCHEMA_VERSION, atomic_write_json
from sae_core.model import SparseAutoencoder
from sae_core.store import StoreWriter

WORDS = ["red apple", "green leaf", "blue sky", "yellow sun", "black cat", "white dog", "grey stone", "pink flower"]


def make_dataset(root: Path, n: int, with_thumbs: bool = True) -> Path:
    """A dataset folder per the contract with captions, labels and real WebP thumbnails."""
    dpath = root / "datasets" / "synthetic-000000000000"
    (dpath / "thumbs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    captions = [f"{WORDS[i % len(WORDS)]} number {i}" for i in range(n)]
    labels = [WORDS[i % len(WORDS)].split()[1] for i in range(n)]
    for i in range(n if with_thumbs else 0):
        im = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        buf = io.BytesIO()
        im.save(buf, format="WEBP")
        (dpath / "thumbs" / f"{i}.webp").write_bytes(buf.getvalue())
    table = pa.table({"sample_id": pa.array(range(n), pa.int64()), "source": [f"img{i}.png" for i in range(n)],
                      "caption": captions, "label": labels, "width": pa.array([32] * n, pa.int32()),
                      "height": pa.array([32] * n, pa.int32()), "source_index": pa.array(range(n), pa.int64())})
    pq.write_table(table, dpath / "samples.parquet")
    atomic_write_json(dpath / "manifest.json", {
        "schema_version": SCHEMA_VERSION, "kind": "dataset", "dataset_id": dpath.name, "source": "synthetic",
        "modality": "image", "n_samples": n, "fingerprint": "0" * 64, "n_skipped": 0, "skipped": [], "has_labels": True})
    return dpath


def make_store(root: Path, acts: np.ndarray, tokens_per_sample: int = 1, grid=None, shard_samples: int = 50,
               dataset_dpath: Path | None = None, name: str = "store") -> Path:
    """Write acts [n_samples * T, d_in] as a store with several shards."""
    d_in = acts.shape[1]
    n = acts.shape[0] // tokens_per_sample
    dpath = root / "stores" / name
    writer = StoreWriter(dpath, {"dataset_id": dataset_dpath.name if dataset_dpath else "synthetic",
                                 "dataset_dpath": str(dataset_dpath) if dataset_dpath else "",
                                 "model": "synthetic", "model_revision": None, "layer": "x",
                                 "token_selection": "patches" if grid else "pooled", "tokens_per_sample": tokens_per_sample,
                                 "grid": list(grid) if grid else None, "d_in": d_in, "dtype": "float32", "fingerprint": "0"})
    for s in range(0, n, shard_samples):
        e = min(n, s + shard_samples)
        writer.append(torch.from_numpy(acts[s * tokens_per_sample : e * tokens_per_sample]), np.arange(s, e))
    writer.finish()
    return dpath


def make_sae(root: Path, d_in: int, d_sae: int, arch: str = "relu", k: int = 4, seed: int = 0, store_dpath: Path | None = None,
             name: str = "sae") -> Path:
    """A random SAE saved as a saescope checkpoint that names its store."""
    torch.manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(arch=arch, k=k, d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
    store = {"store_id": store_dpath.name, "dpath": str(store_dpath), "model": "synthetic", "layer": "x"} if store_dpath else None
    return save(sae, root / "saes" / name, store=store, metrics={"explained_variance": 0.5})
